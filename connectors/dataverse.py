"""Dataverse Web API client: pooled session, typed errors, bounded retries, paging, change tracking,
`$batch` and metadata reads.

Retries (bounded by `max_retries` per call): 429 waits exactly the `Retry-After` the server sent (capped
by `max_retry_after`); 502/503/504 and dropped connections back off exponentially with full jitter; a 401
invalidates the token once and retries. Non-idempotent requests (POST create) are not retried after a
dropped connection, because the write may have happened.

`$batch` bodies are built and parsed with the standard library's `email` package (multipart/mixed with
CRLF line endings), not by hand.
"""

from __future__ import annotations

import datetime as dt
import email.parser
import email.policy
import email.utils
import json
import logging
import random
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import requests
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict

from connectors import telemetry
from connectors.auth import TokenProvider, http_session
from connectors.odata import key_segment

log = logging.getLogger(__name__)

API_PATH = "/api/data/v9.2/"
RETRY_STATUSES = frozenset({502, 503, 504})
MAX_BATCH = 1000


# ---------------------------------------------------------------------------------------------- errors
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


def _request_id(headers: Mapping[str, str]) -> str | None:
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
    return cls(status, code, message, _request_id(headers), parse_retry_after(headers.get("Retry-After")))


# ---------------------------------------------------------------------------------------------- values
@dataclass
class Page:
    """One response of a collection read: rows (annotations kept), ids of rows deleted (change tracking),
    the next link and, on the last page of a change-tracked read, the delta link."""

    rows: list[dict[str, Any]]
    deleted_ids: list[str] = field(default_factory=list)
    next_link: str | None = None
    delta_link: str | None = None


@dataclass
class BatchOp:
    """One request inside a `$batch`: `path` relative to the API root (e.g. `accounts(<id>)`), a JSON
    body, extra headers. Use `BatchOp.upsert(...)` for alternate-key upserts."""

    method: str
    path: str
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def upsert(cls, entity_set: str, key: Mapping[str, object] | str | uuid.UUID, body: Mapping[str, Any]) -> BatchOp:
        return cls("PATCH", key_segment(entity_set, key), dict(body))

    @classmethod
    def create(cls, entity_set: str, body: Mapping[str, Any]) -> BatchOp:
        return cls("POST", entity_set, dict(body))

    @classmethod
    def delete(cls, entity_set: str, key: Mapping[str, object] | str | uuid.UUID) -> BatchOp:
        return cls("DELETE", key_segment(entity_set, key))


@dataclass
class BatchResult:
    """The outcome of one BatchOp, in the order the ops were given. `error` is set when not ok; ops that
    the server did not execute (an earlier failure stopped a non-continue batch) have status 0."""

    index: int
    status: int
    ok: bool
    body: Any = None
    entity_id: str | None = None
    error: DataverseError | None = None


