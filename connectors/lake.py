"""The lake: plain Parquet (pyarrow) and JSON on one Blob Storage container. Layout in docs/LAKE.md.

A table is `tables/<name>/manifest.json` plus the Parquet parts it lists. Writers stream pages into a
local temporary Parquet file (one row group per page, so memory stays at one page) and upload each part
when it is full; a new table version becomes visible only when its manifest is swapped with an ETag
condition, so readers never see half a sync and two writers cannot both win. Parts no manifest lists
(left by a killed sync) are removed by `collect_garbage` under the sync lease.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
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

log = logging.getLogger(__name__)

TIMESTAMP = pa.timestamp("us", tz="UTC")
ETAG_COLUMN = "_etag"
SYNCED_AT = "_synced_at"
DELETED = "_deleted"

# Dataverse AttributeType -> Arrow type (docs/CONTRACTS.md "Lake").
_FLOAT_TYPES = frozenset({"Money", "Decimal", "Double"})
_INT_TYPES = frozenset({"Integer", "BigInt", "Picklist", "State", "Status"})
_TYPE_NAMES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "int64": pa.int64(),
    "double": pa.float64(),
    "bool": pa.bool_(),
    "timestamp[us, tz=UTC]": TIMESTAMP,
}


class LakeError(Exception):
    """A lake operation failed in a way the caller should report (status, code, message)."""

    def __init__(self, message: str, *, code: str = "LakeError", status: int = 500):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class ManifestConflict(LakeError):
    """The manifest changed since it was read: another writer committed first."""

    def __init__(self, message: str):
        super().__init__(message, code="ManifestConflict", status=409)


class LeaseBusy(LakeError):
    """Another holder has the lease (e.g. a sync is already running)."""

    def __init__(self, message: str):
        super().__init__(message, code="SyncInProgress", status=409)


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
    for name, typ in ((SYNCED_AT, TIMESTAMP), (DELETED, pa.bool_())):
        if out.get_field_index(name) < 0:
            out = out.append(pa.field(name, typ))
    return out


def current_schema(schema: pa.Schema) -> pa.Schema:
    keep = [f for f in schema if f.name not in (SYNCED_AT, DELETED)]
    return pa.schema(keep)


def schema_to_json(schema: pa.Schema) -> dict[str, str]:
    return {f.name: str(f.type) for f in schema}


def schema_from_json(doc: Mapping[str, str]) -> pa.Schema:
    return pa.schema([pa.field(k, _TYPE_NAMES.get(v, pa.string())) for k, v in doc.items()])


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
                    v
                    if v is None or isinstance(v, str)
                    else json.dumps(v)
                    if isinstance(v, (dict, list))
                    else str(v)
                    for v in values
                ],
                type=pa.string(),
            )
        return pa.array(values, type=typ)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
        try:  # e.g. "12" for an int column, 3.0 for an int: go through text
            return pa.array([None if v is None else str(v) for v in values], type=pa.string()).cast(typ)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc2:
            raise LakeError(
                f"column {name!r}: values do not fit {typ}: {exc}", code="SchemaMismatch", status=502
            ) from exc2


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


# ---------------------------------------------------------------------------------------------- writer
class PartWriter:
    """Streams Arrow tables into Parquet parts `<prefix>part-NNNNN.parquet`: each `write()` is one row
    group in a local temporary file; a part is uploaded when it holds `max_rows` rows, and on `close()`.
    With an `executor`, uploads run in the background (`close()` waits for them and re-raises their
    errors), so a sync can write several parts and tables while earlier parts are still uploading."""

    def __init__(
        self,
        lake: Lake,
        prefix: str,
        schema: pa.Schema,
        *,
        max_rows: int = 1_000_000,
        executor: Executor | None = None,
    ):
        self.lake = lake
        self.prefix = prefix.rstrip("/") + "/"
        self.schema = schema
        self.max_rows = max_rows
        self.parts: list[str] = []
        self.part_rows: list[int] = []  # rows in each part, in `parts` order
        self.rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._file: Any = None
        self._part_rows = 0
        self._executor = executor
        self._uploads: list[Future[None]] = []

    def _open(self) -> pq.ParquetWriter:
        if self._writer is None:
            self._file = tempfile.NamedTemporaryFile(
                prefix="lake-part-", suffix=".parquet", dir=self.lake.temp_dir, delete=False
            )
            self._writer = pq.ParquetWriter(self._file, self.schema, compression="zstd")
            self._part_rows = 0
        return self._writer

    def write(self, table: pa.Table) -> None:
        """Append `table` as one row group (split where a part reaches `max_rows`: no part holds more)."""
        if table.num_rows == 0:
            return
        if table.schema != self.schema:
            table = conform(table, self.schema)
        while table.num_rows:
            take = min(table.num_rows, self.max_rows - self._part_rows)
            chunk, table = table.slice(0, take), table.slice(take)
            self._open().write_table(chunk, row_group_size=max(chunk.num_rows, 1))
            self._part_rows += chunk.num_rows
            self.rows += chunk.num_rows
            if self._part_rows >= self.max_rows:
                self.flush()

    def _upload(self, path: str, local: str) -> None:
        try:
            with open(local, "rb") as fh:
                self.lake.container.upload_blob(
                    path,
                    fh,
                    overwrite=True,
                    max_concurrency=2,
                    content_settings=ContentSettings(content_type="application/vnd.apache.parquet"),
                )
        finally:
            os.unlink(local)

    def flush(self, *, wait: bool = False) -> None:
        """Upload the part being written (if any); the next write starts a new part. With `wait`, also
        wait for background uploads (e.g. before reading the parts back)."""
        if self._writer is not None:
            self._writer.close()
            self._file.close()
            path = f"{self.prefix}part-{len(self.parts):05d}.parquet"
            if self._executor is None:
                self._upload(path, self._file.name)
            else:
                self._uploads.append(self._executor.submit(self._upload, path, self._file.name))
            self.parts.append(path)
            self.part_rows.append(self._part_rows)
            self._writer = None
            self._file = None
        if wait:
            self._wait()

    def _wait(self) -> None:
        uploads, self._uploads = self._uploads, []
        for future in uploads:
            future.result()

    def close(self) -> list[str]:
        """Upload what remains (and wait for every upload); return the part paths (none when nothing
        was written)."""
        self.flush(wait=True)
        return list(self.parts)

    def abort(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
            with contextlib.suppress(Exception):
                self._file.close()
                os.unlink(self._file.name)
            self._writer = None
        for future in self._uploads:  # let background uploads end; a killed run's parts are collected later
            with contextlib.suppress(Exception):
                future.result()
        self._uploads = []

    def __enter__(self) -> PartWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _read_file(pf: pq.ParquetFile, columns: Sequence[str] | None) -> pa.Table:
    cols = None if columns is None else [c for c in columns if c in pf.schema_arrow.names]
    return pf.read(columns=cols)


def delete_all_except(container: ContainerClient, keep: Sequence[str] = ()) -> int:
    """Delete every blob of `container` whose name does not start with one of `keep`; return how many
    (e.g. the retention purge of the model container, which keeps its audit log)."""
    lake = Lake(container)
    return lake.delete_paths([n for n in lake.list("") if not n.startswith(tuple(keep))])


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


# ---------------------------------------------------------------------------------------------- lake
class Lake:
    """Parquet tables, JSON documents and leases on one container."""

    def __init__(self, container: ContainerClient, *, temp_dir: str | None = None):
        self.container = container
        self.json = JsonBlobs(container)
        self.temp_dir = temp_dir

    # ------------------------------------------------------------------ blobs
    def list(self, prefix: str) -> list[str]:
        return self.json.list(prefix)

    def exists(self, path: str) -> bool:
        return bool(self.container.get_blob_client(path).exists())

    def delete(self, path: str) -> bool:
        return self.json.delete(path)

    def delete_paths(self, paths: Sequence[str]) -> int:
        deleted = 0
        for i in range(0, len(paths), 256):
            chunk = list(paths[i : i + 256])
            try:
                self.container.delete_blobs(*chunk)
                deleted += len(chunk)
            except HttpResponseError:  # batch delete unsupported or partial: one by one
                deleted += sum(1 for p in chunk if self.delete(p))
        return deleted

    def delete_prefix(self, prefix: str) -> int:
        """Delete every blob under `prefix`; return how many."""
        return self.delete_paths(self.list(prefix))

    # ------------------------------------------------------------------ JSON
    def read_json(self, path: str) -> Any | None:
        return self.json.read(path)

    def read_json_with_etag(self, path: str) -> tuple[Any | None, str | None]:
        return self.json.read_with_etag(path)

    def write_json(self, path: str, obj: Any, *, etag: str | None = None, create_only: bool = False) -> str:
        """Write a JSON blob; with `etag` only if unchanged since read (ManifestConflict otherwise), with
        `create_only` only if absent (ResourceExistsError). Returns the new ETag."""
        try:
            return self.json.write(path, obj, etag=etag, create_only=create_only)
        except ResourceModifiedError as exc:
            raise ManifestConflict(f"{path} changed since it was read") from exc

    # ------------------------------------------------------------------ Parquet
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
        return _read_file(self.parquet_file(path), columns)

    def part_writer(
        self,
        prefix: str,
        schema: pa.Schema,
        *,
        max_rows: int = 1_000_000,
        executor: Executor | None = None,
    ) -> PartWriter:
        return PartWriter(self, prefix, schema, max_rows=max_rows, executor=executor)

    def parquet_files(self, paths: Sequence[str], *, workers: int = 4) -> dict[str, pq.ParquetFile]:
        """Download several parts at once (`workers` in parallel) and open them; keyed by path."""
        unique = list(dict.fromkeys(paths))
        if len(unique) <= 1 or workers <= 1:
            return {p: self.parquet_file(p) for p in unique}
        with ThreadPoolExecutor(max_workers=min(workers, len(unique)), thread_name_prefix="lake-get") as pool:
            return dict(zip(unique, pool.map(self.parquet_file, unique), strict=True))

    # ------------------------------------------------------------------ tables
    @staticmethod
    def manifest_path(table: str) -> str:
        return f"tables/{table}/manifest.json"

    def manifest(self, table: str) -> dict[str, Any] | None:
        doc = self.read_json(self.manifest_path(table))
        return doc if isinstance(doc, dict) else None

    def manifest_with_etag(self, table: str) -> tuple[dict[str, Any] | None, str | None]:
        doc, etag = self.read_json_with_etag(self.manifest_path(table))
        return (doc if isinstance(doc, dict) else None), etag

    def commit_manifest(self, table: str, manifest: Mapping[str, Any], etag: str | None) -> str:
        """Swap the manifest: only if it still has `etag` (or, with etag None, only if absent)."""
        path = self.manifest_path(table)
        if etag is None:
            try:
                return self.write_json(path, dict(manifest), create_only=True)
            except ResourceExistsError as exc:
                raise ManifestConflict(f"{path} was created by another writer") from exc
        return self.write_json(path, dict(manifest), etag=etag)

    def table_schema(self, table: str) -> pa.Schema | None:
        m = self.manifest(table)
        return schema_from_json(m["schema"]) if m and isinstance(m.get("schema"), dict) else None

    def _read_parts(self, table: str, kind: str, columns: Sequence[str] | None) -> pa.Table:
        for attempt in range(3):
            m = self.manifest(table)
            if not m:
                return pa.table({})
            schema = schema_from_json(m.get("schema") or {})
            if kind == "history":
                schema = history_schema(schema)
            if columns is not None:
                schema = pa.schema([f for f in schema if f.name in columns])
            try:
                files = self.parquet_files(m.get(kind, []))
                pieces = [conform(_read_file(files[p], columns), schema) for p in m.get(kind, [])]
            except ResourceNotFoundError:
                # a newer sync replaced this version between our manifest read and the part read
                log.info(
                    "lake %s/%s: a part vanished; re-reading the manifest (attempt %d)", table, kind, attempt
                )
                time.sleep(0.2)
                continue
            if not pieces:
                return schema.empty_table()
            return pa.concat_tables(pieces)
        raise LakeError(f"table {table} kept changing while being read", code="LakeBusy", status=503)

    def read_current(self, table: str, columns: Sequence[str] | None = None) -> pa.Table:
        """The compacted current view (one row per id); an empty table (with the schema) if never synced."""
        return self._read_parts(table, "current", columns)

    def read_history(self, table: str, columns: Sequence[str] | None = None) -> pa.Table:
        """Every version of every row seen by a sync, with `_synced_at` and `_deleted`."""
        return self._read_parts(table, "history", columns)

    def parquet_file(self, path: str) -> pq.ParquetFile:
        """Download one part and open it (row groups and columns can then be read one at a time)."""
        data = self.container.download_blob(path, max_concurrency=2).readall()
        return pq.ParquetFile(pa.BufferReader(data))

    def iter_current_batches(
        self,
        table: str,
        manifest: Mapping[str, Any] | None = None,
        columns: Sequence[str] | None = None,
        files: dict[str, pq.ParquetFile] | None = None,
        batch_size: int = 65_536,
    ) -> Iterator[pa.RecordBatch]:
        """The current view in batches of `batch_size` rows (memory: one downloaded part). Pass a dict as
        `files` to keep the downloaded parts for a second pass instead of downloading them again."""
        m = manifest if manifest is not None else self.manifest(table)
        if not m:
            return
        for path in m.get("current", []):
            pf = files.get(path) if files is not None else None
            if pf is None:
                pf = self.parquet_file(path)
                if files is not None:
                    files[path] = pf
            cols = None if columns is None else [c for c in columns if c in pf.schema_arrow.names]
            yield from pf.iter_batches(batch_size=batch_size, columns=cols)

    def collect_garbage(self, table: str, keep: Sequence[str] = ()) -> int:
        """Delete parts under tables/<table>/ that the manifest does not list (and are not in `keep`).
        Only call while holding the sync lease."""
        m = self.manifest(table) or {}
        listed = set(m.get("current", [])) | set(m.get("history", [])) | set(m.get("previous_current", []))
        listed |= set(keep)
        prefix = f"tables/{table}/"
        orphans = [p for p in self.list(prefix) if p.endswith(".parquet") and p not in listed]
        if orphans:
            log.info("lake %s: removing %d unlisted parts", table, len(orphans))
        return self.delete_paths(orphans)

    # ------------------------------------------------------------------ lease
    @contextlib.contextmanager
    def lease(
        self, name: str, *, duration: int = 60, wait: float = 0.0, poll: float = 1.0
    ) -> Iterator[Lease]:
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
