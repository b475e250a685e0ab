"""No HTTP function answers bad input with a 500: malformed bodies and hostile route values, every route."""

import json
import re

import azure.functions as func
import pytest

from tests.conftest import registry

pytestmark = pytest.mark.integration

HOSTILE = ["x' or 1 eq 1 or name eq 'y", "../../etc", "00000000-0000-0000-0000-00000000000Z", "%00", "a" * 300]
BODIES = [
    b"{not json",
    b"[1,2,3]",
    b'"a string"',
    b'{"name": 12, "opportunityIds": "nope", "full": "yes"}',
    b"\xff\xfe",
]


def _http_functions():
    for name, f in sorted(registry().items()):
        binding = next(
            b
            for b in json.loads(f.get_function_json())["bindings"]
            if b["type"] == "httpTrigger" or b["type"].endswith("Trigger")
        )
        if binding["type"] == "httpTrigger":
            yield name, f, binding


CASES = [
    (name, method, body, value)
    for name, f, b in _http_functions()
    for method in (b.get("methods") or ["GET", "POST"])
    for body in BODIES[:3]
    for value in HOSTILE[:3]
]


@pytest.mark.parametrize(("name", "method", "body", "value"), CASES)
def test_bad_input_is_never_a_500(app_context, name, method, body, value):
    f = registry()[name]
    binding = next(b for b in json.loads(f.get_function_json())["bindings"] if b["type"] == "httpTrigger")
    params = {p: value for p in re.findall(r"\{\*?([A-Za-z_]+)[^}]*\}", binding.get("route") or "")}
    req = func.HttpRequest(
        method,
        f"http://localhost/api/{binding.get('route')}",
        route_params=params,
        params={"version": value},
        body=body,
    )
    resp = f.get_user_function()(req)
    assert resp.status_code < 500, (name, method, body, value, resp.get_body()[:300])
    if resp.status_code >= 400:
        assert "error" in json.loads(resp.get_body()), resp.get_body()[:300]