# ---------------------------------------------------------------------------------------------- client
class DataverseClient:
    """The Web API of one org. `base_url` is the org root (https://org.crm.dynamics.com) or the API root."""

    def __init__(
        self,
        base_url: str,
        token_provider: TokenProvider,
        *,
        session: requests.Session | None = None,
        ca_bundle: str | None = None,
        timeout: float = 30,
        max_retries: int = 10,
        backoff_base: float = 0.5,
        backoff_max: float = 20.0,
        max_retry_after: float = 300.0,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ):
        base = base_url.rstrip("/")
        if "/api/data/" in base:
            self.api = base + "/"
            self.org_url = base.split("/api/data/")[0]
        else:
            self.api = base + API_PATH
            self.org_url = base
        self.api_path = urlparse(self.api).path
        self.tokens = token_provider
        if session is None:
            session = http_session(ca_bundle)
            adapter = HTTPAdapter(pool_connections=4, pool_maxsize=16, max_retries=0)
            session.mount("https://", adapter)
            session.mount("http://", adapter)
        self.session = session
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_retry_after = max_retry_after
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.last_server_date: dt.datetime | None = None
        self.dop_hint: int | None = None  # the org's recommended parallelism (x-ms-dop-hint), last seen
        self.message_cache: dict[tuple[str, str], bool] = {}  # (table, message) -> in sdkmessagefilters
        self.stats: dict[str, Any] = {
            "requests": 0,
            "retries": 0,
            "throttled": 0,
            "retry_after_waits": [],
            "backoff_waits": 0,
            "dropped": 0,
            "token_refreshes": 0,
        }

    # ------------------------------------------------------------------ low level
    def url(self, path: str) -> str:
        return path if path.startswith(("https://", "http://")) else self.api + path.lstrip("/")

    def _headers(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        headers = {
            "Authorization": f"Bearer {self.tokens.token()}",
            "Accept": "application/json",
            "OData-MaxVersion": "4.0",
            "OData-Version": "4.0",
            "If-None-Match": "null",
        }
        if extra:
            headers.update(extra)
        return headers

    def _target(self, url: str) -> str:
        """The table (entity set, `$batch`, a function) a URL addresses, without keys or the query: for logs."""
        return urlparse(url).path.replace(self.api_path, "", 1).split("(")[0] or "/"

    def _backoff(self, attempt: int) -> float:
        return self.rng.uniform(0, min(self.backoff_max, self.backoff_base * (2**attempt)))

    def request(self, method: str, path: str, **options: Any) -> requests.Response:
        """`_send` traced as one client span (method, table, status, retries, request id; no bodies or tokens)."""
        table = self._target(self.url(path))
        with telemetry.dataverse_call(method, table, self.stats) as call:
            resp = self._send(method, path, **options)
            call.answered(resp.status_code, _request_id(resp.headers))
            return resp

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        max_retries: int | None = None,
    ) -> requests.Response:
        """Send one request with retries; return the successful response or raise a DataverseError."""
        url = self.url(path)
        if idempotent is None:
            idempotent = method.upper() in ("GET", "PUT", "PATCH", "DELETE", "HEAD")
        budget = self.max_retries if max_retries is None else max_retries
        refreshed = False
        attempt = 0
        target = self._target(url)
        body = data
        extra = dict(headers or {})
        if json_body is not None:
            body = json.dumps(json_body).encode()
            extra.setdefault("Content-Type", "application/json")
        while True:
            started = time.perf_counter()
            self.stats["requests"] += 1
            try:
                resp = self.session.request(
                    method, url, params=params, data=body, headers=self._headers(extra), timeout=self.timeout
                )
            except (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
            ) as exc:
                self.stats["dropped"] += 1
                if attempt >= budget or not idempotent:
                    raise DataverseUnavailable(
                        503,
                        "ConnectionFailed",
                        f"{method} {target}: {type(exc).__name__} after {attempt} retries",
                    ) from exc
                wait = self._backoff(attempt)
                log.info(
                    "dataverse %s %s dropped (%s); retry %d in %.2f s",
                    method,
                    target,
                    type(exc).__name__,
                    attempt + 1,
                    wait,
                )
                attempt += 1
                self.stats["retries"] += 1
                self.stats["backoff_waits"] += 1
                self.sleep(wait)
                continue
            self._note_date(resp)
            elapsed = (time.perf_counter() - started) * 1000
            if resp.status_code < 400:
                log.debug("dataverse %s %s -> %d in %.0f ms", method, target, resp.status_code, elapsed)
                return resp
            err = error_from_parts(resp.status_code, resp.content, resp.headers)
            err.response = resp
            log.info(
                "dataverse %s %s -> %d %s in %.0f ms (request %s)",
                method,
                target,
                resp.status_code,
                err.code,
                elapsed,
                err.request_id,
            )
            if resp.status_code == 401 and not refreshed:
                refreshed = True
                self.stats["token_refreshes"] += 1
                self.tokens.invalidate()
                continue
            if attempt >= budget:
                raise err
            if resp.status_code == 429:
                wait = err.retry_after if err.retry_after is not None else self._backoff(attempt)
                wait = min(wait, self.max_retry_after)
                self.stats["throttled"] += 1
                self.stats["retry_after_waits"].append(wait)
            elif resp.status_code in RETRY_STATUSES:
                wait = self._backoff(attempt)
                self.stats["backoff_waits"] += 1
            else:
                raise err
            attempt += 1
            self.stats["retries"] += 1
            self.sleep(wait)

    def _note_date(self, resp: requests.Response) -> None:
        """Keep what every response says of the server: its clock (Date) and its x-ms-dop-hint."""
        hint = resp.headers.get("x-ms-dop-hint")
        if hint and hint.isdigit() and int(hint) > 0:
            self.dop_hint = int(hint)
        value = resp.headers.get("Date")
        if not value:
            return
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return
        self.last_server_date = when if when.tzinfo else when.replace(tzinfo=dt.UTC)

    def _json(self, resp: requests.Response) -> Any:
        if not resp.content:
            return {}
        try:
            return resp.json()
        except ValueError as exc:
            raise DataverseProtocolError(
                502,
                "InvalidResponse",
                f"expected JSON, got {resp.headers.get('Content-Type')}",
                _request_id(resp.headers),
            ) from exc

    # ------------------------------------------------------------------ reads
    def get(self, path: str, params: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None) -> Any:
        return self._json(self.request("GET", path, params=params, headers=headers))

    def who_am_i(self) -> dict[str, Any]:
        doc = self.get("WhoAmI")
        return dict(doc) if isinstance(doc, dict) else {}

    def server_now(self, max_retries: int | None = None) -> dt.datetime:
        """The server's clock (its Date header), read with one cheap request (WhoAmI)."""
        self.last_server_date = None
        self.request("GET", "WhoAmI", max_retries=max_retries)
        if self.last_server_date is None:
            raise DataverseProtocolError(502, "NoDateHeader", "the server sent no Date header")
        return self.last_server_date

    def iter_pages(
        self,
        entity_set: str,
        select: Sequence[str] | None = None,
        filter: str | None = None,
        orderby: str | None = None,
        page_size: int = 5000,
        track_changes: bool = False,
        expand: str | None = None,
    ) -> Iterator[Page]:
        """Every page of a collection, lazily, following `@odata.nextLink`. With `track_changes` the last
        page carries the delta link for `iter_delta` ($filter/$orderby/$expand are not allowed then)."""
        if track_changes and (filter or orderby or expand):
            raise ValueError("change tracking does not allow $filter, $orderby or $expand")
        if not 1 <= page_size <= 5000:
            raise ValueError("page_size must be between 1 and 5000")
        params: dict[str, str] = {}
        if select:
            params["$select"] = ",".join(select)
        if filter:
            params["$filter"] = filter
        if orderby:
            params["$orderby"] = orderby
        if expand:
            params["$expand"] = expand
        yield from self._follow(entity_set, params, page_size, track_changes)

    def iter_delta(self, delta_link: str, page_size: int = 5000) -> Iterator[Page]:
        """The changes since a delta link: new/changed rows, deleted ids, and a new delta link at the end."""
        yield from self._follow(delta_link, None, page_size, True)

    def _follow(self, path: str, params: Mapping[str, str] | None, page_size: int, track: bool) -> Iterator[Page]:
        prefer = [f"odata.maxpagesize={page_size}"]
        if track:
            prefer.append("odata.track-changes")
        headers = {"Prefer": ",".join(prefer)}
        url: str | None = path
        seen: set[str] = set()
        while url:
            doc = self.get(url, params=params, headers=headers)
            params = None  # the next link carries the query
            if not isinstance(doc, dict) or not isinstance(doc.get("value"), list):
                raise DataverseProtocolError(502, "InvalidResponse", "a collection response has no 'value' list")
            rows: list[dict[str, Any]] = []
            deleted: list[str] = []
            for item in doc["value"]:
                if not isinstance(item, dict):
                    continue
                ctx = str(item.get("@odata.context", ""))
                if ctx.endswith("$deletedEntity") or (item.get("reason") == "deleted" and "id" in item):
                    deleted.append(str(item.get("id")))
                else:
                    rows.append(item)
            next_link = doc.get("@odata.nextLink")
            if next_link and next_link in seen:
                raise DataverseProtocolError(502, "PagingLoop", "the server repeated a next link")
            if next_link:
                seen.add(next_link)
            yield Page(rows, deleted, next_link, doc.get("@odata.deltaLink"))
            url = next_link

    # ------------------------------------------------------------------ writes
    def create(self, entity_set: str, body: Mapping[str, Any]) -> str | None:
        """POST a row; return its id (from OData-EntityId) when the server gives it."""
        resp = self.request("POST", entity_set, json_body=dict(body))
        return _entity_id(resp.headers.get("OData-EntityId") or resp.headers.get("Location"))

    def upsert(self, entity_set: str, key: Mapping[str, object] | str | uuid.UUID, body: Mapping[str, Any]) -> None:
        """PATCH without If-Match: creates or updates by primary or alternate key."""
        self.request("PATCH", key_segment(entity_set, key), json_body=dict(body))

    def update(self, entity_set: str, key: Mapping[str, object] | str | uuid.UUID, body: Mapping[str, Any]) -> None:
        """PATCH with If-Match: * (update only; DataverseNotFound when absent)."""
        self.request("PATCH", key_segment(entity_set, key), json_body=dict(body), headers={"If-Match": "*"})

    def delete(self, entity_set: str, key: Mapping[str, object] | str | uuid.UUID) -> None:
        self.request("DELETE", key_segment(entity_set, key))

    def batch(
        self, operations: Sequence[BatchOp], *, continue_on_error: bool = True, atomic: bool = False
    ) -> list[BatchResult]:
        """Send `operations` through `$batch`, at most 1,000 per request, and return one result per op in
        order. `atomic` puts each request's ops in one change set (all or nothing); otherwise ops are
        independent parts and, with `continue_on_error`, every part is attempted."""
        results: list[BatchResult] = []
        for start in range(0, len(operations), MAX_BATCH):
            chunk = list(operations[start : start + MAX_BATCH])
            results.extend(self._batch_chunk(chunk, start, continue_on_error, atomic))
        return results

    def _batch_chunk(self, ops: list[BatchOp], offset: int, continue_on_error: bool, atomic: bool) -> list[BatchResult]:
        boundary = f"batch_{uuid.uuid4().hex}"
        body = build_batch_body(ops, boundary, self.api_path, atomic=atomic)
        headers = {"Content-Type": f'multipart/mixed; boundary="{boundary}"'}
        if continue_on_error and not atomic:
            headers["Prefer"] = "odata.continue-on-error"
        idempotent = all(op.method.upper() != "POST" for op in ops)
        started = time.perf_counter()
        try:
            resp = self.request("POST", "$batch", data=body, headers=headers, idempotent=idempotent)
            status, content_type, content = (
                resp.status_code,
                resp.headers.get("Content-Type", ""),
                resp.content,
            )
        except DataverseBadRequest as exc:
            # A non-continue batch that failed answers 400 with the parts; a malformed batch answers 400 JSON.
            raw = exc.response
            if raw is None or "multipart" not in raw.headers.get("Content-Type", ""):
                raise
            status, content_type, content = raw.status_code, raw.headers.get("Content-Type", ""), raw.content
        parts = parse_batch_response(content_type, content)
        results: list[BatchResult] = []
        for i in range(len(ops)):
            if i < len(parts):
                st, hdrs, raw_body = parts[i]
                doc: Any = None
                if raw_body:
                    try:
                        doc = json.loads(raw_body)
                    except ValueError:
                        doc = raw_body.decode("utf-8", "replace")
                ok = 200 <= st < 300
                err = None if ok else error_from_parts(st, raw_body, hdrs)
                eid = _entity_id(hdrs.get("OData-EntityId") or hdrs.get("Location"))
                results.append(BatchResult(offset + i, st, ok, doc, eid, err))
            else:
                err = DataverseError(0, "NotExecuted", "not executed: an earlier operation in the batch failed")
                results.append(BatchResult(offset + i, 0, False, None, None, err))
        failed = sum(1 for r in results if not r.ok)
        log.info(
            "dataverse $batch: %d ops, %d failed, outer %d, in %.0f ms",
            len(ops),
            failed,
            status,
            (time.perf_counter() - started) * 1000,
        )
        return results

    # ------------------------------------------------------------------ metadata
    def entity_definition(self, logicalname: str) -> dict[str, Any]:
        """{LogicalName, EntitySetName, PrimaryIdAttribute, ...} of a table."""
        from connectors.odata import quote

        doc = self.get(
            f"EntityDefinitions(LogicalName={quote(logicalname)})",
            params={"$select": "LogicalName,EntitySetName,PrimaryIdAttribute,PrimaryNameAttribute"},
        )
        if isinstance(doc, dict) and isinstance(doc.get("value"), list):  # some servers answer a collection
            doc = doc["value"][0] if doc["value"] else {}
        return dict(doc) if isinstance(doc, dict) else {}

    def attributes(self, logicalname: str) -> list[dict[str, Any]]:
        """Readable columns of a table: [{"name" (Web API column), "attribute" (logical name), "type",
        "custom", "label", "dateonly"}]. Lookups are named `_<attribute>_value` as in the Web API."""
        from connectors.odata import quote

        doc = self.get(f"EntityDefinitions(LogicalName={quote(logicalname)})/Attributes")
        out: list[dict[str, Any]] = []
        for a in doc.get("value", []) if isinstance(doc, dict) else []:
            logical = a.get("LogicalName")
            atype = str(a.get("AttributeType") or "")
            if not logical or a.get("AttributeOf") or a.get("IsValidForRead") is False:
                continue
            if atype in _UNREADABLE_TYPES:
                continue
            name = f"_{logical}_value" if atype in _LOOKUP_TYPES else logical
            behavior = a.get("DateTimeBehavior")
            behavior = behavior.get("Value") if isinstance(behavior, dict) else behavior
            out.append(
                {
                    "name": name,
                    "attribute": logical,
                    "type": atype,
                    "custom": bool(a.get("IsCustomAttribute")),
                    "label": _label(a.get("DisplayName")) or logical,
                    "dateonly": atype == "DateTime" and (a.get("Format") == "DateOnly" or behavior == "DateOnly"),
                }
            )
        return out

    def option_sets(self, logicalname: str) -> dict[str, dict[str, str]]:
        """Labels of every choice column: {column: {"<value>": "<label>"}}; booleans use "true"/"false"."""
        from connectors.odata import quote

        out: dict[str, dict[str, str]] = {}
        base = f"EntityDefinitions(LogicalName={quote(logicalname)})/Attributes/Microsoft.Dynamics.CRM."
        for cast in (
            "PicklistAttributeMetadata",
            "StateAttributeMetadata",
            "StatusAttributeMetadata",
            "BooleanAttributeMetadata",
        ):
            params = {"$select": "LogicalName", "$expand": "OptionSet"}
            if cast == "PicklistAttributeMetadata":
                params["$expand"] = "OptionSet,GlobalOptionSet"
            try:
                doc = self.get(base + cast, params=params)
            except (DataverseBadRequest, DataverseNotFound) as exc:
                log.warning("option sets of %s: %s not readable (%s); skipped", logicalname, cast, exc.code)
                continue
            for a in doc.get("value", []) if isinstance(doc, dict) else []:
                opts = a.get("OptionSet") or a.get("GlobalOptionSet") or {}
                labels: dict[str, str] = {}
                if cast == "BooleanAttributeMetadata":
                    for key, opt_name in (("true", "TrueOption"), ("false", "FalseOption")):
                        opt = opts.get(opt_name) if isinstance(opts, dict) else None
                        if isinstance(opt, dict):
                            labels[key] = _label(opt.get("Label")) or key
                else:
                    for opt in opts.get("Options", []) if isinstance(opts, dict) else []:
                        if "Value" in opt:
                            labels[str(opt["Value"])] = _label(opt.get("Label")) or str(opt["Value"])
                if a.get("LogicalName") and labels:
                    out[str(a["LogicalName"])] = labels
        return out

    def processes(self, primary_entity: str = "opportunity") -> list[dict[str, Any]]:
        """Business process flows of a table with their stages (see `processes_from_rows`)."""
        from connectors.odata import filter_eq

        flows = [r for p in self.iter_pages("workflows", filter=filter_eq("category", 4)) for r in p.rows]
        stages = [r for p in self.iter_pages("processstages") for r in p.rows]
        return processes_from_rows(flows, stages, primary_entity)


