import json

import azure.functions as func
import pytest

from functions.http import (
    MAX_JSON_DEPTH,
    STATUS_BY_TYPE,
    BadRequest,
    UnsupportedMediaType,
    caller_identity,
    error_from_exception,
    handle_errors,
    if_match,
    is_json_media_type,
    json_body,
    parse_json,
    status_of,
)


def _req(body: bytes = b"", headers=None) -> func.HttpRequest:
    sent = {"Content-Type": "application/json"} if headers is None else headers
    return func.HttpRequest("POST", "http://localhost/api/x", headers=sent, body=body)


def test_json_body_accepts_object_and_empty():
    assert json_body(_req(b'{"a": 1}')) == {"a": 1}
    assert json_body(_req(b"")) == {}


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b'"text"', b"\xff\xfe"])
def test_json_body_rejects_bad_input_with_400(raw):
    with pytest.raises(BadRequest) as err:
        json_body(_req(raw))
    assert status_of(err.value) == 400 and err.value.code == "MalformedJson"


def test_http_peer_errors_keep_the_status_their_peer_gave():
    class Conflict(Exception):
        status = 409
        code = "Conflict"

    resp = error_from_exception(Conflict("taken"))
    assert resp.status_code == 409
    assert json.loads(resp.get_body()) == {"error": {"code": "Conflict", "message": "taken"}}


def test_domain_errors_carry_no_status_and_the_table_maps_their_types():
    from model_store.errors import ConcurrentUpdate, IntegrityError, ModelNotFound
    from modeling.errors import ConflictError, InsufficientDataError, TypedError

    for err in (ConcurrentUpdate("x"), IntegrityError("x"), ModelNotFound("x"), ConflictError("x")):
        assert not hasattr(err, "status")
    assert status_of(ModelNotFound("x")) == 404 and status_of(ConcurrentUpdate("x")) == 412
    assert status_of(InsufficientDataError("x", found={}, needed={})) == 422
    assert status_of(IntegrityError("x")) == 500

    class Unlisted(ConflictError):  # a subclass inherits its base's status
        code = "Unlisted"

    assert status_of(Unlisted("x")) == 409 and Unlisted not in STATUS_BY_TYPE
    assert all(issubclass(t, BaseException) for t in STATUS_BY_TYPE) and TypedError in STATUS_BY_TYPE


def test_untyped_error_is_500_without_details():
    resp = error_from_exception(KeyError("secret-value"))
    assert resp.status_code == 500
    assert "secret-value" not in resp.get_body().decode()


def test_handle_errors_wraps_and_keeps_signature():
    import inspect

    @handle_errors
    def fn(req: func.HttpRequest) -> func.HttpResponse:
        raise BadRequest("name is wrong")

    assert list(inspect.signature(fn).parameters) == ["req"]
    resp = fn(_req())
    assert resp.status_code == 400 and json.loads(resp.get_body())["error"]["message"] == "name is wrong"


def test_caller_identity_from_platform_headers():
    assert caller_identity(_req(headers={"x-ms-client-principal-name": "ada@contoso.com"})) == "ada@contoso.com"
    assert caller_identity(_req()) == "anonymous"


@pytest.mark.parametrize(
    "raw",
    [b"[" * 100_000, b'{"a":' * 5_000 + b"1" + b"}" * 5_000, b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1)],
)
def test_parse_json_refuses_deep_nesting_without_recursing(raw):
    with pytest.raises(BadRequest, match="nested too deeply") as err:
        parse_json(raw)
    assert err.value.code == "MalformedJson"
    assert parse_json(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH) is not None


@pytest.mark.parametrize(
    "raw", [b"[NaN]", b'{"a": Infinity}', b"-Infinity", b"[1e999]", b'["\\ud800"]', b"\xef\xbb\xbf{}"]
)
def test_parse_json_refuses_non_finite_numbers_lone_surrogates_and_a_bom(raw):
    with pytest.raises(BadRequest) as err:
        parse_json(raw)
    assert err.value.code == "MalformedJson"


@pytest.mark.parametrize(
    ("content_type", "ok"),
    [
        ("application/json", True),
        ("Application/JSON; charset=UTF-8", True),
        ('application/json;charset="utf-8"', True),
        ("application/merge-patch+json", True),
        ("application/vnd.api+json; charset=utf-8", True),
        (None, False),
        ("", False),
        ("text/plain", False),
        ("text/json", False),
        ("application/x-www-form-urlencoded", False),
        ("multipart/form-data; boundary=x", False),
        ("application/json; charset=latin-1", False),
        ("application/jsonx", False),
        ("application/+json", False),
    ],
)
def test_json_media_types(content_type, ok):
    assert is_json_media_type(content_type) is ok


def test_a_body_needs_a_json_content_type_but_an_empty_body_needs_none():
    for headers in ({}, {"Content-Type": "text/plain"}):
        with pytest.raises(UnsupportedMediaType) as err:
            json_body(_req(b'{"name": "x"}', headers=headers))
        assert status_of(err.value) == 415 and err.value.code == "UnsupportedMediaType"
    assert json_body(_req(b"", headers={})) == {}
    assert json_body(_req(b'{"a": 1}', headers={"content-type": "application/json; charset=utf-8"})) == {"a": 1}


@pytest.mark.parametrize(("header", "etag"), [(None, None), ("", None), ("*", None), (' "0x8DC" ', '"0x8DC"')])
def test_if_match_star_or_one_strong_etag(header, etag):
    assert if_match(_req(headers={} if header is None else {"If-Match": header})) == etag


@pytest.mark.parametrize("header", ['*, "a"', '"a", "b"', 'W/"a"', "0x8DC", '"a b"', '"unterminated', '"\u00e9"'])
def test_if_match_refuses_lists_weak_and_unquoted_etags(header):
    with pytest.raises(BadRequest) as err:
        if_match(_req(headers={"If-Match": header}))
    assert err.value.code == "InvalidHeader" and status_of(err.value) == 400
