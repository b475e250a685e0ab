"""The lake: Delta tables (`connectors.delta`) and JSON documents on one Blob Storage container, plus
blob leases. Layout in docs/LAKE.md.

Each synced table is two Delta tables: `tables/<name>` (the current view, one row per id, MERGEd on the
primary key) and `history/<name>` (append-only: every version of every row a sync saw, with `_synced_at`,
`_deleted` and the `_sync_id` of the run). The schema helpers here turn Web API rows into Arrow tables of
the types the attribute metadata gives.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.storage.blob import BlobLeaseClient, ContainerClient, ContentSettings

from connectors.blobs import JsonBlobs
from connectors.delta import DeltaLocation, DeltaTables, location_for_container

log = logging.getLogger(__name__)

TIMESTAMP = pa.timestamp("us", tz="UTC")
ETAG_COLUMN = "_etag"
SYNCED_AT = "_synced_at"
DELETED = "_deleted"
SYNC_ID = "_sync_id"
LINEAGE = (SYNCED_AT, DELETED, SYNC_ID)

# Dataverse AttributeType -> Arrow type (docs/CONTRACTS.md "Lake").
_FLOAT_TYPES = frozenset({"Money", "Decimal", "Double"})
_INT_TYPES = frozenset({"Integer", "BigInt", "Picklist", "State", "Status"})


class LakeError(Exception):
    """A lake operation failed in a way the caller should report (code, message)."""

    code = "LakeError"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class DocumentConflict(LakeError):
    """A JSON document changed since it was read: another writer wrote first."""

    code = "DocumentConflict"


class LeaseBusy(LakeError):
    """Another holder has the lease (e.g. a sync is already running)."""

    code = "SyncInProgress"


class SchemaMismatch(LakeError):
    """Values from Dataverse do not fit the column type its metadata gives."""

    code = "SchemaMismatch"


# ---------------------------------------------------------------------------------------------- schema
def arrow_type_for(attribute_type: str) -> pa.DataType:
    if attribute_type in _FLOAT_TYPES:
        return pa.float64()
    if attribute_type in _INT_TYPES:
        return pa.int64()
    if attribute_type == "Boolean":
        return pa.bool_()
    if attribute_type == "DateTime":
        return TIMESTAMP
    return pa.string()


def schema_from_attributes(attributes: Sequence[Mapping[str, Any]], *, key: str | None = None) -> pa.Schema:
    """Arrow schema of a table from attribute metadata ([{"name", "type"}]), key first, plus `_etag`."""
    fields: list[pa.Field] = []
    seen: set[str] = set()
    ordered = sorted(attributes, key=lambda a: (a["name"] != key, a["name"]))
    for attr in ordered:
        name = str(attr["name"])
        if name in seen:
            continue
        seen.add(name)
        fields.append(pa.field(name, arrow_type_for(str(attr.get("type", "String")))))
    if ETAG_COLUMN not in seen:
        fields.append(pa.field(ETAG_COLUMN, pa.string()))
    return pa.schema(fields)


def history_schema(schema: pa.Schema) -> pa.Schema:
    out = schema
    for name, typ in ((SYNCED_AT, TIMESTAMP), (DELETED, pa.bool_()), (SYNC_ID, pa.string())):
        if out.get_field_index(name) < 0:
            out = out.append(pa.field(name, typ))
    return out


def current_schema(schema: pa.Schema) -> pa.Schema:
    """A history schema without its lineage columns: the current view's."""
    return pa.schema([f for f in schema if f.name not in LINEAGE])


def _normalize_timestamp(value: Any) -> Any:
    if isinstance(value, str) and len(value) == 10:  # DateOnly "YYYY-MM-DD"
        return value + "T00:00:00Z"
    return value