def processes_from_rows(
    workflows: Sequence[Mapping[str, Any]], stages: Sequence[Mapping[str, Any]], primary_entity: str
) -> list[dict[str, Any]]:
    """BPFs (workflow rows of category 4) for `primary_entity` with their processstage rows, stages ordered
    by stage category then name: [{"workflowid","name","uniquename","stages":[{"processstageid",
    "stagename","stagecategory","order"}]}]."""
    out: list[dict[str, Any]] = []
    for wf in workflows:
        if wf.get("category") not in (None, 4) or wf.get("primaryentity") not in (None, primary_entity):
            continue
        wid = str(wf.get("workflowid") or "").lower()
        mine = [s for s in stages if str(s.get("_processid_value") or "").lower() == wid]
        mine.sort(
            key=lambda s: (
                s.get("stagecategory") is None,
                s.get("stagecategory") or 0,
                s.get("stagename") or "",
            )
        )
        out.append(
            {
                "workflowid": wf.get("workflowid"),
                "name": wf.get("name"),
                "uniquename": wf.get("uniquename"),
                "statecode": wf.get("statecode"),
                "stages": [
                    {
                        "processstageid": s.get("processstageid"),
                        "stagename": s.get("stagename"),
                        "stagecategory": s.get("stagecategory"),
                        "order": i,
                    }
                    for i, s in enumerate(mine)
                ],
            }
        )
    return out


