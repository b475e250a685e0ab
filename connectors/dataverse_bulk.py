"""Upserts of many rows of one table, the fastest way the org allows.

- `UpsertMultiple` (`POST <set>/Microsoft.Dynamics.CRM.UpsertMultiple`, `{"Targets": [...]}`, each target
  addressed by its key in `@odata.id`) when the org's `sdkmessagefilters` list the message for the table
  (read once per client and cached, as Microsoft's documentation advises); `$batch` of PATCH upserts
  otherwise. Both send at most `batch_size` (1,000) rows a request.
- Requests run in parallel: as many as the org's `x-ms-dop-hint` recommends (learned from its responses),
  never more than `max_parallelism`. Each request honours `Retry-After` and retries through the client's
  one choke point (`DataverseClient.request`); UpsertMultiple is idempotent, so a dropped connection is
  retried too.
- A bulk request is all or nothing on a standard table, and Dataverse does not say which target failed. A
  refused request (a 4xx that is not throttling or auth) is split in halves until each bad row stands
  alone, so one bad row costs about 2 log2(1,000) = 20 extra requests and never stops the other 999. Rows
  refused this way (or refused parts of a `$batch`) come back as `failures`; rows left unwritten for a
  transient reason (a `$batch` part answered 429/5xx, or not executed) as `transient`; the caller decides.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from connectors.dataverse_batch import BatchOp
from connectors.dataverse_errors import DataverseError
from connectors.odata import and_, filter_eq, key_segment

log = logging.getLogger(__name__)

UPSERT_MULTIPLE = "UpsertMultiple"
ROW_ERROR_STATUSES = frozenset({400, 404, 409, 412, 413, 422})  # the data's fault: splitting finds the row
Key = Mapping[str, object]


class BulkClient(Protocol):
    """What this module needs of `connectors.dataverse.DataverseClient`."""

    dop_hint: int | None
    message_cache: dict[tuple[str, str], bool]

    def get(
        self, path: str, params: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None
    ) -> Any: ...

    def request(self, method: str, path: str, *, json_body: Any = None, idempotent: bool | None = None) -> Any: ...

    def batch(self, operations: Sequence[BatchOp], *, continue_on_error: bool = True) -> list[Any]: ...


@dataclass(frozen=True)
class RowFailure:
    """A row the write did not store: its index in the rows given, and Dataverse's status, code, message."""

    index: int
    status: int
    code: str
    message: str


@dataclass
class WriteOutcome:
    method: str  # "UpsertMultiple", "$batch" or "" (nothing to write)
    requests: int = 0
    parallelism: int = 1
    failures: list[RowFailure] = field(default_factory=list)  # refused by Dataverse (the row's fault)
    transient: list[RowFailure] = field(default_factory=list)  # not written this time (throttled, 5xx)


def supports_message(client: BulkClient, logical: str, message: str) -> bool:
    """Whether the org lists `message` for table `logical` in `sdkmessagefilters` (cached on the client).
    An org that refuses the read (no privilege, no such table) counts as not supporting it."""
    key = (logical, message)
    if key not in client.message_cache:
        flt = and_(filter_eq("sdkmessageid/name", message), filter_eq("primaryobjecttypecode", logical))
        try:
            doc = client.get("sdkmessagefilters", params={"$select": "sdkmessagefilterid", "$filter": flt})
            found = bool(isinstance(doc, dict) and doc.get("value"))
        except DataverseError as exc:
            if exc.status not in (400, 401, 403, 404):
                raise
            log.warning("sdkmessagefilters unreadable (%s %s): %s taken as absent", exc.status, exc.code, message)
            found = False
        client.message_cache[key] = found
        log.info("dataverse %s on %s: %s", message, logical, "available" if found else "absent")
    return client.message_cache[key]


def upsert_rows(
    client: BulkClient,
    entity_set: str,
    logical: str,
    rows: Sequence[tuple[Key, Mapping[str, Any]]],
    *,
    max_parallelism: int,
    batch_size: int = 1000,
) -> WriteOutcome:
    """Upsert `(alternate key, body)` rows of one table; see the module docstring."""
    if not rows:
        return WriteOutcome("")
    bulk = supports_message(client, logical, UPSERT_MULTIPLE)
    chunks = [list(range(s, min(s + batch_size, len(rows)))) for s in range(0, len(rows), batch_size)]
    workers = max(1, min(client.dop_hint or 1, max_parallelism, len(chunks)))
    if bulk:
        odata_type = f"Microsoft.Dynamics.CRM.{logical}"
        targets = [{**body, "@odata.type": odata_type, "@odata.id": key_segment(entity_set, key)} for key, body in rows]

        def send(idx: list[int]) -> WriteOutcome:
            return _bisect(client, f"{entity_set}/Microsoft.Dynamics.CRM.{UPSERT_MULTIPLE}", targets, idx)

        method = UPSERT_MULTIPLE
    else:
        ops = [BatchOp.upsert(entity_set, dict(key), body) for key, body in rows]

        def send(idx: list[int]) -> WriteOutcome:
            return _batch(client, ops, idx)

        method = "$batch"
    out = WriteOutcome(method, parallelism=workers)
    for part in _map(send, chunks, workers):
        out.requests += part.requests
        out.failures += part.failures
        out.transient += part.transient
    out.failures.sort(key=lambda f: f.index)
    log.info(
        "dataverse %s %s: %d rows, %d requests, %d refused, %d transient, parallelism %d",
        method,
        entity_set,
        len(rows),
        out.requests,
        len(out.failures),
        len(out.transient),
        workers,
    )
    return out


def _map(fn: Callable[[list[int]], WriteOutcome], chunks: list[list[int]], workers: int) -> list[WriteOutcome]:
    if workers == 1:
        return [fn(c) for c in chunks]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dataverse-write") as pool:
        return list(pool.map(fn, chunks))


def _bisect(client: BulkClient, path: str, targets: list[dict[str, Any]], idx: list[int]) -> WriteOutcome:
    """One all-or-nothing request for `idx`; when the data is refused, each half on its own."""
    try:
        client.request("POST", path, json_body={"Targets": [targets[i] for i in idx]}, idempotent=True)
        return WriteOutcome(UPSERT_MULTIPLE, requests=1)
    except DataverseError as exc:
        if exc.status not in ROW_ERROR_STATUSES:
            raise
        if len(idx) == 1:
            return WriteOutcome(UPSERT_MULTIPLE, 1, failures=[RowFailure(idx[0], exc.status, exc.code, exc.message)])
    mid = len(idx) // 2
    left, right = _bisect(client, path, targets, idx[:mid]), _bisect(client, path, targets, idx[mid:])
    return WriteOutcome(UPSERT_MULTIPLE, 1 + left.requests + right.requests, failures=left.failures + right.failures)


def _batch(client: BulkClient, ops: list[BatchOp], idx: list[int]) -> WriteOutcome:
    out = WriteOutcome("$batch", requests=1)
    for i, res in zip(idx, client.batch([ops[i] for i in idx], continue_on_error=True), strict=True):
        if res.ok:
            continue
        err = res.error
        failure = RowFailure(i, res.status, str(getattr(err, "code", "") or ""), str(getattr(err, "message", err)))
        (out.failures if res.status in ROW_ERROR_STATUSES else out.transient).append(failure)
    return out
