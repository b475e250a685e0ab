"""Dataverse -> lake sync: metadata, full and incremental (change-tracked) table syncs, reports, the sync
lease and retention.

One run, under the lease `locks/sync.lock`:
1. metadata: entity set names, attributes (-> Arrow schema) and option-set labels of every table;
2. per table, stage new Parquet parts: rows that are new or changed (by `@odata.etag`) go to a history
   partition with `_synced_at`/`_deleted`, and a new compacted current view is built;
3. swap every table's manifest (ETag-conditioned; the delta link is stored in the manifest, so data and
   link move together), write `metadata/processes.json`, the report and `state/sync.json`.
A run killed at any point leaves the previous manifests untouched (or some tables already at the new
version, each consistent with its own delta link); the next run removes unlisted parts and resumes from
the delta links the manifests hold, so nothing is duplicated and nothing is missed.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from azure.core.exceptions import ResourceNotFoundError

from connectors.dataverse import (
    DataverseBadRequest,
    DataverseClient,
    DataverseNotFound,
    Page,
    processes_from_rows,
)
from connectors.lake import (
    DELETED,
    ETAG_COLUMN,
    SYNCED_AT,
    TIMESTAMP,
    Lake,
    LeaseBusy,
    conform,
    delete_all_except,
    history_schema,
    rows_to_table,
    schema_from_attributes,
    schema_to_json,
)
from connectors.odata import filter_eq

log = logging.getLogger(__name__)

RETENTION_DAYS = 30
LEASE_NAME = "sync"
# The current view's physical layout (docs/LAKE.md): files of at most FILE_ROWS rows in two segments,
# `active` (statecode 0 or none) and `inactive`, so an incremental sync rewrites only the files that hold
# changed rows - in practice the active segment - and keeps the rest byte for byte.
STATE_COLUMN = "statecode"
ACTIVE, INACTIVE, MIXED = "active", "inactive", "mixed"
FILE_ROWS = 50_000
MAX_SMALL_FILES = 4  # per segment; files under FILE_ROWS / 4 rows are merged past this many
INDEX_PREFIX = "index/"  # index/<table>/<version>/<segment>/part-NNNNN.parquet: key + _etag per file
STAGED_ROWS = 200_000  # new row versions kept in memory for the current view (more: read back)
# Prefixes kept by the retention purge: job records and the purge marker itself are not org data.
_PURGE_KEEP = ("jobs/", "locks/", "retention/")
# The model container keeps its audit log (who did what, including the purge); the rest is derived data.
_MODEL_PURGE_KEEP = ("audit/",)


@dataclass(frozen=True)
class TableSpec:
    """A table to sync: logical name, whether to use change tracking, an optional server-side filter."""

    logical: str
    track_changes: bool = True
    filter: str | None = None


# Largest first: tables run `workers` at a time in this order.
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


class SyncRefused(Exception):
    """The org is expired or deleted: no sync runs (status 409)."""

    status = 409
    code = "OrgNotActive"


@dataclass
class TableResult:
    table: str
    mode: str
    manifest: dict[str, Any]
    etag: str | None
    stats: dict[str, Any] = field(default_factory=dict)
    obsolete: list[str] = field(default_factory=list)  # parts of the version before the previous one


# ---------------------------------------------------------------------------------------------- helpers
def _stamp(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _history_rows(table: pa.Table, synced_at: dt.datetime, deleted: bool) -> pa.Table:
    n = table.num_rows
    table = table.append_column(pa.field(SYNCED_AT, TIMESTAMP), pa.array([synced_at] * n, type=TIMESTAMP))
    return table.append_column(pa.field(DELETED, pa.bool_()), pa.array([deleted] * n, type=pa.bool_()))


def _deletion_rows(ids: Sequence[str], key: str, schema: pa.Schema, synced_at: dt.datetime) -> pa.Table:
    base = conform(pa.table({key: pa.array(list(ids), type=pa.string())}), schema)
    return _history_rows(base, synced_at, True)


def _not_in(table: pa.Table, key: str, ids: set[str]) -> pa.Table:
    if not ids or table.num_rows == 0:
        return table
    mask = pc.invert(pc.is_in(table.column(key), value_set=pa.array(list(ids), type=pa.string())))
    return table.filter(mask)


class _Old:
    """The committed current view of a table: its files and, row by row, the key, `_etag` and the file that
    holds it (Arrow arrays, so lookups are vectorised). The files are downloaded (in parallel) only when
    first needed: an incremental sync whose delta is empty never downloads anything."""

    def __init__(self, lake: Lake, manifest: dict[str, Any] | None, key: str):
        self.lake, self.key = lake, key
        m = manifest or {}
        listed = m.get("files")
        if isinstance(listed, list) and listed:
            self._files = [dict(f) for f in listed]
        else:  # a manifest written before the segmented layout (or by other code): one mixed file per part
            self._files = [{"path": p, "rows": None, "segment": MIXED} for p in m.get("current", [])]
        # files of the earlier one-folder layout: the first incremental rewrites them all into segments
        self.legacy = any(f.get("segment") not in (ACTIVE, INACTIVE) for f in self._files)
        self._loaded = False
        self._lock = threading.Lock()
        self._prefetch: Any = None
        self._pfs: dict[str, Any] = {}
        self._keys = pa.array([], pa.string())
        self._tags = pa.array([], pa.string())
        self._file_of = pa.array([], pa.int32())

    def prefetch_keys(self, executor: Any) -> None:
        """Start loading the key indexes in the background (e.g. while Dataverse computes the delta)."""
        if executor is not None and self._files and self._prefetch is None:
            self._prefetch = executor.submit(self._load)

    def _load(self) -> None:
        with self._lock:
            if not self._loaded:
                self._load_locked()

    def _load_locked(self) -> None:
        try:
            indexes = self.lake.parquet_files([f.get("keys") or f["path"] for f in self._files])
        except ResourceNotFoundError:  # a key index is gone: read the keys from the data files instead
            log.warning("sync: a key index of %s is missing; reading the files it indexes", self.key)
            for f in self._files:
                if f.get("keys") and not self.lake.exists(f["keys"]):
                    f.pop("keys")
            indexes = self.lake.parquet_files([f.get("keys") or f["path"] for f in self._files])
        self._pfs = {f["path"]: indexes[f["path"]] for f in self._files if not f.get("keys")}
        keys, tags, where = [], [], []
        for i, f in enumerate(self._files):
            pf = indexes[f.get("keys") or f["path"]]
            f["rows"] = pf.metadata.num_rows
            names = pf.schema_arrow.names
            t = pf.read(columns=[c for c in (self.key, ETAG_COLUMN) if c in names])
            n = t.num_rows
            keys.append(
                t.column(self.key).combine_chunks().cast(pa.string())
                if self.key in names
                else pa.nulls(n, pa.string())
            )
            tags.append(
                t.column(ETAG_COLUMN).combine_chunks() if ETAG_COLUMN in names else pa.nulls(n, pa.string())
            )
            where.append(pa.array(np.full(n, i, dtype=np.int32)))
        if keys:
            self._keys = pa.concat_arrays(keys)
            self._tags = pa.concat_arrays(tags)
            self._file_of = pa.concat_arrays(where)
        self._loaded = True

    @property
    def files(self) -> list[dict[str, Any]]:
        if any(f.get("rows") is None for f in self._files):
            self._load()
        return self._files

    @property
    def keys(self) -> pa.Array:
        self._load()
        return self._keys

    @property
    def tags(self) -> pa.Array:
        self._load()
        return self._tags

    def prefetch(self, indexes: Sequence[int]) -> None:
        """Download these files (in parallel) for `read`."""
        self._load()
        missing = [self._files[i]["path"] for i in indexes if self._files[i]["path"] not in self._pfs]
        self._pfs.update(self.lake.parquet_files(missing))

    def read(self, index: int) -> pa.Table:
        self.prefetch([index])
        return self._pfs[self._files[index]["path"]].read()

    def key_paths(self) -> list[str]:
        return [f["keys"] for f in self._files if f.get("keys")]

    def __len__(self) -> int:
        return len(self.keys)

    def positions(self, ids: pa.Array) -> pa.Array:
        """Row position of each id in the old view (null for ids it does not hold; for an id given twice,
        only its first occurrence). Hashes the few ids and probes the view, rather than hashing the view."""
        n = len(ids)
        if not n or not len(self.keys):
            return pa.nulls(n, pa.int64())
        where = pc.index_in(self.keys, value_set=ids)  # per old row: its index in `ids`, or null
        valid = where.is_valid()
        out = np.full(n, -1, dtype=np.int64)
        out[where.filter(valid).to_numpy()] = pc.indices_nonzero(valid).to_numpy()
        return pa.array(out, mask=out < 0)

    def holds(self, ids: Sequence[str]) -> list[bool]:
        if not ids:
            return []
        return [bool(v) for v in self.positions(pa.array(list(ids), pa.string())).is_valid().to_pylist()]

    def absent_from(self, seen: set[str]) -> list[str]:
        """Old ids not in `seen` (a full read: rows that disappeared)."""
        if not len(self.keys):
            return []
        mask = pc.invert(pc.is_in(self.keys, value_set=pa.array(list(seen), pa.string())))
        return [k for k in self.keys.filter(mask).to_pylist() if k is not None]

    def files_holding(self, ids: set[str]) -> set[int]:
        if not ids or not len(self.keys):
            return set()
        hit = pc.is_in(self.keys, value_set=pa.array(list(ids), pa.string()))
        return {int(i) for i in pc.unique(self._file_of.filter(hit)).to_pylist()}


def _segments(table: pa.Table) -> dict[str, pa.Table]:
    """Rows by segment: `inactive` where `statecode` is set and not 0 (closed opportunities, finished BPF
    instances, deactivated rows: they rarely change again), `active` otherwise and for tables without it."""
    if STATE_COLUMN not in table.column_names or table.num_rows == 0:
        return {ACTIVE: table}
    inactive = pc.fill_null(pc.not_equal(table.column(STATE_COLUMN), 0), False)
    return {ACTIVE: table.filter(pc.invert(inactive)), INACTIVE: table.filter(inactive)}


class _CurrentWriter:
    """Writes current-view rows into `<prefix><segment>/part-NNNNN.parquet` (one PartWriter per segment)
    and, part for part, their keys and `_etag`s into `<keys_prefix><segment>/part-NNNNN.parquet`: the
    small key index an incremental sync reads instead of downloading every file of the view."""

    def __init__(
        self, lake: Lake, prefix: str, keys_prefix: str, schema: pa.Schema, max_rows: int, executor: Any
    ):
        self.lake, self.schema = lake, schema
        self.prefix, self.keys_prefix = prefix.rstrip("/") + "/", keys_prefix.rstrip("/") + "/"
        self.key_schema = pa.schema([schema.field(0), schema.field(ETAG_COLUMN)])
        self.max_rows, self.executor = max_rows, executor
        self.writers: dict[str, tuple[Any, Any]] = {}

    def write(self, table: pa.Table) -> None:
        for segment, part in _segments(table).items():
            if part.num_rows:
                if segment not in self.writers:
                    self.writers[segment] = tuple(  # type: ignore[assignment]
                        self.lake.part_writer(
                            f"{prefix}{segment}/", schema, max_rows=self.max_rows, executor=self.executor
                        )
                        for prefix, schema in (
                            (self.prefix, self.schema),
                            (self.keys_prefix, self.key_schema),
                        )
                    )
                data, keys = self.writers[segment]
                data.write(part)  # both roll over at the same rows, so parts pair up one to one
                keys.write(part.select(self.key_schema.names))

    def close(self) -> list[dict[str, Any]]:
        for pair in self.writers.values():  # start every upload before waiting for any
            for w in pair:
                w.flush()
        files: list[dict[str, Any]] = []
        for segment in (ACTIVE, INACTIVE):
            if segment in self.writers:
                data, keys = self.writers[segment]
                data.close()
                keys.close()
                files += [
                    {"path": p, "keys": k, "rows": n, "segment": segment}
                    for p, k, n in zip(data.parts, keys.parts, data.part_rows, strict=True)
                ]
        return files

    def abort(self) -> list[str]:
        """Stop writing; return the parts already uploaded (the caller may delete them)."""
        uploaded: list[str] = []
        for pair in self.writers.values():
            for w in pair:
                w.abort()
                uploaded += w.parts
        return uploaded


# ---------------------------------------------------------------------------------------------- one table
class TableSync:
    """Stages one table's new version (parts uploaded, manifest not yet swapped)."""

    def __init__(
        self,
        lake: Lake,
        client: DataverseClient,
        spec: TableSpec,
        *,
        entity_set: str,
        key: str,
        attributes: list[dict[str, Any]],
        synced_at: dt.datetime,
        run_id: str,
        full: bool,
        page_size: int,
        max_rows_per_part: int,
        file_rows: int = FILE_ROWS,
        executor: Any = None,
    ):
        self.lake, self.client, self.spec = lake, client, spec
        self.entity_set, self.key = entity_set, key
        self.schema = schema_from_attributes(attributes, key=key)
        if key not in self.schema.names:
            self.schema = pa.schema([pa.field(key, pa.string()), *self.schema])
        self.select = [n for n in self.schema.names if n != ETAG_COLUMN]
        self.synced_at, self.run_id = synced_at, run_id
        self.full, self.page_size, self.max_rows = full, page_size, max_rows_per_part
        self.file_rows = max(1, min(file_rows, max_rows_per_part))
        self.executor = executor
        self.staged: set[str] = set()  # ids whose new version went to history in this run
        self._staged_rows: list[pa.Table] | None = []  # those versions, while they are few (else read back)
        self._staged_count = 0
        self.gc_first = True
        self.stats: dict[str, Any] = {
            "fetched": 0,
            "new": 0,
            "changed": 0,
            "unchanged": 0,
            "deleted": 0,
            "pages": 0,
        }

    def _pages(self, manifest: dict[str, Any] | None) -> tuple[str, Iterator[Page]]:
        link = (manifest or {}).get("delta_link")
        if not self.full and self.spec.track_changes and link:
            return "incremental", self.client.iter_delta(link, page_size=self.page_size)
        return "full", self._full_pages()

    def _full_pages(self) -> Iterator[Page]:
        kwargs: dict[str, Any] = {
            "filter": self.spec.filter,
            "track_changes": self.spec.track_changes,
            "page_size": self.page_size,
        }
        try:
            first = True
            for page in self.client.iter_pages(self.entity_set, select=self.select, **kwargs):
                first = False
                yield page
        except DataverseBadRequest as exc:
            if not first:
                raise
            # A column the metadata lists but the server will not select: read every column instead.
            log.warning("sync %s: $select refused (%s); reading all columns", self.spec.logical, exc.code)
            yield from self.client.iter_pages(self.entity_set, **kwargs)

    def _reset(self) -> None:
        self.stats.update(fetched=0, new=0, changed=0, unchanged=0, deleted=0, pages=0)
        self.staged = set()
        self._staged_rows, self._staged_count = [], 0

    def run(self) -> TableResult:
        t0 = time.perf_counter()
        table = self.spec.logical
        manifest, etag = self.lake.manifest_with_etag(table)
        if self.gc_first:  # the previous run did not finish: remove the parts it left unlisted
            self.lake.collect_garbage(table)
            listed = {f.get("keys") for f in (manifest or {}).get("files", [])}
            self.lake.delete_paths([p for p in self.lake.list(f"{INDEX_PREFIX}{table}/") if p not in listed])
        old = _Old(self.lake, manifest, self.key)
        version = int((manifest or {}).get("version", 0)) + 1
        hist_schema = history_schema(self.schema)
        hist = self.lake.part_writer(
            f"tables/{table}/history/{_stamp(self.synced_at)}-{self.run_id[:8]}/",
            hist_schema,
            max_rows=self.max_rows,
            executor=self.executor,
        )
        cur_prefix = f"tables/{table}/current/{version:06d}/"
        keys_prefix = f"{INDEX_PREFIX}{table}/{version:06d}/"
        cur = _CurrentWriter(self.lake, cur_prefix, keys_prefix, self.schema, self.file_rows, self.executor)
        if self.full or not self.spec.track_changes or not (manifest or {}).get("delta_link"):
            old.keys  # noqa: B018 - a full read compares every row: download the old view first
        else:  # the key indexes are small: load them while Dataverse computes the delta
            old.prefetch_keys(self.executor)
        t_old = time.perf_counter()
        mode, pages = self._pages(manifest)
        schema_changed = bool(manifest) and (manifest or {}).get("schema") != schema_to_json(self.schema)
        try:
            try:
                delta_link, seen, deleted = self._consume(pages, mode, old, hist, cur)
            except (DataverseBadRequest, DataverseNotFound) as exc:
                if mode != "incremental":
                    raise
                # an expired or unknown delta token: start this table over with a full read
                log.warning(
                    "sync %s: delta link refused (%s %s); full read instead", table, exc.status, exc.code
                )
                hist.abort()
                cur.abort()
                hist = self.lake.part_writer(
                    hist.prefix + "full/", hist_schema, max_rows=self.max_rows, executor=self.executor
                )
                cur = _CurrentWriter(
                    self.lake, cur_prefix, keys_prefix, self.schema, self.file_rows, self.executor
                )
                self._reset()
                mode = "full"
                delta_link, seen, deleted = self._consume(self._full_pages(), mode, old, hist, cur)
            t_read = time.perf_counter()
            if mode == "full":
                gone = old.absent_from(seen)
                if gone:
                    hist.write(_deletion_rows(gone, self.key, self.schema, self.synced_at))
                self.stats["deleted"] = len(gone)
                changes = self.stats["new"] + self.stats["changed"] + len(gone)
                if changes == 0 and not self.full and manifest and not schema_changed and old.files:
                    # nothing changed (a small table read in full each run): keep the files as they are
                    self.lake.delete_paths(cur.abort())
                    files = old.files
                else:
                    files = cur.close()
            else:
                files = self._rewrite(old, deleted, hist, cur, rewrite_all=schema_changed or old.legacy)
            hist_parts = hist.close()
        except BaseException:
            hist.abort()
            cur.abort()
            raise
        t_write = time.perf_counter()
        current = [f["path"] for f in files]
        old_current = list((manifest or {}).get("current", []))
        if current == old_current:
            previous = list((manifest or {}).get("previous_current", []))
        else:  # files replaced by this version stay one more run for readers in flight
            previous = [p for p in old_current if p not in set(current)]
        rows = sum(int(f["rows"]) for f in files)
        new_manifest = {
            "version": version,
            "table": table,
            "entity_set": self.entity_set,
            "key": self.key,
            "current": current,
            "files": files,
            "layout": {
                "segments": f"{STATE_COLUMN} == 0 -> {ACTIVE}, else {INACTIVE}",
                "file_rows": self.file_rows,
            },
            "previous_current": previous,
            "history": list((manifest or {}).get("history", [])) + hist_parts,
            "schema": schema_to_json(self.schema),
            "rows": rows,
            "history_rows": int((manifest or {}).get("history_rows", 0)) + hist.rows,
            "delta_link": delta_link if self.spec.track_changes else None,
            "synced_at": _iso(self.synced_at),
            "updated_at": _iso(dt.datetime.now(dt.UTC)),
            "run_id": self.run_id,
            "mode": mode,
        }
        kept = len(set(current) & set(old_current))
        self.stats.update(
            mode=mode,
            rows=rows,
            version=version,
            files=len(files),
            files_kept=kept,
            files_written=len(files) - kept,
            read_old_s=round(t_old - t0, 3),
            fetch_s=round(t_read - t_old, 3),
            write_s=round(t_write - t_read, 3),
            duration_s=round(time.perf_counter() - t0, 3),
        )
        log.info(
            "sync %s: %s, %d pages, %d fetched, %d new, %d changed, %d deleted, %d rows, "
            "%d files (%d kept), %.2f s",
            table,
            mode,
            self.stats["pages"],
            self.stats["fetched"],
            self.stats["new"],
            self.stats["changed"],
            self.stats["deleted"],
            rows,
            len(files),
            kept,
            self.stats["duration_s"],
        )
        obsolete = [p for p in (manifest or {}).get("previous_current", []) if p not in set(previous)]
        # key indexes are read by the sync only (under the lease): replaced ones go right after the commit
        new_keys = {f.get("keys") for f in files}
        obsolete += [p for p in old.key_paths() if p not in new_keys]
        return TableResult(table, mode, new_manifest, etag, self.stats, obsolete)

    def _consume(
        self, pages: Iterator[Page], mode: str, old: _Old, hist: Any, cur: _CurrentWriter
    ) -> tuple[str | None, set[str], set[str]]:
        """Write each page: new and changed rows to history (and, incremental, keep them for the current
        view); in full mode every row to the new current view."""
        delta_link: str | None = None
        seen: set[str] = set()
        deleted: set[str] = set()
        for page in pages:
            self.stats["pages"] += 1
            delta_link = page.delta_link or delta_link
            if page.rows:
                t = rows_to_table(page.rows, self.schema)
                id_col = t.column(self.key).combine_chunks()
                pos = old.positions(id_col)
                known = pos.is_valid().to_pylist()
                old_tags = old.tags.take(pos).to_pylist() if len(old) else [None] * t.num_rows
                ids = id_col.to_pylist()
                tags = t.column(ETAG_COLUMN).to_pylist()
                keep, changed_mask = [], []
                for i, (rid, tag) in enumerate(zip(ids, tags, strict=True)):
                    if rid is None or rid in seen:
                        continue
                    seen.add(rid)
                    keep.append(i)
                    if not known[i]:
                        self.stats["new"] += 1
                        changed_mask.append(i)
                        self.staged.add(rid)
                    elif tag is None or old_tags[i] != tag:
                        self.stats["changed"] += 1
                        changed_mask.append(i)
                        self.staged.add(rid)
                    else:
                        self.stats["unchanged"] += 1
                self.stats["fetched"] += len(ids)
                if changed_mask:
                    changed = t.take(changed_mask)
                    hist.write(_history_rows(changed, self.synced_at, False))
                    if mode == "incremental":
                        self._stage(changed)
                if mode == "full" and keep:
                    cur.write(t.take(keep) if len(keep) < t.num_rows else t)
            for rid in page.deleted_ids:
                deleted.add(rid)
        if mode == "incremental":
            candidates = sorted(deleted)
            held = old.holds(candidates)
            gone = [i for i, h in zip(candidates, held, strict=True) if h or i in seen]
            if gone:
                hist.write(_deletion_rows(gone, self.key, self.schema, self.synced_at))
            self.stats["deleted"] = len(gone)
            deleted = set(gone) | {i for i in deleted if i in seen}
        return delta_link, seen, deleted

    def _stage(self, rows: pa.Table) -> None:
        """Keep this run's new row versions in memory while they are few; past STAGED_ROWS they are read
        back from the history parts instead (memory stays bounded on a mass update)."""
        if self._staged_rows is None:
            return
        self._staged_count += rows.num_rows
        if self._staged_count > STAGED_ROWS:
            self._staged_rows = None
        else:
            self._staged_rows.append(rows)

    def _staged_batches(self, hist: Any) -> Iterator[pa.Table]:
        if self._staged_rows is not None:
            yield from self._staged_rows
            return
        hist.flush(wait=True)  # upload what is buffered so it can be read back
        for path in list(hist.parts):
            t = self.lake.read_parquet(path)
            t = t.filter(pc.invert(t.column(DELETED)))
            yield t.drop_columns([SYNCED_AT, DELETED])

    def _rewrite(
        self, old: _Old, deleted: set[str], hist: Any, cur: _CurrentWriter, *, rewrite_all: bool
    ) -> list[dict[str, Any]]:
        """Incremental: the new current view. Files holding none of the changed or deleted ids are kept as
        they are; files holding some are rewritten without them, together with this run's new versions
        (per segment), and small files of a segment are merged once there are more than MAX_SMALL_FILES."""
        replaced = self.staged | deleted
        if not replaced and not rewrite_all:
            return old.files  # nothing changed: no Parquet written at all
        rewrite = set(range(len(old.files))) if rewrite_all else old.files_holding(replaced)
        arriving = bool(self.staged - deleted)  # new versions go to one or both segments
        small = max(1, self.file_rows // 4)
        for segment in (ACTIVE, INACTIVE):
            smalls = [
                i
                for i, f in enumerate(old.files)
                if f["segment"] == segment and i not in rewrite and int(f["rows"]) < small
            ]
            opened = any(old.files[i]["segment"] == segment for i in rewrite)
            extra = 1 if arriving and not opened else 0
            if len(smalls) + extra > MAX_SMALL_FILES:
                rewrite |= set(smalls)
        old.prefetch(sorted(rewrite))
        for i in sorted(rewrite):
            t = old.read(i)
            cur.write(_not_in(conform(t, self.schema), self.key, replaced))
        for t in self._staged_batches(hist):
            cur.write(_not_in(t, self.key, deleted))
        written = cur.close()
        kept = [f for i, f in enumerate(old.files) if i not in rewrite]
        return kept + written


# ---------------------------------------------------------------------------------------------- one run
def _metadata(
    client: DataverseClient,
    lake: Lake,
    specs: Sequence[TableSpec],
    *,
    refresh: bool,
    max_age: float,
    workers: int,
) -> dict[str, dict[str, Any]]:
    """Entity set, key and attributes of each table. Fetched from Dataverse (and written to metadata/) on
    full syncs or when older than `max_age` seconds; otherwise read back from the lake."""
    cached = lake.read_json("metadata/tables.json") if not refresh else None
    if isinstance(cached, dict) and time.time() - float(cached.get("fetched_at_epoch", 0)) < max_age:
        out: dict[str, dict[str, Any]] = {}
        for spec in specs:
            entry = cached.get("tables", {}).get(spec.logical)
            attributes = (entry or {}).get("attributes")  # one read: tables.json carries the attributes
            if entry is not None and not isinstance(attributes, list):
                attributes = lake.read_json(f"metadata/attributes/{spec.logical}.json")
            if entry is None or not isinstance(attributes, list):
                break
            out[spec.logical] = {**entry, "attributes": attributes}
        else:
            return out

    def one(spec: TableSpec) -> tuple[str, dict[str, Any] | None, dict[str, Any]]:
        try:
            definition = client.entity_definition(spec.logical)
        except DataverseNotFound:
            log.warning("sync: table %s does not exist in this org; skipped", spec.logical)
            return spec.logical, None, {}
        attributes = client.attributes(spec.logical)
        lake.write_json(f"metadata/attributes/{spec.logical}.json", attributes)
        entry = {
            "entity_set": definition.get("EntitySetName") or spec.logical + "s",
            "key": definition.get("PrimaryIdAttribute") or spec.logical + "id",
            "attributes": attributes,
        }
        return spec.logical, entry, client.option_sets(spec.logical)

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="sync-meta") as pool:
        fetched = list(pool.map(one, specs))
    out = {name: entry for name, entry, _ in fetched if entry is not None}
    lake.write_json("metadata/optionsets.json", {name: labels for name, entry, labels in fetched if entry})
    lake.write_json(
        "metadata/tables.json",
        {
            "fetched_at_epoch": time.time(),
            "tables": {
                k: {"entity_set": v["entity_set"], "key": v["key"], "attributes": v["attributes"]}
                for k, v in out.items()
            },
        },
    )
    return out


