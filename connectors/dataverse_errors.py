"""Dataverse errors and the parsing of error responses: the typed error classes (one per status family),
the service request id and `Retry-After` of a response, and `error_from_parts` (status, body, headers -> a
typed error). Pure: no I/O.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import time
from collections.abc import Mapping

import requests


class DataverseError(Exception):
    """An error from (or on the way to) Dataverse: HTTP `status`, Dataverse `code` (may be "" or "0x0"),
    `message` and the service `request_id` when the server sent one."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        request_id: str | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.code = code or ""
        self.message = message
        self.request_id = request_id
        self.retry_after = retry_after
        self.response: requests.Response | None = None  # the raw response, when there was one

    def __str__(self) -> str:
        rid = f" (request {self.request_id})" if self.request_id else ""
        return f"Dataverse {self.status} {self.code}: {self.message}{rid}"


class DataverseBadRequest(DataverseError):
    """400: the request was malformed (bad $filter, unknown column, invalid value)."""


class DataverseAuthError(DataverseError):
    """401/403: the token was refused (after one refresh) or the app user lacks a privilege."""


class DataverseNotFound(DataverseError):
    """404: no such table, row or route."""


class DataverseConflict(DataverseError):
    """409/412: duplicate key, concurrency (ETag) mismatch."""


class DataverseThrottled(DataverseError):
    """429: service protection limits; retries were exhausted."""


class DataverseServerError(DataverseError):
    """5xx from the server (after retries for 502/503/504)."""


class DataverseUnavailable(DataverseError):
    """The connection failed or was dropped (after retries). status 503, code ConnectionFailed."""


class DataverseProtocolError(DataverseError):
    """The server answered with something that is not the Web API's shape. status 502."""


def error_class(status: int) -> type[DataverseError]:
    if status == 400:
        return DataverseBadRequest
    if status in (401, 403):
        return DataverseAuthError
    if status == 404:
        return DataverseNotFound
    if status in (409, 412):
        return DataverseConflict
    if status == 429:
        return DataverseThrottled
    if status >= 500:
        return DataverseServerError
    return DataverseError


def request_id(headers: Mapping[str, str]) -> str | None:
    for name in ("x-ms-service-request-id", "REQ_ID", "x-ms-request-id", "request-id"):
        value = headers.get(name)
        if value:
            return str(value)
    return None


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if value is None or not str(value).strip():
        return None
    text = str(value).strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def error_from_parts(status: int, body: bytes | str, headers: Mapping[str, str]) -> DataverseError:
    """A typed error from a status, a body (Dataverse's `{"error": {"code", "message"}}` or anything) and
    headers."""
    code, message = "", ""
    try:
        doc = json.loads(body) if body else None
        err = doc.get("error") if isinstance(doc, dict) else None
        if isinstance(err, dict):
            code = str(err.get("code") or "")
            message = str(err.get("message") or "")
            inner = err.get("innererror")
            if not message and isinstance(inner, dict):
                message = str(inner.get("message") or "")
    except (ValueError, UnicodeDecodeError):
        pass
    if not message:
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body or "")
        message = text.strip()[:300] or f"HTTP {status}"
    cls = error_class(status)
    return cls(status, code, message, request_id(headers), parse_retry_after(headers.get("Retry-After")))
