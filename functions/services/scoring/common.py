"""What every part of a scoring run shares: sizes, errors, the queue message, id checks, small helpers."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import pandas as pd
import pyarrow as pa

from connectors.clock import iso, stamp
from connectors.jobs import JOB_ID
from modeling.errors import ConflictError, InvalidInput, NotFoundError, Unavailable
from modeling.values import GUID, matches

ENTITY_TYPE = "opportunity"
ENTITY_SET = "msdyn_predictivescores"
SCORE_TABLE = "msdyn_predictivescore"  # its logical name (sdkmessagefilters, @odata.type)
WRITE_REQUEST_OPS = 1000  # operations per $batch request (Dataverse's limit; the client splits there)
SYNC_LIMIT = 20  # POST /api/score with at most this many ids is answered synchronously
RUN_RETENTION_DAYS = 14  # scoring/runs/<run>/ older than this is deleted by the scheduled run
IO_THREADS = 8  # parallel small blob reads and writes
RUN_ID_RE = JOB_ID  # a run id is its job id
# Columns the plan adds to a batch input (prefixed so they never collide with attributes).
C_ID = "opportunityid"
C_NAME = "__sc_name"

T = TypeVar("T")
R = TypeVar("R")


class ScoringError(InvalidInput):
    """A scoring request or queue message that cannot be used (a refusal: HTTP 400)."""

    code = "ScoringError"


class RunNotFound(NotFoundError):
    code = "RunNotFound"


class ScoreNotFound(NotFoundError):
    code = "ScoreNotFound"


class RunSuperseded(ConflictError):
    """The run was replaced by a later scheduled run (HTTP 409, code `Superseded`)."""

    def __init__(self, message: str):
        super().__init__(message, code="Superseded")


class BatchWriteFailed(Unavailable):
    """Some upserts of a batch failed; raised so the queue host retries the batch (and finally poisons it)."""

    code = "BatchWriteFailed"


def new_run_id() -> str:
    """`20261201T053000Z` + 10 hex digits: unique, sorts by start time, and tells its age without a read."""
    return f"{stamp()}{uuid.uuid4().hex[:10]}"


def parse_message(body: bytes | str | Mapping[str, Any]) -> tuple[str, int]:
    """A scoring message `{"runId", "batch"}` -> (run id, batch index); ScoringError BadMessage otherwise."""
    if isinstance(body, Mapping):
        msg: Any = dict(body)
    else:
        try:
            msg = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ScoringError(f"scoring message is not JSON: {exc}", code="BadMessage") from exc
    if not isinstance(msg, dict) or set(msg) != {"runId", "batch"}:
        raise ScoringError('a scoring message is {"runId": str, "batch": int}', code="BadMessage")
    run_id, batch = msg["runId"], msg["batch"]
    if not isinstance(run_id, str) or not RUN_ID_RE.fullmatch(run_id):
        raise ScoringError("scoring message has an invalid runId", code="BadMessage")
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 0:
        raise ScoringError("scoring message has an invalid batch", code="BadMessage")
    return run_id, batch


def message(run_id: str, batch: int) -> dict[str, Any]:
    return {"runId": run_id, "batch": batch}


def validate_run_id(value: Any) -> str:
    if not isinstance(value, str) or not RUN_ID_RE.fullmatch(value):
        raise ScoringError("resume must be the runId of an earlier run", code="InvalidRunId")
    return value


def validate_ids(values: Any) -> list[str]:
    """A list of opportunity GUIDs (lower-cased, de-duplicated, order kept), or 400 naming the bad ones."""
    if not isinstance(values, list) or not values:
        raise ScoringError("opportunityIds must be a non-empty list of GUIDs", code="InvalidOpportunityIds")
    bad = [v for v in values if not matches(GUID, v)]
    if bad:
        shown = ", ".join(json.dumps(v) for v in bad[:10]) + (" ..." if len(bad) > 10 else "")
        raise ScoringError(f"these opportunityIds are not GUIDs: {shown}", code="InvalidOpportunityIds")
    return list(dict.fromkeys(v.lower() for v in values))


def validate_id(value: Any) -> str:
    if not matches(GUID, value):
        raise ScoringError(f"opportunity id {value!r} is not a GUID", code="InvalidOpportunityId")
    return value.lower()


def score_key(opportunity_id: str) -> dict[str, str]:
    """The alternate key of a score row: (msdyn_entityid, msdyn_entitytype)."""
    return {"msdyn_entityid": opportunity_id, "msdyn_entitytype": ENTITY_TYPE}


def requests_for(rows: int) -> int:
    """$batch requests needed for `rows` upserts."""
    return math.ceil(rows / WRITE_REQUEST_OPS)


def to_arrow(frame: pd.DataFrame) -> pa.Table:
    """Parquet-safe: a column of mixed Python types (bad data) is stored as text, which the shared feature
    preparation parses or treats as missing exactly as it would the original value."""
    try:
        return pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        fixed = frame.copy()
        for col in fixed.columns:
            try:
                pa.array(fixed[col])
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                fixed[col] = fixed[col].map(lambda v: None if v is None or v != v else str(v)).astype(object)
        return pa.Table.from_pandas(fixed, preserve_index=False)


def parallel(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """fn over items with a few threads (blob calls are latency-bound), results in order."""
    if len(items) <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(max_workers=min(IO_THREADS, len(items))) as pool:
        return list(pool.map(fn, items))


@dataclass(frozen=True)
class BatchSpec:
    """What a batch needs from its run's plan: which model scores it, the grade ranges read when the run
    was planned, the date written as `msdyn_scoredon`, and the quota month and limit."""

    run_id: str
    batch: int
    model: str
    version: int
    grade_ranges: tuple[int, ...] | None
    scored_on: str
    month: str
    quota: int | None

    @property
    def key(self) -> str:
        return f"{self.model}@{self.version}"

    @classmethod
    def from_plan(cls, plan: Mapping[str, Any], batch: int) -> BatchSpec:
        key = str(plan["batchModels"][batch])
        doc: Mapping[str, Any] = next((m for m in plan.get("models", []) if m.get("key") == key), {})
        name, _, version = key.rpartition("@")
        ranges = tuple(int(v) for v in doc.get("gradeRanges") or ()) or None
        return cls(
            str(plan["runId"]),
            batch,
            name,
            int(version),
            ranges,
            str(plan["scoredOn"]),
            str(plan["month"]),
            plan.get("quota"),
        )


def score_body(row: Mapping[str, Any]) -> dict[str, Any]:
    """The msdyn_predictivescore row of a decided row (docs/SCORING.md "Row")."""
    return {
        "msdyn_name": row["name"],
        "msdyn_entityid": row[C_ID],
        "msdyn_entitytype": ENTITY_TYPE,
        "msdyn_score": int(row["score"]),
        "msdyn_grade": int(row["grade"]),
        "msdyn_scoretrend": int(row["trend"]),
        "msdyn_scoredon": row["scoredon"],
        "msdyn_scorereasons": row["reasons"],
    }


def batch_result(
    spec: BatchSpec,
    scored: pd.DataFrame,
    decided: pd.DataFrame,
    written: pd.DataFrame,
    *,
    rows: int,
    requested: int,
    requests: int,
) -> dict[str, Any]:
    """A batch's result document (the run's report sums them)."""
    return {
        "batch": spec.batch,
        "model": spec.key,
        "scored": len(scored),
        "changed": len(written),
        "written": len(written),
        "unchanged": len(decided) - len(written),
        "skipped": rows - len(scored),
        "skipReasons": _skip_reasons(scored, rows),
        "quotaStopped": requested - rows,
        "writeRequests": requests,
        "finishedAt": iso(),
    }


def _skip_reasons(scored: pd.DataFrame, rows: int) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in scored.attrs.get("skipped") or []:
        reason = str(item.get("reason", "invalid record"))
        counts[reason] = counts.get(reason, 0) + 1
    if not counts and rows > len(scored):
        counts["not scored by the model (invalid record)"] = rows - len(scored)
    return counts


def counts_text(result: Mapping[str, Any]) -> str:
    keys = ("scored", "written", "unchanged", "skipped", "quotaStopped", "writeRequests", "seconds")
    return " ".join(f"{k}={result.get(k)}" for k in keys)