def _column(values: list[Any], typ: pa.DataType, name: str) -> pa.Array:
    try:
        if typ == TIMESTAMP:
            if any(isinstance(v, dt.datetime) for v in values):
                return pa.array(values, type=TIMESTAMP)
            return pa.array([_normalize_timestamp(v) for v in values], type=pa.string()).cast(TIMESTAMP)
        if typ == pa.string():
            return pa.array(
                [
                    v if v is None or isinstance(v, str) else json.dumps(v) if isinstance(v, (dict, list)) else str(v)
                    for v in values
                ],
                type=pa.string(),
            )
        return pa.array(values, type=typ)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
        try:  # e.g. "12" for an int column, 3.0 for an int: go through text
            return pa.array([None if v is None else str(v) for v in values], type=pa.string()).cast(typ)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc2:
            raise SchemaMismatch(f"column {name!r}: values do not fit {typ}: {exc}") from exc2


def rows_to_table(rows: Sequence[Mapping[str, Any]], schema: pa.Schema) -> pa.Table:
    """Rows (Web API dicts) to an Arrow table of exactly `schema`; missing keys are nulls, keys not in the
    schema are ignored. `_etag` is filled from `@odata.etag`."""
    arrays = []
    for f in schema:
        if f.name == ETAG_COLUMN:
            values = [r.get("@odata.etag", r.get(ETAG_COLUMN)) for r in rows]
        else:
            values = [r.get(f.name) for r in rows]
        arrays.append(_column(values, f.type, f.name))
    return pa.Table.from_arrays(arrays, schema=schema)


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` with exactly `schema`'s columns: missing ones as nulls, others dropped, types cast."""
    arrays = []
    for f in schema:
        if f.name in table.column_names:
            col = table.column(f.name)
            arrays.append(col if col.type == f.type else col.cast(f.type, safe=False))
        else:
            arrays.append(pa.nulls(len(table), type=f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def delete_all_except(container: ContainerClient, keep: Sequence[str] = ()) -> int:
    """Delete every blob of `container` whose name does not start with one of `keep`; return how many
    (e.g. the retention purge of the model container, which keeps its audit log)."""
    blobs = JsonBlobs(container)
    return _delete_paths(container, [n for n in blobs.list("") if not n.startswith(tuple(keep))])


def _delete_paths(container: ContainerClient, paths: Sequence[str]) -> int:
    deleted = 0
    blobs = JsonBlobs(container)
    for i in range(0, len(paths), 256):
        chunk = list(paths[i : i + 256])
        try:
            container.delete_blobs(*chunk)
            deleted += len(chunk)
        except HttpResponseError:  # batch delete unsupported or partial: one by one
            deleted += sum(1 for p in chunk if blobs.delete(p))
    return deleted


# ---------------------------------------------------------------------------------------------- lake
class Lake:
    """Delta tables, JSON documents and leases on one container."""

    def __init__(self, container: ContainerClient, location: DeltaLocation | None = None):
        self.container = container
        self.json = JsonBlobs(container)
        self.tables = DeltaTables(location or location_for_container(container))

    # ------------------------------------------------------------------ blobs
    def list(self, prefix: str) -> list[str]:
        return self.json.list(prefix)

    def exists(self, path: str) -> bool:
        return bool(self.container.get_blob_client(path).exists())

    def delete(self, path: str) -> bool:
        return self.json.delete(path)

    def delete_paths(self, paths: Sequence[str]) -> int:
        deleted = _delete_paths(self.container, paths)
        self.tables.forget()  # a table whose files went must be reopened, not updated
        return deleted

    def delete_prefix(self, prefix: str) -> int:
        """Delete every blob under `prefix`; return how many."""
        return self.delete_paths(self.list(prefix))

    # ------------------------------------------------------------------ JSON
    def read_json(self, path: str) -> Any | None:
        return self.json.read(path)

    def write_json(self, path: str, obj: Any, *, etag: str | None = None, create_only: bool = False) -> str:
        """Write a JSON blob; with `etag` only if unchanged since read (DocumentConflict otherwise), with
        `create_only` only if absent (ResourceExistsError). Returns the new ETag."""
        try:
            return self.json.write(path, obj, etag=etag, create_only=create_only)
        except ResourceModifiedError as exc:
            raise DocumentConflict(f"{path} changed since it was read") from exc

    # ------------------------------------------------------------------ Parquet blobs (run scratch)
    def write_parquet(self, path: str, table: pa.Table, *, row_group_size: int | None = None) -> None:
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd", row_group_size=row_group_size)
        self.container.upload_blob(
            path,
            buf.getvalue(),
            overwrite=True,
            content_settings=ContentSettings(content_type="application/vnd.apache.parquet"),
        )

    def read_parquet(self, path: str, columns: Sequence[str] | None = None) -> pa.Table:
        data = self.container.download_blob(path, max_concurrency=2).readall()
        pf = pq.ParquetFile(pa.BufferReader(data))
        cols = None if columns is None else [c for c in columns if c in pf.schema_arrow.names]
        return pf.read(columns=cols)

    # ------------------------------------------------------------------ synced tables
    @staticmethod
    def current_path(table: str) -> str:
        return f"tables/{table}"

    @staticmethod
    def history_path(table: str) -> str:
        return f"history/{table}"

    def read_current(self, table: str, columns: Sequence[str] | None = None) -> pa.Table:
        """The current view (one row per id); an empty table if never synced."""
        return self.tables.read(self.current_path(table), columns) or pa.table({})

    def read_history(self, table: str, columns: Sequence[str] | None = None) -> pa.Table:
        """Every version of every row seen by a sync, with `_synced_at`, `_deleted` and `_sync_id`."""
        return self.tables.read(self.history_path(table), columns) or pa.table({})

    def synced(self, table: str) -> dict[str, Any]:
        """What the last sync of `table` recorded with its history commit: `sync_id`, `synced_at`,
        `delta_link`, `mode`, `rows`, `key`, `entity_set` ({} if never synced)."""
        return self.tables.last_commit(self.history_path(table), having="sync_id")

    # ------------------------------------------------------------------ lease
    @contextlib.contextmanager
    def lease(self, name: str, *, duration: int = 60, wait: float = 0.0, poll: float = 1.0) -> Iterator[Lease]:
        """Hold `locks/<name>.lock` for the block; LeaseBusy if another holder keeps it beyond `wait` s."""
        if not (15 <= duration <= 60):
            raise ValueError("a blob lease lasts 15 to 60 seconds")
        path = f"locks/{name}.lock"
        blob = self.container.get_blob_client(path)
        deadline = time.monotonic() + wait
        created = False
        while True:
            try:
                client = blob.acquire_lease(lease_duration=duration)
                break
            except ResourceNotFoundError:  # first use: create the lock blob (no extra round trip later)
                if created:
                    raise
                with contextlib.suppress(ResourceExistsError):
                    blob.upload_blob(b"", overwrite=False)
                created = True
                continue
            except HttpResponseError as exc:
                if exc.status_code != 409:
                    raise
                if time.monotonic() >= deadline:
                    raise LeaseBusy(f"{path} is leased by another run") from exc
                time.sleep(poll)
        held = Lease(client, name, duration, blob)
        try:
            yield held
        finally:
            held.release()


# ---------------------------------------------------------------------------------------------- lease
class Lease:
    """A blob lease held on `locks/<name>.lock`, renewed in the background until released."""

    def __init__(self, client: BlobLeaseClient, name: str, duration: int, blob: Any = None):
        self.blob = blob
        self.client = client
        self.name = name
        self.duration = duration
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"lease-{name}", daemon=True)
        self._thread.start()

    @property
    def id(self) -> str:
        return str(self.client.id)

    def _renew(self) -> None:
        while not self._stop.wait(max(self.duration / 3, 1)):
            try:
                self.client.renew()
            except HttpResponseError as exc:
                self.lost = True
                log.error("lease %s lost: HTTP %s", self.name, exc.status_code)
                return

    def metadata(self) -> dict[str, str]:
        """Metadata on the lock blob (e.g. whether the previous holder finished cleanly)."""
        return dict(self.blob.get_blob_properties().metadata or {}) if self.blob is not None else {}

    def set_metadata(self, values: Mapping[str, str]) -> None:
        if self.blob is not None:
            self.blob.set_blob_metadata(dict(values), lease=self.client)

    def release(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with contextlib.suppress(HttpResponseError):
            self.client.release()
