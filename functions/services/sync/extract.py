"""Extract: read one table's rows from the Dataverse Web API (full, or the changes since its delta link) and
stage the row versions that are new, changed or deleted into a local Parquet file, ready to commit.

Memory holds one page plus the keys and `_etag`s of the current view (to tell new from changed from
unchanged), never the table."""

from __future__ import annotations

import datetime as dt
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from connectors import telemetry
from connectors.dataverse import DataverseBadRequest, DataverseClient, DataverseNotFound, Page
from connectors.lake import (
    DELETED,
    ETAG_COLUMN,
    SYNC_ID,
    SYNCED_AT,
    TIMESTAMP,
    Lake,
    conform,
    history_schema,
    rows_to_table,
    schema_from_attributes,
)
from connectors.odata import filter_eq

log = logging.getLogger(__name__)

# The current views of tables with this column are partitioned by it (docs/LAKE.md): changes touch open
# rows, so a MERGE that names the partitions its matches live in leaves the closed rows' files alone.
PARTITION_COLUMN = "statecode"


@dataclass(frozen=True)
class TableSpec:
    """A table to sync: logical name, whether to use change tracking, an optional server-side filter."""

    logical: str
    track_changes: bool = True
    filter: str | None = None


# Largest first: tables run a few at a time in this order.
TABLES: tuple[TableSpec, ...] = (
    TableSpec("opportunity"),
    TableSpec("opportunitysalesprocess"),
    TableSpec("account"),
    TableSpec("systemuser"),
    # Small tables: a full read each run (change tracking is often off for them, and filters are not
    # allowed with it); the comparison with the current view still yields exact new/changed/deleted.
    TableSpec("processstage", track_changes=False),
    TableSpec("workflow", track_changes=False, filter=filter_eq("category", 4)),
)


@dataclass(frozen=True)
class TableMeta:
    """What the metadata says of a table: its entity set, primary key and attributes."""

    logical: str
    entity_set: str
    key: str
    attributes: list[dict[str, Any]]

    def schema(self) -> pa.Schema:
        schema = schema_from_attributes(self.attributes, key=self.key)
        if self.key not in schema.names:
            schema = pa.schema([pa.field(self.key, pa.string()), *schema])
        return schema


@dataclass
class Extract:
    """One table's staged changes: history rows (new and changed versions, then deletions) in `path`."""

    spec: TableSpec
    meta: TableMeta
    sync_id: str
    synced_at: dt.datetime
    mode: str
    delta_link: str | None
    path: str
    rows: int = 0
    stats: dict[str, int] = field(default_factory=dict)
    # the PARTITION_COLUMN values of the current rows these changes replace or delete
    target_states: set[Any] = field(default_factory=set)

    def read(self) -> pa.Table:
        return pq.read_table(self.path)

    def batches(self) -> pa.RecordBatchReader:
        pf = pq.ParquetFile(self.path)
        return pa.RecordBatchReader.from_batches(pf.schema_arrow, pf.iter_batches(batch_size=8192))

    def discard(self) -> None:
        if os.path.exists(self.path):
            os.unlink(self.path)


class _Known:
    """The current view's keys, `_etag`s and partition values, hashed once (pandas Index) so each page is
    one lookup."""

    def __init__(self, keys: pa.Array, tags: pa.Array, states: pa.Array | None = None):
        self.index = pd.Index(keys.to_numpy(zero_copy_only=False))
        self.tags = tags.to_numpy(zero_copy_only=False)
        self.states = None if states is None else states.to_pylist()

    @classmethod
    def of(cls, view: pa.Table, key: str, ids: Sequence[Any] | None = None) -> _Known:
        """The keys of `view` (the current view's key, `_etag` and partition columns), or with `ids` only
        the rows of those ids."""
        current = view
        if ids is not None and key in current.column_names:  # reading 3 columns and filtering beats a pushdown
            wanted = pa.array([i for i in ids if i is not None], pa.string())
            current = current.filter(pc.is_in(current.column(key).cast(pa.string()), value_set=wanted))
        if current.num_rows == 0 or key not in current.column_names:
            return cls(pa.array([], pa.string()), pa.array([], pa.string()))
        names = current.column_names
        tags = current.column(ETAG_COLUMN) if ETAG_COLUMN in names else pa.nulls(len(current))
        states = current.column(PARTITION_COLUMN).combine_chunks() if PARTITION_COLUMN in names else None
        return cls(current.column(key).combine_chunks(), pa.chunked_array(tags).combine_chunks(), states)

    def __len__(self) -> int:
        return len(self.index)

    def positions(self, ids: Sequence[Any]) -> np.ndarray:
        """Per id: its row in the view, or -1."""
        if not len(self.index):
            return np.full(len(ids), -1, dtype=np.int64)
        return np.asarray(self.index.get_indexer(list(ids)))

    def lookup(self, ids: Sequence[Any]) -> tuple[np.ndarray, list[Any]]:
        """Per id: its row in the view (-1 when the view does not hold it) and its `_etag` there (or None)."""
        pos = self.positions(ids)
        return pos, [self.tags[p] if p >= 0 else None for p in pos]

    def states_at(self, positions: Sequence[int] | np.ndarray) -> set[Any]:
        """The partition values of the rows at these positions (empty when the view has no such column)."""
        if self.states is None:
            return set()
        return {self.states[p] for p in positions if p >= 0}

    def absent(self, seen: set[str]) -> list[str]:
        if not len(self.index):
            return []
        return [k for k in self.index[~self.index.isin(list(seen))].tolist() if k is not None]


