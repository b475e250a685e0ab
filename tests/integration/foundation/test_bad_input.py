"""No HTTP function answers bad input with a 500: malformed bodies and hostile route values, every route."""

import json
import re

import azure.functions as func
import pytest

from tests.conftest import registry

pytestmark = pytest.mark.integration

HOSTILE = ["x' or 1 eq 1 or name eq 'y", "../../etc", "00000000-0000-0000-0000-00000000000Z", "%00", "a" * 300]
# Values no URL limit stops when a function is called directly (issue 12): Unicode digits, 5,000 digits,
# a 20,000-character id, a trailing newline, NUL.
EXTREME = ["\u00b2", "1" * 5000, "x" * 20_000, "Zed\n", "3f2504e0-4f89-11d3-9a0c-0305e82c3301\n", "a\x00b"]
BODIES = [
    b"{not json",
    b"[1,2,3]",
    b'"a string"',
    b'{"name": 12, "opportunityIds": "nope", "full": "yes"}',
    b"\xff\xfe",
    b"[" * 100_000,
    b'{"gradeRanges": [NaN, 50, 25], "version": "\u00b2", "opportunityIds": 1, "trainingPeriod": []}',
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
] + [
    (name, method, body, value)
    for name, f, b in _http_functions()
    for method in (b.get("methods") or ["GET", "POST"])
    for body, value in zip(BODIES[5:] * len(EXTREME), EXTREME, strict=False)
]


@pytest.mark.parametrize(("name", "method", "body", "value"), CASES)
def test_bad_input_is_never_a_500(app_context, name, method, body, value):
    f = registry()[name]
    binding = next(b for b in json.loads(f.get_function_json())["bindings"] if b["type"] == "httpTrigger")
    params = {p: value for p in re.findall(r"\{\*?([A-Za-z_]+)[^}]*\}", binding.get("route") or "")}
    req = func.HttpRequest(
        method,
        f"http://localhost/api/{binding.get('route')}",
        headers={"Content-Type": "application/json", "If-Match": '*, "a"'},
        route_params=params,
        params={"version": value},
        body=body,
    )
    resp = f.get_user_function()(req)
    assert resp.status_code < 500, (name, method, body, value, resp.get_body()[:300])
    if resp.status_code >= 400:
        assert "error" in json.loads(resp.get_body()), resp.get_body()[:300]
