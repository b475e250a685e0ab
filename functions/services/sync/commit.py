"""Commit: a table's staged changes become one append to its history table, then one MERGE into its current
view. The history commit carries the sync's id, time and delta link, so the data and the link that
produced it change together; it is the log the current view is derived from.

If a run dies between the two commits, `recover` (run before every table's next sync) finds the newest
history commit that the current view has not applied and MERGEs exactly its rows: nothing is lost, and
since the delta link was committed with them, nothing is fetched or recorded twice.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from connectors.clock import iso
from connectors.lake import DELETED, LINEAGE, SYNC_ID, Lake, conform, current_schema
from functions.services.sync.extract import PARTITION_COLUMN, Extract

log = logging.getLogger(__name__)

SMALL_APPEND_ROWS = 20_000


def commit_extract(lake: Lake, extract: Extract) -> dict[str, Any]:
    """Append the staged rows to history (an empty append still moves the delta link), then apply them to
    the current view. Returns the MERGE's counts."""
    table, meta = extract.spec.logical, extract.meta
    info = {
        "sync_id": extract.sync_id,
        "synced_at": iso(extract.synced_at),
        "delta_link": extract.delta_link or "",
        "mode": extract.mode,
        "rows": str(extract.rows),
        "key": meta.key,
        "entity_set": meta.entity_set,
    }
    if not extract.rows and not extract.spec.track_changes:
        return {}  # a table read in full that has not changed: no link to move, nothing to record
    if extract.rows > SMALL_APPEND_ROWS:  # bounded memory for big reads (first and full syncs)
        lake.tables.append_stream(lake.history_path(table), extract.batches(), metadata=info)
    else:  # the usual incremental: one native write
        lake.tables.append(lake.history_path(table), extract.read(), metadata=info)
    if not extract.rows:
        return {}
    if not lake.tables.exists(lake.current_path(table)):  # first sync: stream the rows straight in
        return _create_current(lake, table, extract, info)
    return apply(lake, table, meta.key, extract.read(), info, target_states=extract.target_states)


def _create_current(lake: Lake, table: str, extract: Extract, info: Mapping[str, str]) -> dict[str, Any]:
    reader = extract.batches()
    schema = current_schema(reader.schema)

    def rows() -> Any:
        for batch in reader:
            live = batch.filter(pc.invert(batch.column(DELETED)))
            yield live.select(schema.names)

    lake.tables.append_stream(
        lake.current_path(table),
        pa.RecordBatchReader.from_batches(schema, rows()),
        metadata=info,
        partition_by=PARTITION_COLUMN if PARTITION_COLUMN in schema.names else None,
    )
    return {"num_target_rows_inserted": extract.rows - extract.stats.get("deleted", 0), "created": True}


def apply(
    lake: Lake,
    table: str,
    key: str,
    rows: pa.Table,
    info: Mapping[str, str],
    *,
    target_states: set[Any] | None = None,
) -> dict[str, Any]:
    """MERGE history rows of one sync into the current view: the last version of each id wins; a deletion
    removes the row. Columns new in the metadata are added to the table's schema. `target_states`, the
    partition values of every current row the rows replace, limits the MERGE to those partitions."""
    if not rows.num_rows:
        return {}
    path = lake.current_path(table)
    target_filter = None
    if target_states is not None and PARTITION_COLUMN in lake.tables.partition_columns(path):
        target_filter = partition_filter(target_states)
    rows = _last_per_key(rows, key)
    source = rows.drop_columns([c for c in LINEAGE if c != DELETED and c in rows.column_names])
    target = lake.tables.schema(path)
    if target is not None:  # keep the stored types of existing columns
        fields = [target.field(f.name) if f.name in target.names else f for f in source.schema]
        source = conform(source, pa.schema(fields))
    partition = [PARTITION_COLUMN] if PARTITION_COLUMN in source.column_names else None  # if it creates the view
    return lake.tables.merge(
        path, source, [key], delete_column=DELETED, metadata=info, target_filter=target_filter, partition_by=partition
    )


def partition_filter(states: set[Any]) -> str:
    """SQL on the MERGE target `t` for rows whose partition value is one of `states` (None: null)."""
    values = sorted(int(v) for v in states if v is not None)
    parts = [f"t.`{PARTITION_COLUMN}` IN ({', '.join(map(str, values))})"] if values else []
    if None in states:
        parts.append(f"t.`{PARTITION_COLUMN}` IS NULL")
    return " OR ".join(parts) or "false"


def _last_per_key(rows: pa.Table, key: str) -> pa.Table:
    """One row per key (a MERGE source must not match a target row twice): the last one staged."""
    ids = rows.column(key).to_pandas()
    last = ~ids.duplicated(keep="last")
    if bool(last.all()):
        return rows
    return rows.filter(pa.array(last.to_numpy()))


def recover(lake: Lake, table: str) -> bool:
    """Apply the newest history commit if the current view missed it (a run died between the commits)."""
    history = lake.tables.last_commit(lake.history_path(table), having="sync_id")
    if not history or int(history.get("rows") or 0) == 0:
        return False
    current = lake.tables.last_commit(lake.current_path(table), having="sync_id")
    if current.get("sync_id") == history["sync_id"]:
        return False
    rows = lake.tables.read(lake.history_path(table), filters=pc.field(SYNC_ID) == history["sync_id"])
    if rows is None or not rows.num_rows:
        return False
    info = {k: str(history[k]) for k in ("sync_id", "synced_at", "delta_link", "mode", "rows", "key", "entity_set")}
    log.warning(
        "sync %s: applying %d history rows of sync %s that the current view missed",
        table,
        rows.num_rows,
        history["sync_id"],
    )
    apply(lake, table, str(history["key"]), rows, info)  # creates the view when the first sync died
    return True
