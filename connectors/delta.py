"""Delta Lake tables (delta-rs, the `deltalake` package) under one root: a Blob Storage container or, in
unit tests, a local directory. The lake's tables, its history and the score state are all Delta tables,
so DuckDB, Spark or pandas read them with no code of ours (docs/LAKE.md).

Writers are serialised by the caller (the sync lease); a commit that still loses a race
(`CommitFailedError`) is retried here. Every commit may carry custom metadata (a sync's delta link, the run
that wrote it), read back with `last_commit`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, WriterProperties, write_deltalake
from deltalake import Schema as DeltaSchema
from deltalake.exceptions import CommitFailedError, TableNotFoundError
from deltalake.transaction import AddAction, RemoveAction, create_table_with_add_actions

from connectors.delta_stream import ROW_GROUP_ROWS, StreamFiles

log = logging.getLogger(__name__)

COMMIT_RETRIES = 8
# Streamed writes keep one row group per open file in memory: small row groups and files bound a write's
# memory whatever the table's size (measured: a partitioned write of 1,000,000 wide rows peaks ~330 MiB
# above the process's start with these, and grows with the rows written with delta-rs's defaults).
TARGET_FILE_BYTES = 16 * 1024 * 1024
# Kept by `vacuum`: files a reader or a time-travel query may still need (docs/LAKE.md "Retention").
DEFAULT_RETENTION_HOURS = 7 * 24


@dataclass(frozen=True)
class DeltaLocation:
    """Where the Delta tables live: `az://<container>` with its storage options, or a local directory."""

    root: str
    storage_options: dict[str, str] = field(default_factory=dict)

    def uri(self, path: str) -> str:
        return f"{self.root.rstrip('/')}/{path.strip('/')}"


def location_for_container(container: Any) -> DeltaLocation:
    """The Delta location of an azure-storage-blob ContainerClient (its account, endpoint and key)."""
    account = str(getattr(container, "account_name", "") or "")
    url = urlparse(str(getattr(container, "url", "")))
    key = getattr(getattr(container, "credential", None), "account_key", None)
    endpoint = f"{url.scheme}://{url.netloc}/{account}" if account == "devstoreaccount1" else ""
    conn = f"AccountName={account};BlobEndpoint={endpoint};" + (f"AccountKey={key};" if key else "")
    return location_from_connection_string(conn, str(getattr(container, "container_name", "")))


def location_from_connection_string(
    connection_string: str, container: str, *, client_id: str | None = None
) -> DeltaLocation:
    """The container's Delta location. Azurite: delta-rs's emulator mode, whose endpoint comes from the
    `AZURITE_BLOB_STORAGE_URL` variable (set here: delta-rs reads no option for it, and an explicit key +
    endpoint breaks on Azurite's listing). Azure: the account name with its key; without a key delta-rs
    authenticates as the app's managed identity (its default credential chain; `client_id` picks a
    user-assigned one)."""
    parts = dict(p.split("=", 1) for p in connection_string.strip().strip(";").split(";") if "=" in p)
    if connection_string.strip() == "UseDevelopmentStorage=true":
        parts = {"AccountName": "devstoreaccount1", "BlobEndpoint": "http://127.0.0.1:10000/devstoreaccount1"}
    account = parts.get("AccountName", "")
    endpoint = parts.get("BlobEndpoint", "")
    if account == "devstoreaccount1":
        url = urlparse(endpoint or "http://127.0.0.1:10000")
        os.environ["AZURITE_BLOB_STORAGE_URL"] = f"{url.scheme}://{url.netloc}"
        return DeltaLocation(f"az://{container}", {"use_emulator": "true"})
    options = {"account_name": account}
    if parts.get("AccountKey"):
        options["account_key"] = parts["AccountKey"]
    elif client_id:
        options["client_id"] = client_id
    return DeltaLocation(f"az://{container}", options)


class DeltaTables:
    """Open, read, append to, MERGE into and maintain the Delta tables under one location."""

    def __init__(self, location: DeltaLocation):
        self.location = location
        # Opened tables, per thread (a DeltaTable object is not shared across threads): reopening reads
        # the whole log, while `update_incremental` reads only the commits since. `_caches` lists every
        # thread's dict so `forget` can clear them all.
        self._local = threading.local()
        self._caches: list[tuple[threading.Thread, dict[str, DeltaTable]]] = []
        self._caches_lock = threading.Lock()
        self._commits: dict[tuple[str, int, str | None, int], dict[str, Any]] = {}  # (path, version, ...)

    def uri(self, path: str) -> str:
        return self.location.uri(path)

    def open(self, path: str, *, version: int | None = None) -> DeltaTable | None:
        """The table at `path`, at its newest version unless `version` is given (None when it was never
        written)."""
        if version is not None:
            try:
                return DeltaTable(self.uri(path), version=version, storage_options=self.location.storage_options)
            except TableNotFoundError:
                return None
        cache = self._cache()
        pinned = self._pinned()
        table = cache.get(path)
        if table is not None:
            if pinned is None or path not in pinned:
                table.update_incremental()
                if pinned is not None:
                    pinned.add(path)
            return table
        try:
            table = DeltaTable(self.uri(path), storage_options=self.location.storage_options)
        except TableNotFoundError:
            return None
        cache[path] = table
        if pinned is not None:
            pinned.add(path)
        return table

    @contextlib.contextmanager
    def pinned(self) -> Iterator[None]:
        """Within the block, a table this thread opened is brought up to date once, not on every use: for
        the sync lease's holder, the only writer, whose own commits update its opened tables (each
        up-to-date check lists the table's log)."""
        self._local.pinned = set()
        try:
            yield
        finally:
            self._local.pinned = None

    def _cache(self) -> dict[str, DeltaTable]:
        cache: dict[str, DeltaTable] | None = getattr(self._local, "tables", None)
        if cache is None:
            cache = self._local.tables = {}
            with self._caches_lock:  # drop the caches of threads that ended (pool threads come and go)
                self._caches = [(t, c) for t, c in self._caches if t.is_alive()]
                self._caches.append((threading.current_thread(), cache))
        return cache

    def _pinned(self) -> set[str] | None:
        """The paths this thread brought up to date within its `pinned` block (None outside one)."""
        pinned: set[str] | None = getattr(self._local, "pinned", None)
        return pinned

    def _unpin(self, path: str | None = None) -> None:
        """The next `open` of `path` (of every table) on this thread brings it up to date: after a commit
        lost a race, or blobs were deleted."""
        pinned = self._pinned()
        if pinned is not None:
            pinned.clear() if path is None else pinned.discard(path)

    def forget(self, path: str | None = None) -> None:
        """Drop every thread's opened table(s) (of `path`, or all), e.g. after blobs under them were deleted."""
        with self._caches_lock:
            caches = [c for _, c in self._caches]
            self._commits = {k: v for k, v in self._commits.items() if path is not None and k[0] != path}
        for cache in caches:
            if path is None:
                cache.clear()
            else:
                cache.pop(path, None)
        self._unpin(path)

    def exists(self, path: str) -> bool:
        return self.open(path) is not None

    def read(
        self,
        path: str,
        columns: Sequence[str] | None = None,
        *,
        filters: Any = None,
        prune: list[tuple[str, str, Any]] | None = None,
        version: int | None = None,
    ) -> pa.Table | None:
        """The table's rows (only `columns` that exist; pyarrow `filters`); None when it does not exist.
        `prune` ([(column, op, value)], all must hold) skips whole files by the statistics in the Delta log
        before anything is read (delta-rs), whatever the files' string types."""
        table = self.open(path, version=version)
        if table is None:
            return None
        dataset = table.to_pyarrow_dataset(file_pruning_predicate=prune) if prune else table.to_pyarrow_dataset()
        cols = None if columns is None else [c for c in columns if c in dataset.schema.names]
        if filters is None:
            return dataset.to_table(columns=cols)
        try:
            return dataset.to_table(columns=cols, filter=filters)
        except pa.ArrowNotImplementedError:
            # Files written by MERGE or optimize (DataFusion) store strings as string_view, which pyarrow 22
            # cannot compare against file statistics ("greater_equal ... string_view"): filter after reading.
            try:
                return dataset.to_table(columns=cols).filter(filters)
            except (pa.ArrowInvalid, KeyError):  # the filter needs a column that was not asked for
                rows = dataset.to_table().filter(filters)
                return rows if cols is None else rows.select(cols)

    def partition_columns(self, path: str) -> list[str]:
        table = self.open(path)
        return [] if table is None else list(table.metadata().partition_columns)

    def schema(self, path: str) -> pa.Schema | None:
        table = self.open(path)
        return None if table is None else table.to_pyarrow_dataset().schema

    def last_commit(self, path: str, *, having: str | None = None, depth: int = 50) -> dict[str, Any]:
        """The newest commit's info (its custom metadata included), or with `having` the newest of the last
        `depth` commits whose metadata has that key (maintenance commits carry none); {} if there is none."""
        table = self.open(path)
        if table is None:
            return {}
        key = (path, int(table.version()), having, depth)  # a version's commits never change
        with self._caches_lock:
            found = self._commits.get(key)
        if found is None:
            found = _last_commit(table, having, depth)
            with self._caches_lock:
                self._commits[key] = found
                if len(self._commits) > 256:
                    self._commits.pop(next(iter(self._commits)))
        return dict(found)

    def append(
        self,
        path: str,
        data: pa.Table | pa.RecordBatchReader,
        *,
        metadata: Mapping[str, str] | None = None,
        partition_by: Sequence[str] | None = None,
    ) -> int:
        """Append rows (an empty table still commits, carrying `metadata`); new columns are merged into the
        schema. Returns the new version."""

        return self._write(path, data, "append", metadata, partition_by)

    def append_stream(
        self,
        path: str,
        batches: pa.RecordBatchReader,
        *,
        metadata: Mapping[str, str] | None = None,
        partition_by: str | None = None,
    ) -> int:
        """Append a stream of any size in bounded memory: pyarrow writes the Parquet files (row groups of
        ROW_GROUP_ROWS, one open file per partition value, a new file every STREAM_FILE_ROWS rows) straight to
        the table's storage, and one Delta transaction adds them. Streams whose columns the table lacks go
        through `append` (schema evolution). Returns the new version."""
        schema = batches.schema
        current = self.open(path)
        if current is not None and not set(schema.names) <= set(current.to_pyarrow_dataset().schema.names):
            return self.append(path, batches, metadata=metadata, partition_by=[partition_by] if partition_by else None)
        files = StreamFiles(self.uri(path), self.location.storage_options, schema, partition_by)
        try:
            for batch in batches:
                files.write(batch)
            actions = files.close()
        except BaseException:
            files.abort()
            raise
        table_schema = DeltaSchema.from_arrow(schema)
        parts = [partition_by] if partition_by else None
        if current is None:
            create_table_with_add_actions(
                self.uri(path), table_schema, actions, mode="error", partition_by=parts,
                storage_options=self.location.storage_options, commit_properties=_props(metadata),
            )  # fmt: skip
        else:
            changes: list[AddAction | RemoveAction] = list(actions)
            _retry(
                lambda: current.create_write_transaction(
                    changes, mode="append", schema=current.schema(), partition_by=parts,
                    commit_properties=_props(metadata),
                ),
                path,
                current.update_incremental,
            )  # fmt: skip
            current.update_incremental()  # a write transaction does not update the table it was made on
        return self._version(path)

    def overwrite(
        self, path: str, data: pa.Table | pa.RecordBatchReader, *, metadata: Mapping[str, str] | None = None
    ) -> int:
        """Replace the table's rows and schema in one commit (the old version stays readable until vacuumed)."""

        return self._write(path, data, "overwrite", metadata, None)

    def _write(
        self,
        path: str,
        data: pa.Table | pa.RecordBatchReader,
        mode: str,
        metadata: Mapping[str, str] | None,
        partition_by: Sequence[str] | None,
    ) -> int:
        def write() -> None:
            write_deltalake(
                self.open(path) or self.uri(path),
                data,
                mode="append" if mode == "append" else "overwrite",
                schema_mode="merge" if mode == "append" else "overwrite",
                partition_by=list(partition_by) if partition_by else None,
                storage_options=self.location.storage_options,
                commit_properties=_props(metadata),
                target_file_size=TARGET_FILE_BYTES,
                writer_properties=WriterProperties(max_row_group_size=ROW_GROUP_ROWS),
            )

        _retry(write, path, lambda: self._unpin(path))
        return self._version(path)

    def merge(
        self,
        path: str,
        source: pa.Table,
        keys: Sequence[str],
        *,
        delete_column: str | None = None,
        metadata: Mapping[str, str] | None = None,
        target_filter: str | None = None,
        partition_by: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """Upsert `source` on `keys`: matched rows are replaced, new rows inserted; with `delete_column`,
        source rows where it is true delete their target row (and are never inserted), and the column
        itself is not stored. `target_filter` (SQL on the target alias `t`) narrows the target rows that can
        match, so files of other partitions are neither read nor rewritten: the caller must know that no
        matching row lives outside it. Creates the table on first use (partitioned by `partition_by`).
        Returns delta-rs's merge metrics."""
        stored = source.drop_columns([delete_column]) if delete_column else source
        if not self.exists(path):
            rows = stored
            if delete_column:
                rows = stored.filter(pc.invert(pc.fill_null(source.column(delete_column), False)))
            self.append(path, rows, metadata=metadata, partition_by=partition_by)
            return {"num_target_rows_inserted": rows.num_rows, "created": True}
        predicate = " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys)
        if target_filter:
            predicate = f"{predicate} AND ({target_filter})"
        columns = [f"`{n}`" for n in stored.column_names]
        updates = {c: f"s.{c}" for c in columns}

        def run() -> dict[str, Any]:
            table = self.open(path)
            assert table is not None
            merger = table.merge(
                source,
                predicate=predicate,
                source_alias="s",
                target_alias="t",
                merge_schema=True,
                commit_properties=_props(metadata),
            )
            if delete_column:
                gone = f"s.`{delete_column}` = true"
                kept = f"(s.`{delete_column}` IS NULL OR s.`{delete_column}` = false)"
                merger = merger.when_matched_delete(predicate=gone).when_matched_update(updates, predicate=kept)
                merger = merger.when_not_matched_insert(updates, predicate=kept)
            else:
                merger = merger.when_matched_update(updates).when_not_matched_insert(updates)
            return dict(merger.execute())

        return _retry(run, path, lambda: self._unpin(path))

    def maintain(self, path: str, *, retention_hours: int = DEFAULT_RETENTION_HOURS) -> dict[str, Any]:
        """Compact small files (`optimize`), remove files older than `retention_hours` that no version within
        that time needs (`vacuum`), write a checkpoint and drop log entries older than the table's log
        retention (so opening the table reads a checkpoint plus a few commits, however many syncs came
        before). Time travel reaches back `retention_hours`."""
        table = self.open(path)
        if table is None:
            return {}
        compacted = dict(_retry(lambda: table.optimize.compact(), path, table.update_incremental))
        table = self.open(path)
        assert table is not None
        removed = table.vacuum(retention_hours=retention_hours, enforce_retention_duration=False, dry_run=False)
        table = self.open(path)
        assert table is not None
        table.create_checkpoint()
        table.cleanup_metadata()
        return {
            "filesAdded": compacted.get("numFilesAdded", 0),
            "filesRemoved": compacted.get("numFilesRemoved", 0),
            "vacuumed": len(removed),
            "checkpointVersion": int(table.version()),
        }

    def _version(self, path: str) -> int:
        table = self.open(path)
        return -1 if table is None else int(table.version())


def _last_commit(table: DeltaTable, having: str | None, depth: int) -> dict[str, Any]:
    for n in (1, 8, depth):  # reading a commit costs a request: the newest is usually the one
        commits = table.history(min(n, depth))
        for commit in commits:
            if having is None or having in commit:
                return dict(commit)
        if having is None or len(commits) < min(n, depth):
            break
    return {}


def _props(metadata: Mapping[str, str] | None) -> CommitProperties | None:
    if not metadata:
        return None
    return CommitProperties(custom_metadata={str(k): str(v) for k, v in metadata.items()})


def _retry(fn: Any, path: str, refresh: Callable[[], Any] | None = None) -> Any:
    """Run a commit; on CommitFailedError (another writer committed first) re-read and try again
    (`refresh` makes the next attempt see the newer version)."""
    for attempt in range(COMMIT_RETRIES):
        try:
            return fn()
        except CommitFailedError as exc:
            if attempt == COMMIT_RETRIES - 1:
                raise
            if refresh is not None:
                refresh()
            wait = min(2.0, 0.05 * 2**attempt) * (0.5 + random.random())  # noqa: S311 - jitter
            log.info("delta %s: commit lost a race (%s); retry %d in %.2f s", path, exc, attempt + 1, wait)
            time.sleep(wait)
    raise AssertionError("unreachable")
