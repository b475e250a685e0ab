import json

import azure.functions as func
import pytest

from functions.http import (
    STATUS_BY_TYPE,
    BadRequest,
    caller_identity,
    error_from_exception,
    handle_errors,
    json_body,
    status_of,
)


def _req(body: bytes = b"", headers=None) -> func.HttpRequest:
    return func.HttpRequest("POST", "http://localhost/api/x", headers=headers or {}, body=body)


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
