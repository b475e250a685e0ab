"""HTTP shaping shared by every HTTP-triggered function: JSON bodies, typed-error mapping, body parsing."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from typing import Any

import azure.functions as func

from connectors.blobs import UpdateConflict
from connectors.jobs import JobNotFound
from connectors.lake import DocumentConflict, LakeError, LeaseBusy, SchemaMismatch
from connectors.odata import ODataValueError
from functions.settings import SettingsError
from model_store.errors import (
    ConcurrentUpdate,
    InvalidVersion,
    ModelAlreadyExists,
    ModelNotFound,
    NothingToRevert,
    VersionNotFound,
)
from modeling.errors import (
    ConflictError,
    ExportError,
    InsufficientDataError,
    InvalidInput,
    ModelingError,
    ModelMetaError,
    NotFoundError,
    TypedError,
    Unavailable,
)

log = logging.getLogger(__name__)

# Triggers raise these for bad requests (the domain's own types: services raise them too).
BadRequest = InvalidInput
NotFound = NotFoundError

# The one table from error types to HTTP statuses: the most specific type in an error's MRO wins.
# Errors of HTTP peers (`DataverseError`, `AuthError`) carry the status their peer gave and keep it.
STATUS_BY_TYPE: dict[type[BaseException], int] = {
    InvalidInput: 400,
    InvalidVersion: 400,
    ModelingError: 400,
    ODataValueError: 400,
    NotFoundError: 404,
    JobNotFound: 404,
    ModelNotFound: 404,
    VersionNotFound: 404,
    ConflictError: 409,
    ModelAlreadyExists: 409,
    NothingToRevert: 409,
    LeaseBusy: 409,
    DocumentConflict: 409,
    ConcurrentUpdate: 412,
    InsufficientDataError: 422,
    ExportError: 500,
    ModelMetaError: 500,
    SchemaMismatch: 502,
    Unavailable: 503,
    UpdateConflict: 503,
    LakeError: 500,
    SettingsError: 500,
    TypedError: 500,
}


def status_of(exc: BaseException) -> int | None:
    """The HTTP status for an error: from the table, else the status an HTTP peer answered; None if neither."""
    for cls in type(exc).__mro__:
        if cls in STATUS_BY_TYPE:
            return STATUS_BY_TYPE[cls]
    status = getattr(exc, "status", None)
    return status if isinstance(status, int) and 400 <= status < 600 else None


def _default(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return str(value)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(body, default=_default),
        status_code=status,
        mimetype="application/json",
        headers=headers or {},
    )


def error_response(status: int, code: str, message: str, **extra: Any) -> func.HttpResponse:
    error: dict[str, Any] = {"code": code, "message": message}
    error.update({k: v for k, v in extra.items() if v is not None})
    return json_response({"error": error}, status=status)


def error_from_exception(exc: BaseException) -> func.HttpResponse:
    """Typed errors get the status `status_of` gives them and keep their code; anything else is 500."""
    status = status_of(exc)
    code = getattr(exc, "code", None)
    if status is not None and isinstance(code, str):
        extra: dict[str, Any] = {}
        # "details", e.g. the overlapping models of a 409 or the found/needed counts of a 422.
        for attr, key in (
            ("field", "field"),
            ("rule", "rule"),
            ("details", "details"),
            ("request_id", "requestId"),
        ):
            value = getattr(exc, attr, None)
            if value not in (None, {}, []) and key not in extra:
                extra[key] = value
        if status >= 500:
            log.error("request failed: %s (%s)", code, exc)
        return error_response(status, code, str(exc) or code, **extra)
    log.exception("unexpected error: %s", type(exc).__name__)
    return error_response(500, "InternalError", f"unexpected {type(exc).__name__}; see the function logs")


def handle_errors(fn: Callable[..., func.HttpResponse]) -> Callable[..., func.HttpResponse]:
    """Wrap an HTTP handler so every exception becomes a JSON error with the right status."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> func.HttpResponse:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - this is the error boundary
            return error_from_exception(exc)

    return wrapper


def json_body(req: func.HttpRequest, *, required: bool = False) -> dict[str, Any]:
    """The request's JSON object; {} for an empty body unless required. Raises BadRequest otherwise."""
    raw = req.get_body() or b""
    if not raw.strip():
        if required:
            raise BadRequest("a JSON object body is required", code="MissingBody")
        return {}
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}", code="MalformedJson") from exc
    if not isinstance(value, dict):
        raise BadRequest(f"the body must be a JSON object, got {type(value).__name__}", code="MalformedJson")
    return value


def caller_identity(req: func.HttpRequest) -> str:
    """Who called, as far as the platform tells (App Service auth headers), else 'anonymous'."""
    for header in ("x-ms-client-principal-name", "x-ms-client-principal-id"):
        value = req.headers.get(header)
        if value:
            return value
    return "anonymous"


def accepted(job: dict[str, Any], **extra: Any) -> func.HttpResponse:
    """202 for a long operation: `{"job": {...}, ...}` and `Location: /api/jobs/{id}` (poll it)."""
    return json_response({"job": job, **extra}, status=202, headers={"Location": f"/api/jobs/{job['id']}"})
