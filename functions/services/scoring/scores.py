"""The score state and the score history: two Delta tables in the lake (docs/SCORING.md "Scores in the lake").

- `scores/history` (append-only): every row written to Dataverse, with the run and batch that wrote it,
  the model version, score, grade, trend, the previous score, the reasons JSON and every fact's
  contribution and value: it answers "why did this score change". A batch appends its rows in one
  commit (run and batch in the commit metadata).
- `scores/state` (MERGEd on opportunityid): the last written row per opportunity, without the reasons
  text (its SHA-1 is enough to tell a change) but with its recent scores (the reasons JSON's chart).
  Batches compare against it, reading only their own ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from connectors.clock import utcnow

if TYPE_CHECKING:
    from connectors.lake import Lake

STATE = "scores/state"
HISTORY = "scores/history"
_TS = pa.timestamp("us", tz="UTC")
HISTORY_SCHEMA = pa.schema(
    [
        ("opportunityid", pa.string()),
        ("run", pa.string()),
        ("batch", pa.int32()),
        ("model", pa.string()),
        ("version", pa.int32()),
        ("score", pa.int16()),
        ("grade", pa.int8()),
        ("trend", pa.int8()),
        ("previous_score", pa.float32()),
        ("reasons", pa.string()),
        ("reasons_sha", pa.string()),
        ("scoredon", pa.string()),
        ("written_at", _TS),
        ("facts", pa.string()),  # {attribute: [points, value]} of every fact that moves the score
        ("recent", pa.string()),  # the last written scores [{date, score, grade}], this one last
    ]
)
FEW_IDS = 100
STATE_SCHEMA = pa.schema([f for f in HISTORY_SCHEMA if f.name not in ("reasons", "previous_score", "facts")])


def _empty(schema: pa.Schema) -> pd.DataFrame:
    return schema.empty_table().to_pandas()


def previous(lake: Lake, ids: Sequence[str]) -> pd.DataFrame:
    """The last written row of each of `ids` that has one (STATE_SCHEMA columns)."""
    if not len(ids):
        return _empty(STATE_SCHEMA)
    wanted = list(ids)
    rows = lake.tables.read(  # state files written by a batch's MERGE cover a range of ids: most are skipped
        STATE,
        STATE_SCHEMA.names,
        filters=pc.field("opportunityid").isin(wanted),
        prune=[("opportunityid", "in", wanted)],
    )
    return _empty(STATE_SCHEMA) if rows is None else rows.to_pandas()


def appended(lake: Lake, run_id: str, batch: int) -> pd.DataFrame | None:
    """The history rows batch `batch` of run `run_id` already appended (an earlier attempt that died after
    its commit), or None. Only the files whose statistics can hold that run and batch are read."""
    rows = lake.tables.read(
        HISTORY,
        HISTORY_SCHEMA.names,
        filters=(pc.field("run") == run_id) & (pc.field("batch") == batch),
        prune=[("run", "=", run_id), ("batch", "=", batch)],
    )
    return None if rows is None or rows.num_rows == 0 else rows.to_pandas()


def append_history(lake: Lake, run_id: str, batch: int, decided: pd.DataFrame) -> pd.DataFrame:
    """Append the written rows of a batch to the history in one commit; returns them as stored."""
    rows = decided.assign(run=run_id, batch=batch, written_at=pd.Timestamp(utcnow()))
    table = pa.Table.from_pandas(rows[HISTORY_SCHEMA.names], schema=HISTORY_SCHEMA, preserve_index=False)
    lake.tables.append(HISTORY, table, metadata={"run": run_id, "batch": str(batch), "rows": str(len(rows))})
    return rows[HISTORY_SCHEMA.names].reset_index(drop=True)


def merge_state(lake: Lake, rows: pd.DataFrame, run_id: str, batch: int) -> dict[str, Any]:
    """MERGE history rows into the state: each opportunity's row becomes the one just written."""
    if rows.empty:
        return {}
    table = pa.Table.from_pandas(rows[STATE_SCHEMA.names], schema=STATE_SCHEMA, preserve_index=False)
    ids = table.column("opportunityid").to_pylist()
    narrow = None  # a few ids (listed-id scoring): only the files that can hold them are scanned
    if len(ids) <= FEW_IDS:
        narrow = "t.opportunityid IN (" + ", ".join("'" + str(i).replace("'", "''") + "'" for i in ids) + ")"
    meta = {"run": run_id, "batch": str(batch)}
    return lake.tables.merge(STATE, table, ["opportunityid"], metadata=meta, target_filter=narrow)


def state(lake: Lake) -> pd.DataFrame:
    """Every opportunity's last written row."""
    rows = lake.tables.read(STATE, STATE_SCHEMA.names)
    return _empty(STATE_SCHEMA) if rows is None else rows.to_pandas()


def history(lake: Lake, opportunity_id: str | None = None) -> pd.DataFrame:
    """Score history rows (of one opportunity, or all), oldest first. One opportunity's rows are read from
    only the files whose statistics can hold its id (each batch appends a range of ids)."""
    where = None if opportunity_id is None else pc.field("opportunityid") == opportunity_id
    prune = None if opportunity_id is None else [("opportunityid", "=", opportunity_id)]
    rows = lake.tables.read(HISTORY, HISTORY_SCHEMA.names, filters=where, prune=prune)
    frame = _empty(HISTORY_SCHEMA) if rows is None else rows.to_pandas()
    return frame.sort_values("written_at", kind="stable").reset_index(drop=True)


def maintain(lake: Lake) -> dict[str, Any]:
    """Compact and vacuum both tables (the scheduled run does it once a day)."""
    return {path: lake.tables.maintain(path) for path in (STATE, HISTORY)}
