"""The Dataverse client's transport: the pooled session, the one request loop (bounded retries, backoff,
token refresh), the server's clock (Date) and `x-ms-dop-hint`, request stats. `DataverseClient`
(connectors.dataverse) extends `DataverseTransport` with the Web API's reads, writes and metadata.

Retries (bounded by `max_retries` per call): 429 waits exactly the `Retry-After` the server sent (capped
by `max_retry_after`); 502/503/504 and dropped connections back off exponentially with full jitter; a 401
invalidates the token once and retries. Non-idempotent requests (POST create) are not retried after a
dropped connection, because the write may have happened.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlparse

import requests
from requests.adapters import HTTPAdapter

from connectors import telemetry
from connectors.auth import TokenProvider, http_session
from connectors.dataverse_errors import (
    DataverseError,
    DataverseProtocolError,
    DataverseUnavailable,
    error_from_parts,
    request_id,
)

log = logging.getLogger(__name__)

API_PATH = "/api/data/v9.2/"
RETRY_STATUSES = frozenset({502, 503, 504})


class DataverseTransport:
    """The Web API of one org, as requests: `base_url` is the org root (https://org.crm.dynamics.com) or the API
    root. `DataverseClient` (connectors.dataverse) adds the reads, writes and metadata."""

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
            call.answered(resp.status_code, request_id(resp.headers))
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
                wait = self._dropped(exc, method, target, attempt, retry=attempt < budget and idempotent)
                attempt += 1
                self.sleep(wait)
                continue
            self._note_date(resp)
            elapsed = (time.perf_counter() - started) * 1000
            if resp.status_code < 400:
                log.debug("dataverse %s %s -> %d in %.0f ms", method, target, resp.status_code, elapsed)
                return resp
            err = self._error(resp, method, target, elapsed)
            if resp.status_code == 401 and not refreshed:
                refreshed = True
                self.stats["token_refreshes"] += 1
                self.tokens.invalidate()
                continue
            if attempt >= budget:
                raise err
            wait = self._retry_wait(resp.status_code, err, attempt)
            attempt += 1
            self.stats["retries"] += 1
            self.sleep(wait)

    def _error(self, resp: requests.Response, method: str, target: str, elapsed: float) -> DataverseError:
        """The typed error of an error answer (the raw response attached), logged."""
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
        return err

    def _dropped(self, exc: Exception, method: str, target: str, attempt: int, *, retry: bool) -> float:
        """A dropped connection: count it, then raise DataverseUnavailable unless `retry`; else the wait
        before the next attempt (counted as a retry)."""
        self.stats["dropped"] += 1
        if not retry:
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
        self.stats["retries"] += 1
        self.stats["backoff_waits"] += 1
        return wait

    def _retry_wait(self, status: int, err: DataverseError, attempt: int) -> float:
        """The wait before retrying an error answer: the server's Retry-After (capped) for 429, a backoff for
        502/503/504; any other status raises `err`."""
        if status == 429:
            wait = err.retry_after if err.retry_after is not None else self._backoff(attempt)
            wait = min(wait, self.max_retry_after)
            self.stats["throttled"] += 1
            self.stats["retry_after_waits"].append(wait)
        elif status in RETRY_STATUSES:
            wait = self._backoff(attempt)
            self.stats["backoff_waits"] += 1
        else:
            raise err
        return wait

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
                request_id(resp.headers),
            ) from exc