_LOOKUP_TYPES = frozenset({"Lookup", "Owner", "Customer"})
_UNREADABLE_TYPES = frozenset({"Virtual", "ManagedProperty", "CalendarRules", "PartyList", "Image", "File"})


def _label(label: Any) -> str | None:
    if not isinstance(label, dict):
        return None
    user = label.get("UserLocalizedLabel")
    if isinstance(user, dict) and user.get("Label"):
        return str(user["Label"])
    for loc in label.get("LocalizedLabels") or []:
        if isinstance(loc, dict) and loc.get("Label"):
            return str(loc["Label"])
    return None


def _entity_id(header: str | None) -> str | None:
    if not header or "(" not in header:
        return None
    inner = header.rsplit("(", 1)[1].rstrip(")")
    try:
        return str(uuid.UUID(inner))
    except ValueError:
        return inner


# ---------------------------------------------------------------------------------------------- $batch wire
def build_batch_body(ops: Sequence[BatchOp], boundary: str, api_path: str, *, atomic: bool) -> bytes:
    """The multipart/mixed body (CRLF line endings) of a `$batch` request."""
    if len(ops) > MAX_BATCH:
        raise ValueError(f"a $batch holds at most {MAX_BATCH} operations")
    crlf = "\r\n"

    def part(i: int, op: BatchOp) -> str:
        target = op.path if op.path.startswith(("http://", "https://")) else api_path + op.path.lstrip("/")
        lines = [
            "Content-Type: application/http",
            "Content-Transfer-Encoding: binary",
            f"Content-ID: {i + 1}",
            "",
            f"{op.method.upper()} {target} HTTP/1.1",
        ]
        hdrs = {"Accept": "application/json"}
        body = ""
        if op.body is not None:
            hdrs["Content-Type"] = "application/json; type=entry"
            body = json.dumps(op.body)
        hdrs.update(op.headers)
        lines += [f"{k}: {v}" for k, v in hdrs.items()]
        lines += ["", body]
        return crlf.join(lines)

    out: list[str] = []
    if atomic:
        cs = f"changeset_{uuid.uuid4().hex}"
        out.append(f"--{boundary}")
        out.append(f'Content-Type: multipart/mixed; boundary="{cs}"')
        out.append("")
        for i, op in enumerate(ops):
            out.append(f"--{cs}")
            out.append(part(i, op))
        out.append(f"--{cs}--")
    else:
        for i, op in enumerate(ops):
            out.append(f"--{boundary}")
            out.append(part(i, op))
    out.append(f"--{boundary}--")
    out.append("")
    return crlf.join(out).encode("utf-8")


