"""Service protection as Dataverse counts it, and the mock's model of what each request costs the server.

Limits (PA `api-limits.md`), per user over a sliding window of 300 s, each answered with 429, its own
error code and `Retry-After` in seconds:

| limit | default | code | bites |
|---|---|---|---|
| number of requests | 6,000 | `0x80072322` | after it was exceeded within the window |
| combined execution time | 1,200,000 ms | `0x80072321` | after it was exceeded within the window |
| concurrent requests | 52 | `0x80072326` | at once |

A `$batch` or a bulk message counts as one request (Microsoft: "Each bulk operation message counts as
single request"); its execution time is what it cost.

**Cost model.** The mock's CPU time says nothing about Dataverse's, so each request is charged a modelled
server time and, when `sleep` is on, takes at least that long (the handler sleeps what its own work did not
use, so parallel requests overlap as on a server with many workers):

    cost_ms = request_ms + operation_ms * single operations + bulk_operation_ms * bulk targets
              + row_ms * rows read

A single operation is a write applied on its own: a POST, PATCH, PUT or DELETE, and every part of a
`$batch` ("Each operation within the request is applied sequentially on the server, so there's no improved
efficiency per operation", PA `optimize-performance-create-update.md`). A bulk target is one item of
`CreateMultiple`/`UpdateMultiple`/`UpsertMultiple`, which "apply all the operations in a single transaction
rather than as separate operations" (PA `org-service/use-createmultiple-updatemultiple.md`), hence cheaper.
The defaults (2 ms, 1 ms, 0.25 ms, 0.002 ms) are the mock's choice, scaled down so a benchmark of 100,000
writes runs in minutes; the 4:1 ratio of a batched to a bulk operation is a model, not a measurement of
Dataverse.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from . import errors as E
from .errors import DataverseError

THROTTLED_TIME = "0x80072321"
THROTTLED_CONCURRENCY = "0x80072326"
COST_FIELDS = {"request_ms": float, "operation_ms": float, "bulk_operation_ms": float, "row_ms": float, "sleep": bool}
LIMIT_FIELDS = {"requests": int, "execution_ms": int, "concurrent": int, "window_s": float, "dop_hint": int}


def count_exceeded(limit: int, window_s: float, retry_after: int) -> DataverseError:
    return DataverseError(
        429,
        E.THROTTLED_COUNT,
        f"Number of requests exceeded the limit of {limit} over time window of {int(window_s)} seconds.",
        {"Retry-After": str(retry_after)},
    )


def time_exceeded(limit_ms: int, window_s: float, retry_after: int) -> DataverseError:
    return DataverseError(
        429,
        THROTTLED_TIME,
        f"Combined execution time of incoming requests exceeded limit of {limit_ms:,} milliseconds over time "
        f"window of {int(window_s)} seconds. Decrease number of concurrent requests or reduce the duration of "
        "requests and try again later.",
        {"Retry-After": str(retry_after)},
    )


def concurrency_exceeded(limit: int, retry_after: int) -> DataverseError:
    return DataverseError(
        429,
        THROTTLED_CONCURRENCY,
        f"Number of concurrent requests exceeded the limit of {limit}.",
        {"Retry-After": str(retry_after)},
    )


def settings_body(body: Any, fields: dict[str, type], what: str) -> dict[str, Any]:
    """A control endpoint's JSON body of settings, each of `fields`' type (bool, str, or a non-negative int
    or float): 400 naming the setting that is unknown or wrong."""
    if not isinstance(body, dict):
        raise E.bad_request(f"The {what} body must be a JSON object.")
    out: dict[str, Any] = {}
    for k, v in body.items():
        kind = fields.get(k)
        if kind is None:
            raise E.bad_request(f"Unknown {what} setting '{k}'; known: {', '.join(fields)}.")
        if kind is bool:
            if not isinstance(v, bool):
                raise E.bad_request(f"The {what} setting '{k}' must be true or false.")
        elif kind is str:
            if not isinstance(v, str):
                raise E.bad_request(f"The {what} setting '{k}' must be a string.")
        elif isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or v != v or v == float("inf"):
            raise E.bad_request(f"The {what} setting '{k}' must be a non-negative number.")
        elif kind is int and not float(v).is_integer():
            raise E.bad_request(f"The {what} setting '{k}' must be a whole number.")
        out[k] = kind(v)
    return out


@dataclass
class CostModel:
    request_ms: float = 2.0
    operation_ms: float = 1.0
    bulk_operation_ms: float = 0.25
    row_ms: float = 0.002
    sleep: bool = False

    def cost_ms(self, operations: int, bulk_operations: int, rows: int) -> float:
        return (
            self.request_ms
            + self.operation_ms * operations
            + self.bulk_operation_ms * bulk_operations
            + self.row_ms * rows
        )

    def update(self, body: Any) -> None:
        for k, v in settings_body(body, COST_FIELDS, "cost").items():
            setattr(self, k, v)

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in COST_FIELDS}


@dataclass
class _Client:
    hits: deque[float] = field(default_factory=deque)
    spent: deque[tuple[float, float]] = field(default_factory=deque)  # (finished at, ms)
    spent_ms: float = 0.0
    in_flight: int = 0


class ServiceProtection:
    """The three limits per client (the token's application user), plus the `x-ms-dop-hint` value."""

    def __init__(
        self,
        requests: int = 6000,
        window_s: float = 300.0,
        execution_ms: int = 1_200_000,
        concurrent: int = 52,
        dop_hint: int = 4,
    ):
        self.defaults = {
            "requests": requests,
            "window_s": window_s,
            "execution_ms": execution_ms,
            "concurrent": concurrent,
            "dop_hint": dop_hint,
        }
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            for k, v in self.defaults.items():
                setattr(self, k, v)
            self._clients: dict[str, _Client] = defaultdict(_Client)

    def update(self, body: Any) -> None:
        values = settings_body(body, LIMIT_FIELDS, "limits")
        if values.get("dop_hint") == 0 or values.get("concurrent") == 0 or values.get("window_s") == 0:
            raise E.bad_request("dop_hint, concurrent and window_s must be at least 1.")
        with self._lock:
            for k, v in values.items():
                setattr(self, k, v)

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in LIMIT_FIELDS}

    def _expire(self, c: _Client, now: float) -> None:
        while c.hits and c.hits[0] <= now - self.window_s:
            c.hits.popleft()
        while c.spent and c.spent[0][0] <= now - self.window_s:
            c.spent_ms -= c.spent.popleft()[1]

    def enter(self, client: str) -> None:
        """Admit one request of `client` or raise its 429. Pair every admitted request with `leave`."""
        now = time.monotonic()
        with self._lock:
            c = self._clients[client]
            self._expire(c, now)
            if c.in_flight >= self.concurrent:
                raise concurrency_exceeded(self.concurrent, 1)
            if len(c.hits) >= self.requests:
                raise count_exceeded(self.requests, self.window_s, max(1, int(c.hits[0] + self.window_s - now) + 1))
            if c.spent_ms > self.execution_ms:
                retry = max(1, int(c.spent[0][0] + self.window_s - now) + 1)
                raise time_exceeded(self.execution_ms, self.window_s, retry)
            c.hits.append(now)
            c.in_flight += 1

    def leave(self, client: str, execution_ms: float) -> None:
        with self._lock:
            c = self._clients[client]
            c.in_flight = max(0, c.in_flight - 1)
            c.spent.append((time.monotonic(), execution_ms))
            c.spent_ms += execution_ms

    def remaining(self, client: str) -> dict[str, str]:
        """Dataverse's debug headers: requests and execution time left in the window."""
        with self._lock:
            c = self._clients[client]
            return {
                "x-ms-ratelimit-burst-remaining-xrm-requests": str(max(0, self.requests - len(c.hits))),
                "x-ms-ratelimit-time-remaining-xrm-requests": f"{max(0.0, self.execution_ms - c.spent_ms):.2f}",
            }