def run_sync(
    lake: Lake,
    client: DataverseClient,
    *,
    full: bool = False,
    job_id: str | None = None,
    now: Callable[[], dt.datetime] | None = None,
    tables: Sequence[TableSpec] = TABLES,
    page_size: int = 5000,
    lease_wait: float = 0.0,
    lease_duration: int = 60,
    workers: int = 3,
    max_rows_per_part: int = 1_000_000,
    metadata_max_age: float = 6 * 3600,
    file_rows: int = FILE_ROWS,
) -> dict[str, Any]:
    """Run one sync and return its report. If another sync holds the lease beyond `lease_wait` seconds,
    return a report with `"skipped": true` and do nothing. Metadata is re-read from Dataverse on full syncs
    and when the copy in the lake is older than `metadata_max_age` seconds."""
    run_id = uuid.uuid4().hex
    started = time.perf_counter()
    started_at = dt.datetime.now(dt.UTC)
    try:
        with lake.lease(LEASE_NAME, duration=lease_duration, wait=lease_wait) as lease:
            log.info("sync %s started (job %s, full=%s, lease %s)", run_id, job_id, full, lease.id)
            dirty = lease.metadata().get("state") != "clean"
            lease.set_metadata({"state": "running", "run": run_id})
            report = _run_locked(
                lake,
                client,
                run_id=run_id,
                job_id=job_id,
                full=full,
                now=now,
                tables=tables,
                page_size=page_size,
                workers=workers,
                max_rows=max_rows_per_part,
                file_rows=file_rows,
                metadata_max_age=metadata_max_age,
                lease_lost=lambda: lease.lost,
                gc_first=dirty,
            )
            report["started_at"] = _iso(started_at)
            report["duration_s"] = round(time.perf_counter() - started, 3)
            _write_report(lake, report)
            lease.set_metadata({"state": "clean", "run": run_id})
    except LeaseBusy:
        log.warning(
            "sync %s skipped: another sync is running (lease locks/%s.lock is held)", run_id, LEASE_NAME
        )
        return {
            "run_id": run_id,
            "job_id": job_id,
            "skipped": True,
            "reason": "another sync is running (the sync lease is held)",
            "started_at": _iso(started_at),
        }
    log.info(
        "sync %s done in %.1f s: %s",
        run_id,
        report["duration_s"],
        {t: (s["new"], s["changed"], s["deleted"]) for t, s in report["tables"].items()},
    )
    return report


