"""The route table (functions/api.py) against what function_app registers, the README's HTTP API table and
the OpenAPI 3.1 rules (openapi-spec-validator); the catch-all's 405; auth levels; the caller principal."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import azure.functions as func
import jsonschema
import pytest
from openapi_spec_validator import validate

from functions import api
from functions.http import BadRequest, caller_identity
from tests.conftest import registry

ROOT = Path(__file__).resolve().parents[3]


def _http_functions() -> dict[str, dict]:
    out = {}
    for name, f in registry().items():
        trigger = next(
            b
            for b in json.loads(f.get_function_json())["bindings"]
            if b["type"] == "httpTrigger" or b["type"].endswith("Trigger")
        )
        if trigger["type"] == "httpTrigger":
            out[name] = trigger
    return out


def test_the_document_is_valid_openapi_3_1():
    doc = api.document()
    validate(doc)
    assert doc["openapi"].startswith("3.1")


def test_every_registered_route_is_described_and_every_described_route_registered():
    registered = {n: t for n, t in _http_functions().items() if n != api.CATCH_ALL and n not in api.STATIC}
    assert set(registered) == set(api.BY_NAME)
    for name, trigger in registered.items():
        op = api.BY_NAME[name]
        assert trigger["route"] == op.route, name
        assert [m.upper() for m in trigger["methods"]] == [op.method], name
        assert trigger["authLevel"].lower() == op.auth.value.lower(), name
    paths = api.document()["paths"]
    described = {(method.upper(), path) for path, ops in paths.items() for method in ops}
    assert described == {(op.method, op.path) for op in api.OPERATIONS}


def test_static_routes_are_registered_from_the_table_and_take_only_their_method():
    functions = _http_functions()
    for name, static in api.STATIC.items():
        assert functions[name]["route"] == static.route and [m.upper() for m in functions[name]["methods"]] == [
            static.method
        ]
    assert api.allowed_methods("console") == ["GET"] and api.allowed_methods("console/console.js") == ["GET"]
    assert api.allowed_methods("consoles") == []


def test_the_readme_http_table_lists_exactly_the_described_routes():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## HTTP API", 1)[1].split("\n## ", 1)[0]
    rows = set(re.findall(r"^\| `(GET|POST|PATCH|DELETE|PUT) (/api/[^`]+)` \|", section, re.M))
    static = {(s.method, "/api/" + s.route.split("/{*")[0]) for s in api.STATIC.values()}
    assert rows == {(op.method, op.path) for op in api.OPERATIONS} | static


def test_auth_levels_anonymous_reads_and_admin_writes():
    levels = {n: t["authLevel"].lower() for n, t in _http_functions().items()}
    anonymous = {"health", "openapi_document", "not_found", *api.STATIC}
    assert {n for n, level in levels.items() if level == "anonymous"} == anonymous
    for op in api.OPERATIONS:
        if op.method != "GET":
            assert levels[op.name] == "admin", op.name
        elif op.name not in ("health", "openapi_document"):
            assert levels[op.name] == "function", op.name


def _resolver_schema(doc: dict, ref_or_schema: dict) -> dict:
    return {**ref_or_schema, "components": doc["components"]}


def test_every_example_matches_its_schema():
    doc = api.document()
    checked = 0
    for ops in doc["paths"].values():
        for op in ops.values():
            bodies = [op.get("requestBody", {}).get("content", {}).get("application/json", {})]
            bodies += [r.get("content", {}).get("application/json", {}) for r in op["responses"].values()]
            for media in bodies:
                if "example" in media:
                    schema = _resolver_schema(doc, media["schema"])
                    jsonschema.Draft202012Validator(schema).validate(media["example"])
                    checked += 1
    for param in doc["components"]["parameters"].values():
        if "example" in param:
            jsonschema.Draft202012Validator(param["schema"]).validate(param["example"])
            checked += 1
    assert checked >= 12


def test_a_response_schema_refuses_what_breaks_it():
    doc = api.document()
    schema = _resolver_schema(doc, {"$ref": "#/components/schemas/OpportunityScore"})
    jsonschema.Draft202012Validator(schema).validate({"opportunityId": "x", "score": 5, "history": []})
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema).validate({"opportunityId": "x", "score": "high"})


def test_the_served_document_is_the_tables():
    resp = registry()["openapi_document"].get_user_function()(
        func.HttpRequest("GET", "http://localhost/api/openapi.json", body=b"")
    )
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    assert json.loads(resp.get_body()) == json.loads(json.dumps(api.document()))


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "models", "GET, POST"),
        ("GET", "sync", "POST"),
        ("POST", "models/M/audit", "GET"),
        ("PUT", "models/M", "DELETE, GET, PATCH"),
    ],
)
def test_the_catch_all_answers_405_with_allow_for_a_known_path(method, path, allow):
    fn = registry()["not_found"].get_user_function()
    resp = fn(func.HttpRequest(method, f"http://localhost/api/{path}", route_params={"path": path}, body=b""))
    assert resp.status_code == 405
    assert resp.headers["Allow"] == allow
    assert json.loads(resp.get_body())["error"]["code"] == "MethodNotAllowed"


def test_the_catch_all_is_404_for_an_unknown_path():
    fn = registry()["not_found"].get_user_function()
    resp = fn(func.HttpRequest("PUT", "http://localhost/api/models/M/x", route_params={"path": "models/M/x"}, body=b""))
    assert resp.status_code == 404 and "Allow" not in resp.headers


def _principal(claims: list[dict], **extra) -> str:
    doc = {"auth_typ": "aad", "claims": claims, "name_typ": "name", **extra}
    return base64.b64encode(json.dumps(doc).encode()).decode()


def _req(headers: dict[str, str]) -> func.HttpRequest:
    return func.HttpRequest("POST", "http://localhost/api/sync", headers=headers, body=b"")


def test_the_caller_principal_is_decoded_from_app_service_authentication():
    oid = "http://schemas.microsoft.com/identity/claims/objectidentifier"
    header = _principal([{"typ": "name", "val": "Ada Admin"}, {"typ": oid, "val": "4d1c-oid"}])
    assert caller_identity(_req({"X-MS-CLIENT-PRINCIPAL": header})) == "aad:Ada Admin (4d1c-oid)"
    assert caller_identity(_req({"X-MS-CLIENT-PRINCIPAL-NAME": "ada@contoso.com"})) == "ada@contoso.com"
    assert caller_identity(_req({})) == "anonymous"


@pytest.mark.parametrize("header", ["not base64!", base64.b64encode(b"[1]").decode(), base64.b64encode(b"{").decode()])
def test_a_principal_header_that_does_not_decode_is_named(header):
    with pytest.raises(BadRequest, match="X-MS-CLIENT-PRINCIPAL"):
        caller_identity(_req({"X-MS-CLIENT-PRINCIPAL": header}))