class _Lookup:
    """The current view's rows for the ids a read brings. The view's key, `_etag` and partition columns are
    read once, when the lookup is made (while the first page is on its way); the first pages of a delta
    (usually all of it) are looked up in it by a filter, beyond that and for full reads it is hashed once."""

    FILTERED_PAGES = 2

    def __init__(self, lake: Lake, table: str, key: str, *, whole: bool):
        self.key = key
        self.view = lake.read_current(table, [key, ETAG_COLUMN, PARTITION_COLUMN])
        self.whole = _Known.of(self.view, key) if whole else None
        self.filtered = 0

    def known(self, ids: Sequence[Any]) -> _Known:
        if self.whole is None and self.filtered >= self.FILTERED_PAGES:
            self.whole = _Known.of(self.view, self.key)
        if self.whole is not None:
            return self.whole
        self.filtered += 1
        return _Known.of(self.view, self.key, ids)


class _Stage:
    """History rows streamed into a local Parquet file, a row group per page."""

    def __init__(self, schema: pa.Schema, sync_id: str, synced_at: dt.datetime, temp_dir: str | None):
        self.schema = history_schema(schema)
        self.sync_id, self.synced_at = sync_id, synced_at
        fd, self.path = tempfile.mkstemp(prefix="sync-stage-", suffix=".parquet", dir=temp_dir)
        os.close(fd)
        self.writer = pq.ParquetWriter(self.path, self.schema, compression="zstd")
        self.rows = 0

    def write(self, table: pa.Table, deleted: bool) -> None:
        n = table.num_rows
        if not n:
            return
        table = table.append_column(pa.field(SYNCED_AT, TIMESTAMP), pa.array([self.synced_at] * n, TIMESTAMP))
        table = table.append_column(pa.field(DELETED, pa.bool_()), pa.array([deleted] * n, pa.bool_()))
        table = table.append_column(pa.field(SYNC_ID, pa.string()), pa.array([self.sync_id] * n, pa.string()))
        self.writer.write_table(conform(table, self.schema))
        self.rows += n

    def close(self) -> None:
        self.writer.close()

    def abort(self) -> None:
        self.writer.close()
        os.unlink(self.path)


def _empty_stats() -> dict[str, int]:
    return {"fetched": 0, "new": 0, "changed": 0, "unchanged": 0, "deleted": 0, "pages": 0}


def extract_table(
    lake: Lake,
    client: DataverseClient,
    spec: TableSpec,
    meta: TableMeta,
    *,
    sync_id: str,
    synced_at: dt.datetime,
    full: bool,
    page_size: int,
    temp_dir: str | None = None,
) -> Extract:
    """Stage the table's changes since its last sync (or all of it, compared with the current view)."""
    link = lake.synced(spec.logical).get("delta_link")
    incremental = bool(not full and spec.track_changes and link)
    pages = _first_ahead(
        client.iter_delta(str(link), page_size=page_size) if incremental else _full_pages(client, spec, meta, page_size)
    )
    lookup = _Lookup(lake, spec.logical, meta.key, whole=not incremental)  # read while the first page comes
    stage = _Stage(meta.schema(), sync_id, synced_at, temp_dir)
    stats = _empty_stats()
    states: set[Any] = set()
    try:
        try:
            new_link = _consume(pages, incremental, lookup, meta, stage, stats, states)
        except (DataverseBadRequest, DataverseNotFound) as exc:
            if not incremental:
                raise
            # an expired or unknown delta token: start this table over with a full read
            log.warning("sync %s: delta link refused (%s %s); full read instead", spec.logical, exc.status, exc.code)
            stage.abort()
            stage, stats, incremental = _Stage(meta.schema(), sync_id, synced_at, temp_dir), _empty_stats(), False
            states = set()
            lookup = _Lookup(lake, spec.logical, meta.key, whole=True)
            new_link = _consume(_full_pages(client, spec, meta, page_size), False, lookup, meta, stage, stats, states)
        stage.close()
    except BaseException:
        stage.abort()
        raise
    return Extract(
        spec,
        meta,
        sync_id,
        synced_at,
        "incremental" if incremental else "full",
        new_link if spec.track_changes else None,
        stage.path,
        stage.rows,
        stats,
        states,
    )