def _write_report(lake: Lake, report: dict[str, Any]) -> None:
    """reports/sync/<ts>.json and state/sync.json (delta links mirrored from the manifests, last report)."""
    links = report.pop("_links")
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sync-report") as pool:
        written = pool.submit(
            lake.write_json, f"reports/sync/{report['synced_at_stamp']}-{report['run_id'][:8]}.json", report
        )
        state = lake.read_json("state/sync.json") or {}
        merged = dict(state.get("delta_links", {}))
        merged.update(links)
        lake.write_json(
            "state/sync.json",
            {"delta_links": merged, "last_report": report, "updated_at": report["finished_at"]},
        )
        written.result()


def _run_locked(
    lake: Lake,
    client: DataverseClient,
    *,
    run_id: str,
    job_id: str | None,
    full: bool,
    now: Callable[[], dt.datetime] | None,
    tables: Sequence[TableSpec],
    page_size: int,
    workers: int,
    max_rows: int,
    metadata_max_age: float,
    lease_lost: Callable[[], bool],
    file_rows: int = FILE_ROWS,
    gc_first: bool = True,
) -> dict[str, Any]:
    t_meta = time.perf_counter()
    meta = _metadata(client, lake, tables, refresh=full, max_age=metadata_max_age, workers=workers)
    metadata_s = round(time.perf_counter() - t_meta, 3)
    # The sync time is the org's clock (its Date header) so history lines up with createdon/modifiedon.
    synced_at = now() if now else client.server_now()
    synced_at = synced_at.astimezone(dt.UTC).replace(microsecond=0)
    specs = [s for s in tables if s.logical in meta]

    uploads = ThreadPoolExecutor(max_workers=4, thread_name_prefix="sync-put")

    def one(spec: TableSpec) -> TableResult:
        m = meta[spec.logical]
        job = TableSync(
            lake,
            client,
            spec,
            entity_set=m["entity_set"],
            key=m["key"],
            attributes=m["attributes"],
            synced_at=synced_at,
            run_id=run_id,
            full=full,
            page_size=page_size,
            max_rows_per_part=max_rows,
            file_rows=file_rows,
            executor=uploads,
        )
        job.gc_first = gc_first
        return job.run()

    try:
        if workers > 1:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sync") as pool:
                results = list(pool.map(one, specs))
        else:
            results = [one(s) for s in specs]
    finally:
        uploads.shutdown(wait=True)
    if lease_lost():
        raise RuntimeError("the sync lease was lost; nothing committed")

    def commit(r: TableResult) -> None:  # each swap is atomic and carries its own delta link
        r.etag = lake.commit_manifest(r.table, r.manifest, r.etag)
        # files no version from the previous one on lists: remove them
        listed = set(r.manifest["current"]) | set(r.manifest["previous_current"]) | set(r.manifest["history"])
        lake.delete_paths([p for p in r.obsolete if p not in listed])

    with ThreadPoolExecutor(max_workers=len(results) or 1, thread_name_prefix="sync-commit") as pool:
        list(pool.map(commit, results))
    by_table = {r.table: r for r in results}
    bpf_changed = any(
        by_table[t].stats["new"] + by_table[t].stats["changed"] + by_table[t].stats["deleted"] > 0
        for t in ("workflow", "processstage")
        if t in by_table
    )
    if (
        "workflow" in by_table
        and "processstage" in by_table
        and (bpf_changed or not lake.exists("metadata/processes.json"))
    ):
        workflows = lake.read_current("workflow").to_pylist()
        stages = lake.read_current("processstage").to_pylist()
        lake.write_json("metadata/processes.json", processes_from_rows(workflows, stages, "opportunity"))
    totals = {
        k: sum(int(r.stats.get(k, 0)) for r in results)
        for k in ("fetched", "new", "changed", "deleted", "pages")
    }
    finished = dt.datetime.now(dt.UTC)
    return {
        "run_id": run_id,
        "job_id": job_id,
        "skipped": False,
        "mode": "full" if all(r.mode == "full" for r in results) else "incremental",
        "requested_full": full,
        "metadata_s": metadata_s,
        "synced_at": _iso(synced_at),
        "synced_at_stamp": _stamp(synced_at),
        "finished_at": _iso(finished),
        "tables": {r.table: r.stats for r in results},
        "totals": totals,
        "requests": client.stats.get("requests"),
        "retries": client.stats.get("retries"),
        "throttled": client.stats.get("throttled"),
        "_links": {r.table: r.manifest.get("delta_link") for r in results},
    }


