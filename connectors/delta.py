"""Delta Lake tables (delta-rs, the `deltalake` package) under one root: a Blob Storage container or, in
unit tests, a local directory. The lake's tables, its history and the score state are all Delta tables,
so DuckDB, Spark or pandas read them with no code of ours (docs/LAKE.md).

Writers are serialised by the caller (the sync lease); a commit that still loses a race
(`CommitFailedError`) is retried here. Every commit may carry custom metadata (a sync's delta link, the run
that wrote it), read back with `last_commit`.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

log = logging.getLogger(__name__)

COMMIT_RETRIES = 8
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


def location_from_connection_string(connection_string: str, container: str) -> DeltaLocation:
    """The container's Delta location. Azurite: delta-rs's emulator mode, whose endpoint comes from the
    `AZURITE_BLOB_STORAGE_URL` variable (set here: delta-rs reads no option for it, and an explicit key +
    endpoint breaks on Azurite's listing). Azure: the account name with its key, or, without a key,
    managed identity."""
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
    else:
        options["use_azure_cli"] = "false"
        options["azure_msi_endpoint"] = os.environ.get("IDENTITY_ENDPOINT", "") or ""
    return DeltaLocation(f"az://{container}", {k: v for k, v in options.items() if v})


class DeltaTables:
    """Open, read, append to, MERGE into and maintain the Delta tables under one location."""

    def __init__(self, location: DeltaLocation):
        self.location = location
        # Read snapshots kept per table and brought up to date incrementally: opening a table reads its
        # whole log since the last checkpoint (~100 ms for 30 commits on Azurite), an update only the new
        # commits (~10 ms).
        self._snapshots: dict[str, DeltaTable] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def uri(self, path: str) -> str:
        return self.location.uri(path)

    def open(self, path: str, *, version: int | None = None) -> DeltaTable | None:
        """The table at `path` (None when it was never written)."""
        try:
            return DeltaTable(self.uri(path), version=version, storage_options=self.location.storage_options)
        except TableNotFoundError:
            return None

    def exists(self, path: str) -> bool:
        return self.version(path) >= 0

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
        try:
            dataset = self._dataset(path, prune, version, fresh=False)
            return None if dataset is None else _scan(dataset, columns, filters)
        except (DeltaError, OSError) as exc:  # a kept snapshot whose files are gone (vacuumed, table recreated)
            log.info("delta %s: snapshot out of date (%s); reopened", path, type(exc).__name__)
            dataset = self._dataset(path, prune, version, fresh=True)
            return None if dataset is None else _scan(dataset, columns, filters)

    def forget(self) -> None:
        """Drop the kept snapshots (after blobs were deleted behind the tables' logs, e.g. a purge)."""
        with self._guard:
            self._snapshots.clear()

    def _dataset(self, path: str, prune: Any, version: int | None, *, fresh: bool) -> Any:
        if version is not None:
            table = self.open(path, version=version)
            return None if table is None else table.to_pyarrow_dataset(file_pruning_predicate=prune)
        with self._lock(path):
            table = self._latest(path, fresh=fresh)
            return None if table is None else table.to_pyarrow_dataset(file_pruning_predicate=prune)

    def _lock(self, path: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(path, threading.Lock())

    def _latest(self, path: str, *, fresh: bool = False) -> DeltaTable | None:
        """The kept snapshot of `path` brought up to date (opened on first use); call under its lock."""
        table = None if fresh else self._snapshots.get(path)
        if table is not None:
            table.update_incremental()
            return table
        table = self.open(path)
        if table is not None:
            self._snapshots[path] = table
        return table

    def version(self, path: str) -> int:
        """The table's latest version (-1 when it was never written)."""
        with self._lock(path):
            table = self._latest(path)
            return -1 if table is None else int(table.version())

    def schema(self, path: str) -> pa.Schema | None:
        dataset = self._dataset(path, None, None, fresh=False)
        return None if dataset is None else dataset.schema

    def last_commit(self, path: str, *, having: str | None = None, depth: int = 50) -> dict[str, Any]:
        """The newest commit's info (its custom metadata included), or with `having` the newest of the last
        `depth` commits whose metadata has that key (maintenance commits carry none); {} if there is none."""
        with self._lock(path):
            table = self._latest(path)
            if table is None:
                return {}
            for limit in (1,) if having is None else (1, depth):  # usually the newest commit has it
                for commit in table.history(limit):
                    if having is None or having in commit:
                        return dict(commit)
        return {}

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

        def write() -> None:
            with self._lock(path):  # on the kept snapshot: no reread of the log before the commit
                table = self._latest(path)
                write_deltalake(
                    self.uri(path) if table is None else table,
                    data,
                    mode="append",
                    schema_mode="merge",
                    partition_by=list(partition_by) if partition_by else None,
                    storage_options=self.location.storage_options,
                    commit_properties=_props(metadata),
                )

        _retry(write, path)
        return self._version(path)

    def overwrite(
        self, path: str, data: pa.Table | pa.RecordBatchReader, *, metadata: Mapping[str, str] | None = None
    ) -> int:
        """Replace the table's rows and schema in one commit (the old version stays readable until vacuumed)."""

        def write() -> None:
            write_deltalake(
                self.uri(path),
                data,
                mode="overwrite",
                schema_mode="overwrite",
                storage_options=self.location.storage_options,
                commit_properties=_props(metadata),
            )

        _retry(write, path)
        return self._version(path)

    def merge(
        self,
        path: str,
        source: pa.Table,
        keys: Sequence[str],
        *,
        delete_column: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Upsert `source` on `keys`: matched rows are replaced, new rows inserted; with `delete_column`,
        source rows where it is true delete their target row (and are never inserted), and the column
        itself is not stored. Creates the table on first use. Returns delta-rs's merge metrics."""
        stored = source.drop_columns([delete_column]) if delete_column else source
        if self.version(path) < 0:
            rows = stored
            if delete_column:
                rows = stored.filter(pc.invert(pc.fill_null(source.column(delete_column), False)))
            self.append(path, rows, metadata=metadata)
            return {"num_target_rows_inserted": rows.num_rows, "created": True}
        predicate = " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys)
        columns = [f"`{n}`" for n in stored.column_names]
        updates = {c: f"s.{c}" for c in columns}

        def run() -> dict[str, Any]:
            with self._lock(path):  # on the kept snapshot, one MERGE of this table at a time per process
                table = self._latest(path)
                assert table is not None
                return self._merge(table, source, predicate, updates, delete_column, metadata)

        return _retry(run, path)

    @staticmethod
    def _merge(
        table: DeltaTable,
        source: pa.Table,
        predicate: str,
        updates: dict[str, str],
        delete_column: str | None,
        metadata: Mapping[str, str] | None,
    ) -> dict[str, Any]:
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

    def delete_rows(self, path: str, predicate: str, *, metadata: Mapping[str, str] | None = None) -> int:
        """Delete the rows matching a SQL `predicate`; returns how many."""
        table = self.open(path)
        if table is None:
            return 0

        def run() -> dict[str, Any]:
            current = self.open(path)
            assert current is not None
            return dict(current.delete(predicate, commit_properties=_props(metadata)))

        return int(_retry(run, path).get("num_deleted_rows", 0))

    def maintain(self, path: str, *, retention_hours: int = DEFAULT_RETENTION_HOURS) -> dict[str, Any]:
        """Compact small files (`optimize`) and remove files older than `retention_hours` that no version
        within that time needs (`vacuum`). Time travel reaches back `retention_hours`."""
        table = self.open(path)
        if table is None:
            return {}
        compacted = dict(_retry(lambda: table.optimize.compact(), path))
        table = self.open(path)
        assert table is not None
        removed = table.vacuum(retention_hours=retention_hours, enforce_retention_duration=False, dry_run=False)
        return {
            "filesAdded": compacted.get("numFilesAdded", 0),
            "filesRemoved": compacted.get("numFilesRemoved", 0),
            "vacuumed": len(removed),
        }

    def _version(self, path: str) -> int:
        return self.version(path)


def _scan(dataset: Any, columns: Sequence[str] | None, filters: Any) -> pa.Table:
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


def _props(metadata: Mapping[str, str] | None) -> CommitProperties | None:
    if not metadata:
        return None
    return CommitProperties(custom_metadata={str(k): str(v) for k, v in metadata.items()})


def _retry(fn: Any, path: str) -> Any:
    """Run a commit; on CommitFailedError (another writer committed first) re-read and try again."""
    for attempt in range(COMMIT_RETRIES):
        try:
            return fn()
        except CommitFailedError as exc:
            if attempt == COMMIT_RETRIES - 1:
                raise
            wait = min(2.0, 0.05 * 2**attempt) * (0.5 + random.random())  # noqa: S311 - jitter
            log.info("delta %s: commit lost a race (%s); retry %d in %.2f s", path, exc, attempt + 1, wait)
            time.sleep(wait)
    raise AssertionError("unreachable")