def _first_ahead(pages: Iterator[Page]) -> Iterator[Page]:
    """`pages`, with the first one requested at once in a thread of its own (the rest as they are read)."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sync-page")
    first = pool.submit(telemetry.in_this_context(next), pages, None)
    pool.shutdown(wait=False)  # the thread ends with its one task

    def chained() -> Iterator[Page]:
        page = first.result()  # its error, if any, is raised here, where the pages are read
        if page is not None:
            yield page
            yield from pages

    return chained()


def _full_pages(client: DataverseClient, spec: TableSpec, meta: TableMeta, page_size: int) -> Iterator[Page]:
    select = [n for n in meta.schema().names if n != ETAG_COLUMN]
    kwargs: dict[str, Any] = {"filter": spec.filter, "track_changes": spec.track_changes, "page_size": page_size}
    first = True
    try:
        for page in client.iter_pages(meta.entity_set, select=select, **kwargs):
            first = False
            yield page
    except DataverseBadRequest as exc:
        if not first:
            raise
        # A column the metadata lists but the server will not select: read every column instead.
        log.warning("sync %s: $select refused (%s); reading all columns", spec.logical, exc.code)
        yield from client.iter_pages(meta.entity_set, **kwargs)


def _consume(
    pages: Iterator[Page],
    incremental: bool,
    lookup: _Lookup,
    meta: TableMeta,
    stage: _Stage,
    stats: dict[str, int],
    states: set[Any],
) -> str | None:
    """Stage every page's new and changed rows, then the deletions; returns the last page's delta link.
    `states` gets the partition values of the current rows they replace."""
    schema = meta.schema()
    link: str | None = None
    seen: set[str] = set()
    deleted: set[str] = set()  # ids the delta deletes that the view holds or this read brought
    for page in pages:
        stats["pages"] += 1
        link = page.delta_link or link
        table = rows_to_table(page.rows, schema) if page.rows else None
        ids = table.column(meta.key).to_pylist() if table is not None else []
        if not ids and not page.deleted_ids:
            continue
        known = lookup.known(ids + list(page.deleted_ids))  # one lookup a page, deleted ids included
        if table is not None:
            _stage_page(table, meta.key, known, seen, stage, stats, states)
        positions = known.positions(list(page.deleted_ids))
        states |= known.states_at(positions)  # the partitions of the held rows it deletes
        deleted |= {rid for rid, pos in zip(page.deleted_ids, positions, strict=True) if pos >= 0 or rid in seen}
    if incremental:
        gone = sorted(deleted)
    else:
        known = lookup.known([])
        gone = known.absent(seen)
        states |= known.states_at(known.positions(gone))
    if gone:
        stage.write(conform(pa.table({meta.key: pa.array(gone, pa.string())}), schema), deleted=True)
    stats["deleted"] = len(gone)
    return link


def _stage_page(
    table: pa.Table,
    key: str,
    known: _Known,
    seen: set[str],
    stage: _Stage,
    stats: dict[str, int],
    states: set[Any],
) -> None:
    ids = table.column(key).to_pylist()
    tags = table.column(ETAG_COLUMN).to_pylist()
    pos, old_tags = known.lookup(ids)
    held = pos >= 0
    take: list[int] = []
    for i, (rid, tag) in enumerate(zip(ids, tags, strict=True)):
        if rid is None or rid in seen:  # a row given twice in one read: its first version counts
            continue
        seen.add(rid)
        if not held[i]:
            stats["new"] += 1
        elif tag is None or old_tags[i] != tag:
            stats["changed"] += 1
        else:
            stats["unchanged"] += 1
            continue
        take.append(i)
    stats["fetched"] += len(ids)
    states |= known.states_at([int(pos[i]) for i in take])
    if take:
        stage.write(table.take(pa.array(take, pa.int64())) if len(take) < table.num_rows else table, deleted=False)