def _boundary(content_type: str) -> str | None:
    match = re.search(r'boundary="?([^";]+)"?', content_type or "", flags=re.IGNORECASE)
    return match.group(1) if match else None


def parse_batch_response(content_type: str, content: bytes) -> list[tuple[int, Mapping[str, str], bytes]]:
    """(status, headers, body) of each inner response, in order, change sets flattened.

    A plain split on the multipart boundaries: the stdlib `email` parser costs ~0.5 ms a part, which
    dominated the client CPU of a 1,000-operation `$batch`."""
    boundary = _boundary(content_type) if "multipart" in (content_type or "") else None
    if boundary is None:
        raise DataverseProtocolError(502, "InvalidBatchResponse", f"expected multipart, got {content_type!r}")
    out: list[tuple[int, Mapping[str, str], bytes]] = []
    _walk_multipart(boundary, content, out)
    return out


def _walk_multipart(boundary: str, content: bytes, out: list[tuple[int, Mapping[str, str], bytes]]) -> None:
    delimiter = b"--" + boundary.encode()
    pieces = content.split(delimiter)
    for piece in pieces[1:]:  # pieces[0] is the preamble
        if piece.startswith(b"--"):  # the closing delimiter
            break
        part = piece[2:] if piece.startswith(b"\r\n") else piece.lstrip(b"\n")
        sep = part.find(b"\r\n\r\n")
        head, body = (part[:sep], part[sep + 4 :]) if sep >= 0 else (b"", part)
        if body.endswith(b"\r\n"):
            body = body[:-2]
        part_type = ""
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-type":
                part_type = value.strip()
        inner = _boundary(part_type) if part_type.lower().startswith("multipart/") else None
        if inner:
            _walk_multipart(inner, body, out)
        else:
            out.append(_parse_http_response(body))


def _parse_http_response(payload: bytes) -> tuple[int, Mapping[str, str], bytes]:
    text = payload.replace(b"\r\n", b"\n")
    head, _, body = text.partition(b"\n\n")
    lines = head.decode("utf-8", "replace").strip().split("\n")
    if not lines or not lines[0].startswith("HTTP/"):
        raise DataverseProtocolError(502, "InvalidBatchResponse", "a batch part holds no HTTP status line")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError) as exc:
        raise DataverseProtocolError(502, "InvalidBatchResponse", f"bad status line {lines[0][:80]!r}") from exc
    headers: CaseInsensitiveDict[str] = CaseInsensitiveDict()
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip()] = v.strip()
    return status, headers, body.strip()