# ---------------------------------------------------------------------------------------------- retention
def parse_since(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    text = value.strip().replace("Z", "+00:00")
    when = (
        dt.datetime.fromisoformat(text) if "T" in text else dt.datetime.fromisoformat(text[:10] + "T00:00:00")
    )
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def retention(
    lake: Lake,
    *,
    org_status: str,
    since: str | None,
    now: dt.datetime,
    models: Any | None = None,
) -> dict[str, Any] | None:
    """None when the org is active (sync may run). Otherwise the sync is refused, and once
    RETENTION_DAYS have passed since `since` the org's data is purged, once: every lake blob (except job
    records) and, given `models` (a `model_store.store.ModelStore`), every blob of the model container
    except its audit log (`audit/`) - models trained on the org's data are derived from it - with the
    purge itself recorded in that audit log."""
    if org_status == "active":
        return None
    start = parse_since(since)
    if start is None:
        return {"refused": True, "purged": False, "reason": f"org is {org_status} (no date given)"}
    due = start + dt.timedelta(days=RETENTION_DAYS)
    result: dict[str, Any] = {
        "refused": True,
        "org_status": org_status,
        "since": _iso(start),
        "purge_due": _iso(due),
        "now": _iso(now),
        "purged": False,
    }
    if now < due:
        log.warning(
            "sync refused: org is %s since %s; lake and model data will be purged on %s",
            org_status,
            result["since"],
            result["purge_due"],
        )
        return result
    marker = lake.read_json("retention/purged.json")
    if marker and (models is None or "model_blobs" in marker):
        result.update(purged=True, already=True, purged_at=marker.get("purged_at"))
        return result
    count = int((marker or {}).get("blobs", 0))
    if not marker:
        with lake.lease(LEASE_NAME, duration=60, wait=30):
            names = [n for n in lake.list("") if not n.startswith(_PURGE_KEEP)]
            count = lake.delete_paths(names)
    doc = {
        "purged_at": (marker or {}).get("purged_at") or _iso(now),
        "org_status": org_status,
        "since": result["since"],
        "blobs": count,
    }
    if models is not None:
        model_count = delete_all_except(models.container, _MODEL_PURGE_KEEP)
        models.audit(
            "retention_purge",
            actor="retention",
            model=None,
            detail={
                "org_status": org_status,
                "since": result["since"],
                "purge_due": result["purge_due"],
                "lake_blobs": count,
                "model_blobs": model_count,
            },
        )
        doc["model_blobs"] = model_count
        result["model_blobs"] = model_count
    lake.write_json("retention/purged.json", doc)
    log.warning(
        "retention: org %s since %s; purged %d lake blobs and %s model blobs",
        org_status,
        result["since"],
        count,
        doc.get("model_blobs", "no"),
    )
    result.update(purged=True, blobs=count, purged_at=doc["purged_at"])
    return result


# ---------------------------------------------------------------------------------------------- jobs
QUEUE = "sync-jobs"


def start(ctx: Any, *, full: bool, actor: str) -> dict[str, Any]:
    """Create a sync job and queue it for `sync_worker`; returns the job (status queued)."""
    job = ctx.jobs.create("sync", {"full": full, "actor": actor})
    ctx.queue(QUEUE).send({"job_id": job["id"], "full": full, "lake": ctx.settings.lake_container})
    log.info("sync job %s queued (full=%s) by %s", job["id"], full, actor)
    return dict(job)


def _clock(ctx: Any) -> dt.datetime:
    """The org's clock (Dataverse's Date header); the machine's clock if Dataverse does not answer."""
    try:
        return ctx.dataverse.server_now(max_retries=0)  # type: ignore[no-any-return]
    except Exception as exc:  # noqa: BLE001 - any failure falls back to the local clock
        log.info("retention clock: Dataverse unreachable (%s); using the local clock", type(exc).__name__)
        return dt.datetime.now(dt.UTC)


def run_checked(
    ctx: Any, *, full: bool, job_id: str | None = None, lease_wait: float = 0.0
) -> dict[str, Any]:
    """Retention first (refuse or purge when the org is not active), then one sync."""
    s = ctx.settings
    if s.org_status != "active":
        result = retention(
            ctx.lake,
            org_status=s.org_status,
            since=s.org_status_since,
            now=_clock(ctx),
            models=ctx.model_store,
        )
        if result is not None:
            return {
                "job_id": job_id,
                "skipped": True,
                "reason": f"org is {s.org_status}",
                "retention": result,
            }
    return run_sync(ctx.lake, ctx.dataverse, full=full, job_id=job_id, lease_wait=lease_wait)


def run_job(ctx: Any, message: dict[str, Any]) -> dict[str, Any] | None:
    """The queue worker: run the job's sync and record its result or error on the job."""
    job_id = str(message.get("job_id") or "")
    lake_name = message.get("lake")
    if lake_name and lake_name != ctx.settings.lake_container:
        log.warning(
            "sync job %s belongs to lake %s, not %s; ignored", job_id, lake_name, ctx.settings.lake_container
        )
        return None
    try:
        ctx.jobs.start(job_id)
    except Exception as exc:  # noqa: BLE001 - an unknown job id is dropped, not retried forever
        log.error("sync job %s cannot start: %s", job_id, type(exc).__name__)
        return None
    try:
        report = run_checked(ctx, full=bool(message.get("full")), job_id=job_id, lease_wait=30.0)
    except Exception as exc:  # noqa: BLE001 - the job records the failure; the message is not retried
        code = str(getattr(exc, "code", "") or type(exc).__name__)
        ctx.jobs.fail(job_id, code, str(exc)[:1000])
        log.error("sync job %s failed: %s", job_id, code)
        return None
    ctx.jobs.succeed(job_id, report)
    return report


def run_scheduled(ctx: Any) -> dict[str, Any]:
    """The timer: an incremental sync (or a skip if one is running, or retention when the org is gone)."""
    return run_checked(ctx, full=False, lease_wait=0.0)
