"""HTTP shaping shared by every HTTP-triggered function: JSON bodies, typed-error mapping, body parsing."""

from __future__ import annotations

import base64
import functools
import json
import logging
import math
import re
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

MAX_JSON_DEPTH = 32  # levels of arrays/objects in a request body (ours need 3)
_TOO_DEEP = f"the body is nested too deeply (at most {MAX_JSON_DEPTH} levels of arrays and objects)"
_MEDIA_SUBTYPE = re.compile(r"json|[a-z0-9][a-z0-9!#$&^_.-]{0,100}\+json")
_STRONG_ETAG = re.compile(r'"[\x21\x23-\x7e]{1,200}"')


class UnsupportedMediaType(InvalidInput):
    """A body sent with a Content-Type the route does not read (415)."""

    code = "UnsupportedMediaType"

# The one table from error types to HTTP statuses: the most specific type in an error's MRO wins.
# Errors of HTTP peers (`DataverseError`, `AuthError`) carry the status their peer gave and keep it.
STATUS_BY_TYPE: dict[type[BaseException], int] = {
    InvalidInput: 400,
    UnsupportedMediaType: 415,
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
            log.error("request failed: %s (%r)", code, str(exc))  # quoted: a message may carry input
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


def is_json_media_type(content_type: str | None) -> bool:
    """`application/json` or `application/<x>+json`, any case, whose charset (if given) is UTF-8."""
    media, _, params = (content_type or "").partition(";")
    kind, _, subtype = media.strip().lower().partition("/")
    if kind != "application" or not _MEDIA_SUBTYPE.fullmatch(subtype):
        return False
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            return False
    return True


def parse_json(raw: bytes) -> Any:
    """Strict JSON of a request: UTF-8, no NaN/Infinity, numbers that are finite, nesting of at most
    `MAX_JSON_DEPTH` levels, strings that are valid Unicode. Raises BadRequest `MalformedJson` otherwise."""
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
    except RecursionError:
        raise BadRequest(_TOO_DEEP, code="MalformedJson") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}", code="MalformedJson") from None
    _check_tree(value)
    return value


def json_body(req: func.HttpRequest, *, required: bool = False) -> dict[str, Any]:
    """The request's JSON object; {} for an empty body unless required (an empty body needs no
    Content-Type). A body must be sent as JSON (`is_json_media_type`, else 415: a browser's cross-site form
    post cannot send that without a CORS preflight) and parse with `parse_json`. Raises BadRequest."""
    raw = req.get_body() or b""
    if not raw.strip():
        if required:
            raise BadRequest("a JSON object body is required", code="MissingBody")
        return {}
    content_type = req.headers.get("content-type")
    if not is_json_media_type(content_type):
        shown = "no Content-Type" if not content_type else f"Content-Type {content_type[:100]!r}"
        raise UnsupportedMediaType(f"send the body as application/json (UTF-8); got {shown}")
    value = parse_json(raw)
    if not isinstance(value, dict):
        raise BadRequest(f"the body must be a JSON object, got {type(value).__name__}", code="MalformedJson")
    return value


def if_match(req: func.HttpRequest) -> str | None:
    """The If-Match header: None when absent, empty or `*` (any current version); one strong ETag as
    `GET` returned it; else BadRequest `InvalidHeader` (lists, weak or unquoted ETags)."""
    value = (req.headers.get("if-match") or "").strip()
    if value in ("", "*"):
        return None
    if _STRONG_ETAG.fullmatch(value):
        return value
    raise BadRequest(
        f"If-Match must be * or one quoted ETag as GET returned it in its ETag header, got {value[:100]!r}",
        code="InvalidHeader",
        field="If-Match",
    )


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _check_tree(value: Any) -> None:
    """Depth, finite numbers and encodable strings, walked without recursion."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                raise BadRequest(_TOO_DEEP, code="MalformedJson")
            items = node.items() if isinstance(node, dict) else enumerate(node)
            for key, child in items:
                if isinstance(key, str):
                    _check_text(key)
                stack.append((child, depth + 1))
        elif isinstance(node, float) and not math.isfinite(node):
            raise BadRequest(f"the body has a number out of range ({node})", code="MalformedJson")
        elif isinstance(node, str):
            _check_text(node)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("the body has a string with an unpaired surrogate", code="MalformedJson") from None


_OBJECT_ID_CLAIMS = ("http://schemas.microsoft.com/identity/claims/objectidentifier", "oid")
_NAME_CLAIMS = ("name", "preferred_username", "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn")
MAX_PRINCIPAL_HEADER = 16_384


def caller_identity(req: func.HttpRequest) -> str:
    """Who called, as App Service authentication (Entra ID) tells: `X-MS-CLIENT-PRINCIPAL` (base64 JSON of
    the claims; recorded as `name (object id)`), else `X-MS-CLIENT-PRINCIPAL-NAME` / `-ID`, else 'anonymous'.
    The platform sets these headers and strips any a client sends, so they are trusted only behind it
    (README "Who may do what"). A principal header that does not decode is BadRequest `InvalidHeader`."""
    encoded = req.headers.get("x-ms-client-principal")
    if encoded:
        return _principal_name(encoded)
    for header in ("x-ms-client-principal-name", "x-ms-client-principal-id"):
        value = req.headers.get(header)
        if value:
            return value[:200]
    return "anonymous"


def _principal_name(encoded: str) -> str:
    try:
        if len(encoded) > MAX_PRINCIPAL_HEADER:
            raise ValueError("too long")
        principal = json.loads(base64.b64decode(encoded, validate=True))
        claims = {c["typ"]: c["val"] for c in principal.get("claims") or [] if isinstance(c.get("val"), str)}
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
        raise BadRequest(
            "X-MS-CLIENT-PRINCIPAL must be the base64 JSON App Service authentication sends",
            code="InvalidHeader",
            field="X-MS-CLIENT-PRINCIPAL",
        ) from None
    name_claim = principal.get("name_typ") if isinstance(principal.get("name_typ"), str) else None
    name = next((claims[t] for t in (name_claim, *_NAME_CLAIMS) if t and claims.get(t)), None)
    oid = next((claims[t] for t in _OBJECT_ID_CLAIMS if claims.get(t)), None)
    provider = principal.get("auth_typ") if isinstance(principal.get("auth_typ"), str) else "principal"
    if name and oid:
        return f"{provider}:{name} ({oid})"[:200]
    return f"{provider}:{name or oid or 'unnamed'}"[:200]


def accepted(job: dict[str, Any], **extra: Any) -> func.HttpResponse:
    """202 for a long operation: `{"job": {...}, ...}` and `Location: /api/jobs/{id}` (poll it)."""
    return json_response({"job": job, **extra}, status=202, headers={"Location": f"/api/jobs/{job['id']}"})
