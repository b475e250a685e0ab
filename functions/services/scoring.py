"""Scoring runs: plan, score in parallel, then write the changed rows in chunks of exactly 1,000, report.

A run is planned once and executed by many queue-triggered workers, in two phases:

1. `plan_run` reads the lake's current tables once, builds the scoring frame of every published model
   with the shared `modeling.dataset` code (eligibility: open, filter, BPF, created within 2 years as of
   the lake snapshot), gives each eligible opportunity exactly ONE model (rule in `model_priority`),
   joins the last written score of each opportunity (score history in the lake), stores one Parquet
   input per scoring batch (`SCORE_BATCH_SIZE` ids) and sends one `{"runId", "batch"}` message each.
2. Score phase, `score_batch` (one message): claims the batch, claims quota, scores with the shared
   `modeling.scoring.Scorer` (cached per process by name@version), decides grade, trend and reasons and
   STAGES only the rows that changed (Parquet parts of <= 1,000 rows), then drops a `done` marker.
3. When every batch of the run is scored (or failed), the worker that notices it cuts the staged rows,
   in batch order, into write chunks of exactly `WRITE_CHUNK` (1,000) operations - the last one smaller -
   records them in a write round (`writes/round-RRR.json`, create-only so only one worker does it) and
   sends one `{"runId", "round", "chunk"}` message per chunk. So write requests = ceil(changed / 1,000)
   plus retries, however sparse the changes are.
4. Write phase, `write_chunk` (one message): claims the chunk, upserts its rows through ONE `$batch`
   request on the alternate key, appends them to the score history and drops a `done` marker.
5. The worker that completes the last item writes the run report and finishes the job: `succeeded`, or
   `failed` (code `BatchesFailed`) with the failed batches/chunks and their reasons listed when a
   message was poisoned (`record_poisoned`, the `%SCORING_QUEUE%-poison` trigger).

Every item is idempotent: a redelivered message finds its checkpoint done and only re-checks progress;
a worker killed midway leaves its claim to expire and the retry redoes the item from the same input
(scores are deterministic, upserts idempotent), so a killed run resumes without duplicates or gaps.

Layout in the lake container (all under `scoring/`):
```
scoring/runs/<run>/plan.json                     # the plan: models, counts, skip reasons, batch count
scoring/runs/<run>/batches/<NNNNN>.parquet       # a batch's scoring frame + previous score columns
scoring/runs/<run>/batches/<NNNNN>.json          # its checkpoint: claimed | scored | failed (+ lastError)
scoring/runs/<run>/staged/<NNNNN>/<PPP>.parquet  # the batch's changed rows, parts of <= 1,000 rows
scoring/runs/<run>/writes/round-<RRR>.json       # a write round: chunks of 1,000 slices of staged parts
scoring/runs/<run>/chunks/<RRR>-<CCCCC>.json     # a chunk's checkpoint: claimed | written | failed
scoring/runs/<run>/done/score-<NNNNN>.json       # terminal markers (listing them is the progress)
scoring/runs/<run>/done/write-<RRR>-<CCCCC>.json
scoring/runs/<run>/superseded.json               # a later scheduled run replaced this unfinished one
scoring/runs/<run>/report.json                   # the report (also reports/scoring/<run>.json)
# once a run is final (succeeded or superseded) its batches/*.parquet and staged/ are deleted (drop_scratch)
scoring/history/<run>/chunk-<RRR>-<CCCCC>.parquet  # every row written: what, when, by which model version
scoring/state/manifest.json                      # compacted last-written score per opportunity ...
scoring/state/scores-<id>.parquet                # ... and the final runs folded into it (two generations kept)
scoring/quota/<YYYY-MM>.json                     # ids scored this calendar month (only with a quota)
```
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import os
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError

from connectors.blobs import JsonBlobs
from modeling.errors import TypedError

log = logging.getLogger(__name__)

ENTITY_TYPE = "opportunity"
ENTITY_SET = "msdyn_predictivescores"
SCORE_BATCH_SIZE = 5000  # ids per scoring message: big enough that per-message overhead is small
WRITE_CHUNK = 1000  # operations per $batch request (Dataverse's limit) and per write message
BATCH_SIZE = WRITE_CHUNK  # kept for callers of round 1
SYNC_LIMIT = 20  # POST /api/score with at most this many ids is answered synchronously
CLAIM_SECONDS = 30  # a worker's claim on an item; another worker takes over after it expires
TREND_TOLERANCE = 3  # |new - previous| <= 3 points is "Steady"
MAX_REASONS_CHARS = 10_000
GRADE_LABELS = ("A", "B", "C", "D")
TREND_LABELS = ("Improving", "Steady", "Declining", "Not enough info")
GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
RUN_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
IO_THREADS = 8  # parallel small blob reads (markers, staged parts)

# Columns this module adds to a batch frame (prefixed so they never collide with attributes).
C_ID = "opportunityid"
C_MODEL = "__sc_model"
C_VERSION = "__sc_version"
C_NAME = "__sc_name"
C_PREV_SCORE = "__sc_prev_score"
C_PREV_GRADE = "__sc_prev_grade"
C_PREV_TREND = "__sc_prev_trend"
C_PREV_REASONS = "__sc_prev_reasons_sha"

HISTORY_SCHEMA = pa.schema(
    [
        ("opportunityid", pa.string()),
        ("run_id", pa.string()),
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
        ("written_at", pa.timestamp("us", tz="UTC")),
    ]
)
# A staged (changed, not yet written) row: the history columns known at scoring time + the row's name.
STAGED_SCHEMA = pa.schema(
    [f for f in HISTORY_SCHEMA if f.name not in ("run_id", "written_at")] + [pa.field("name", pa.string())]
)


class ScoringError(TypedError):
    """A scoring request that cannot be served; carries an HTTP status and a code."""

    status = 400
    code = "ScoringError"


class BatchFailed(ScoringError):
    """A chunk could not be written; raised so the queue host retries it (and finally poisons it)."""

    status = 502
    code = "BatchWriteFailed"


# ------------------------------------------------------------------------------------------------ helpers


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat(timespec="seconds")


def _batch_name(i: int) -> str:
    return f"{i:05d}"


def _chunk_name(round_no: int, chunk: int) -> str:
    return f"{round_no:03d}-{chunk:05d}"


def _run_prefix(run_id: str) -> str:
    return f"scoring/runs/{run_id}/"


def _sha(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()  # noqa: S324 - change detection, not security


def validate_ids(values: Any) -> list[str]:
    """A list of opportunity GUIDs (lower-cased, de-duplicated, order kept) or BadRequest naming bad ones."""
    from functions.http import BadRequest

    if not isinstance(values, list) or not values:
        raise BadRequest("opportunityIds must be a non-empty list of GUIDs", code="InvalidOpportunityIds")
    bad = [v for v in values if not isinstance(v, str) or not GUID_RE.match(v.strip())]
    if bad:
        shown = ", ".join(json.dumps(v) for v in bad[:10]) + (" ..." if len(bad) > 10 else "")
        raise BadRequest(f"these opportunityIds are not GUIDs: {shown}", code="InvalidOpportunityIds")
    return list(dict.fromkeys(v.strip().lower() for v in values))


def score_key(opportunity_id: str) -> dict[str, str]:
    """The alternate key of a score row: (msdyn_entityid, msdyn_entitytype)."""
    return {"msdyn_entityid": opportunity_id, "msdyn_entitytype": ENTITY_TYPE}


def alternate_key_path(opportunity_id: str) -> str:
    """`msdyn_predictivescores(msdyn_entityid='<id>',msdyn_entitytype='opportunity')` (connector-quoted)."""
    from connectors.odata import key_segment

    return key_segment(ENTITY_SET, score_key(opportunity_id))


def decide_trend(prev_score: float | None, prev_trend: int | None, new_score: int, tolerance: int) -> int:
    """The trend to write. Rule (documented in docs/SCORING.md):
    - no previous score -> 3 Not enough info;
    - same score as the last written one -> the trend written then (nothing moved, nothing to write);
    - otherwise the shared `modeling.scoring.trend(previous, new, tolerance)`: Steady within the
      tolerance, else Improving or Declining."""
    from modeling.scoring import trend

    if prev_score is None or (isinstance(prev_score, float) and math.isnan(prev_score)):
        return 3
    if int(prev_score) == int(new_score) and prev_trend is not None and not _isnan(prev_trend):
        return int(prev_trend)
    return int(trend(int(prev_score), int(new_score), tolerance))


def _isnan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


# ------------------------------------------------------------------------------------------- ports
# The only places that touch other packages' APIs, so the orchestration stays readable.


@dataclass(frozen=True)
class PublishedModel:
    name: str
    version: int
    config: Any  # modeling.config.ModelConfig
    published_at: str

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"


def published_models(ctx: Any) -> list[PublishedModel]:
    """Every model with a published version, from the model store."""
    from modeling.config import ModelConfig

    store = ctx.model_store
    out = []
    for raw in store.list_configs():
        name = str(raw["name"])
        alias = store.get_alias(name)
        version = alias.get("published")
        if version is None:
            continue
        config = ModelConfig.from_json(raw)
        out.append(PublishedModel(name, int(version), config, str(alias.get("publishedAt") or "")))
    return out


_model_cache: dict[str, Any] = {}
_model_lock = threading.Lock()


def load_scorer(ctx: Any, name: str, version: int) -> Any:
    """The shared Scorer for name@version, built once per process (the ONNX sha256 is checked on load)."""
    from modeling.scoring import Scorer

    key = f"{getattr(ctx.settings, 'model_container', '')}/{name}@{version}"
    with _model_lock:
        scorer = _model_cache.get(key)
    if scorer is not None:
        return scorer
    started = time.perf_counter()
    loaded = ctx.model_store.load_version(name, version)  # IntegrityError (500) on a sha256 mismatch
    scorer = Scorer(loaded.onnx, loaded.meta)
    with _model_lock:
        _model_cache[key] = scorer
    log.info("loaded model=%s@%d in %.0f ms", name, version, (time.perf_counter() - started) * 1000)
    return scorer


def clear_model_cache() -> None:
    with _model_lock:
        _model_cache.clear()


def read_lake_inputs(ctx: Any) -> tuple[dict[str, pd.DataFrame], dict[str, Any], dt.datetime]:
    """The lake's current tables as pandas (the training service's readers), the metadata, and "as of"."""
    from functions.services.training import load_metadata, load_tables

    lake = ctx.lake
    tables = load_tables(lake, history=False)
    try:  # stage entry times for time-in-stage when the BPF instance lacks them (3 columns, not all)
        hist = lake.read_history("opportunity", columns=["opportunityid", "stepname", "modifiedon"])
        tables["opportunity_history"] = hist.to_pandas()
    except Exception as exc:  # noqa: BLE001 - optional input; the dataset code works without it
        log.info("opportunity history not used for scoring: %s", type(exc).__name__)
    return tables, load_metadata(lake), snapshot_time(lake, tables)


def snapshot_time(lake: Any, tables: Mapping[str, pd.DataFrame]) -> dt.datetime:
    """The moment the lake's data describes: the later of the opportunity manifest's sync time and the
    newest createdon/modifiedon in the data. Derived features (days open, days in stage) are measured
    to it, so two runs over the same snapshot give the same scores (and write nothing the second time),
    and an org whose clock runs ahead (the mock after /_mock/simulate) still has its new rows eligible."""
    candidates: list[pd.Timestamp] = []
    manifest = lake.read_json("tables/opportunity/manifest.json") or {}
    for key in ("synced_at", "updated_at"):
        raw = manifest.get(key) if isinstance(manifest, Mapping) else None
        if raw:
            t = pd.to_datetime(str(raw), utc=True, errors="coerce")
            if not pd.isna(t):
                candidates.append(t)
                break
    for table, cols in (
        ("opportunity", ("createdon", "modifiedon")),
        ("opportunitysalesprocess", ("modifiedon",)),
    ):
        frame = tables.get(table)
        for col in cols:
            if frame is not None and col in frame.columns and len(frame):
                t = pd.to_datetime(frame[col], utc=True, errors="coerce").max()
                if not pd.isna(t):
                    candidates.append(t)
    if not candidates:
        return _utcnow()
    return max(candidates).to_pydatetime()


def build_scoring_frame(
    tables: Mapping[str, pd.DataFrame],
    metadata: Mapping[str, Any],
    model: PublishedModel,
    now: dt.datetime,
    scorer: Any,
    opportunity_ids: Sequence[str] | None = None,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """The model's eligible rows (shared modeling.dataset code) and counts of ineligible ids by reason."""
    from modeling.dataset import build_scoring_frame as build

    stats = (scorer.meta or {}).get("stats", {}) if hasattr(scorer, "meta") else {}
    result = build(tables, metadata, model.config, now, stats, opportunity_ids=opportunity_ids)
    counts: dict[str, int] = {}
    for item in result.skipped:
        reason = str(item.get("reason", "not eligible"))
        counts[reason] = counts.get(reason, 0) + 1
    return result.frame, counts


def write_rows(ctx: Any, rows: Sequence[Mapping[str, Any]]) -> list[Any]:
    """Upsert score rows by alternate key through $batch (the client splits at 1,000 per request)."""
    from connectors.dataverse import BatchOp

    ops = [BatchOp.upsert(ENTITY_SET, score_key(str(r["msdyn_entityid"])), r) for r in rows]
    return list(ctx.dataverse.batch(ops, continue_on_error=True))


# --------------------------------------------------------------------------------------- model choice


def model_priority(model: PublishedModel) -> tuple[Any, ...]:
    """Sort key: the first model in this order scores an opportunity several models match.

    1. a model with a filter before one without (most specific filter first, fewer values first);
    2. a model bound to a business process flow before one that takes every BPF;
    3. the most recently published; 4. the name (A before B), so the choice is always deterministic."""
    cfg = model.config
    has_filter = cfg.filter_column is not None
    n_values = len(cfg.filter_values) if has_filter else 10**9
    has_bpf = cfg.business_process_flow is not None
    return (not has_filter, n_values, not has_bpf, _neg_time(model.published_at), model.name.lower())


def _neg_time(iso: str) -> float:
    try:
        return -dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except (ValueError, AttributeError):
        return 0.0


# ---------------------------------------------------------------------------------- previous scores


def load_previous(ctx: Any, *, fold: bool = True, exclude_run: str | None = None) -> pd.DataFrame:
    """The last written score of every opportunity: the compacted state plus history not yet folded.

    Runs that are final (succeeded, or superseded) are folded into a new compacted state (written by this
    call when `fold`); a failed run stays unfolded, since a resume may still add history to it."""
    blobs = JsonBlobs(ctx.lake_container)
    manifest, etag = blobs.read_with_etag("scoring/state/manifest.json")
    manifest = manifest or {"snapshot": None, "runs": []}
    folded = set(manifest.get("runs", []))
    generations = (manifest.get("snapshot"), manifest.get("previous"))
    parts: list[pd.DataFrame] = []
    if manifest.get("snapshot"):
        parts.append(ctx.lake.read_parquet(manifest["snapshot"]).to_pandas())
    newly_final: list[str] = []
    for run_id in _history_runs(ctx):
        if run_id in folded or run_id == exclude_run:
            continue
        paths = [p for p in sorted(ctx.lake.list(f"scoring/history/{run_id}/")) if p.endswith(".parquet")]
        parts.extend(t.to_pandas() for t in _parallel(lambda p: ctx.lake.read_parquet(p), paths))
        report = blobs.read(f"{_run_prefix(run_id)}report.json")
        if isinstance(report, Mapping) and report.get("final"):
            newly_final.append(run_id)
    cols = [
        "opportunityid",
        "score",
        "grade",
        "trend",
        "reasons_sha",
        "model",
        "version",
        "scoredon",
        "written_at",
    ]
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in cols})
    hist = pd.concat([p[[c for c in cols if c in p.columns]] for p in parts], ignore_index=True)
    hist = hist.sort_values("written_at", kind="stable").drop_duplicates("opportunityid", keep="last")
    hist = hist.reset_index(drop=True)
    if fold and newly_final:
        _fold(ctx, blobs, hist, sorted(folded | set(newly_final)), etag, generations)
    return hist


def _history_runs(ctx: Any) -> list[str]:
    prefix = "scoring/history/"
    names = ctx.lake_container.walk_blobs(name_starts_with=prefix, delimiter="/")
    out = []
    for item in names:
        name = getattr(item, "name", str(item))
        if name.endswith("/"):
            out.append(name[len(prefix) :].rstrip("/"))
    return out


def _fold(
    ctx: Any,
    blobs: JsonBlobs,
    state: pd.DataFrame,
    runs: list[str],
    etag: str | None,
    generations: tuple[str | None, str | None] = (None, None),
) -> None:
    """Write a new compacted snapshot and point the manifest at it (ETag-conditioned). `generations` are the
    snapshot it replaces and the one before that: the replaced one stays a generation (a reader may have
    read the old manifest a moment ago), the one before is deleted; a snapshot that loses the race for the
    manifest is deleted by its writer."""
    replaced, previous = generations
    path = f"scoring/state/scores-{uuid.uuid4().hex[:12]}.parquet"
    table = pa.Table.from_pandas(state, preserve_index=False)
    ctx.lake.write_parquet(path, table)
    doc = {"snapshot": path, "previous": replaced, "runs": runs, "rows": len(state), "updated_at": _iso(_utcnow())}
    try:
        if etag is None:
            blobs.write("scoring/state/manifest.json", doc, create_only=True)
        else:
            blobs.write("scoring/state/manifest.json", doc, etag=etag)
        log.info("score state compacted: %d rows, %d runs folded", len(state), len(runs))
    except (ResourceModifiedError, ResourceExistsError):
        log.info("score state changed concurrently; compaction left to the next run")
        blobs.delete(path)
        return
    if previous and previous not in (path, replaced):
        blobs.delete(previous)


def _parallel(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    """fn over items with a few threads (small blob reads are latency-bound), results in order."""
    if len(items) <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(max_workers=min(IO_THREADS, len(items))) as pool:
        return list(pool.map(fn, items))


# ------------------------------------------------------------------------------------------ planning


@dataclass
class Plan:
    run_id: str
    batches: list[pd.DataFrame] = field(default_factory=list)
    doc: dict[str, Any] = field(default_factory=dict)


def plan_run(
    ctx: Any,
    *,
    opportunity_ids: Sequence[str] | None = None,
    actor: str = "timer",
    enqueue: bool = True,
    run_id: str | None = None,
    batch_size: int = SCORE_BATCH_SIZE,
    now: dt.datetime | None = None,
    job: bool = True,
) -> dict[str, Any]:
    """Plan a scoring run and send one queue message per scoring batch. Returns the plan document.

    `opportunity_ids` limits the run to those ids (each still has to be eligible; the others are
    reported with a reason). `enqueue=False` plans an inline run: nothing is sent, `run_inline` (the
    synchronous path) executes it."""
    started = time.perf_counter()
    run_id = run_id or uuid.uuid4().hex
    clock = now or _utcnow()
    blobs = JsonBlobs(ctx.lake_container)
    if job:
        ctx.jobs.create("scoring", {"actor": actor, "ids": len(opportunity_ids or [])}, job_id=run_id)
        ctx.jobs.start(run_id)
    try:
        plan = _build_plan(ctx, run_id, opportunity_ids, actor, batch_size, clock)
    except Exception as exc:
        if job:
            ctx.jobs.fail(run_id, getattr(exc, "code", type(exc).__name__), str(exc)[:500])
        raise
    _parallel(
        lambda item: ctx.lake.write_parquet(
            f"{_run_prefix(run_id)}batches/{_batch_name(item[0])}.parquet", _to_arrow(item[1])
        ),
        list(enumerate(plan.batches)),
    )
    plan.doc["inline"] = not enqueue
    plan.doc["plannedIn"] = round(time.perf_counter() - started, 3)
    blobs.write(f"{_run_prefix(run_id)}plan.json", plan.doc)
    log.info(
        "scoring run=%s planned: eligible=%d batches=%d models=%s in %.2f s",
        run_id,
        plan.doc["eligible"],
        len(plan.batches),
        ",".join(m["key"] for m in plan.doc["models"]) or "-",
        plan.doc["plannedIn"],
    )
    if not plan.batches:
        finish_run(ctx, run_id)
    elif enqueue:
        enqueue_batches(ctx, run_id, range(len(plan.batches)))
    return plan.doc


def enqueue_batches(ctx: Any, run_id: str, batches: Iterable[int]) -> int:
    """One scoring message per batch index."""
    return _send(ctx, [{"runId": run_id, "batch": i} for i in batches])


def _send(ctx: Any, messages: Sequence[Mapping[str, Any]]) -> int:
    if not messages:
        return 0
    sender = ctx.queue(ctx.settings.scoring_queue)
    for m in messages:
        sender.send(dict(m))
    return len(messages)


def _build_plan(
    ctx: Any, run_id: str, ids: Sequence[str] | None, actor: str, batch_size: int, clock: dt.datetime
) -> Plan:
    tables, metadata, as_of = read_lake_inputs(ctx)
    models = sorted(published_models(ctx), key=model_priority)
    opp = tables.get("opportunity", pd.DataFrame())
    names = _names(opp)
    wanted = None if ids is None else {i.lower() for i in ids}
    ineligible: dict[str, int] = {}
    taken: set[str] = set()
    chosen: list[tuple[PublishedModel, pd.DataFrame]] = []
    model_docs = []
    for model in models:
        scorer = load_scorer(ctx, model.name, model.version)
        frame, skipped = build_scoring_frame(tables, metadata, model, as_of, scorer, opportunity_ids=ids)
        frame = frame.copy()
        frame[C_ID] = frame[C_ID].astype(str).str.lower()
        if wanted is not None:
            frame = frame[frame[C_ID].isin(wanted)]
        before = len(frame)
        frame = frame[~frame[C_ID].isin(taken)]
        taken.update(frame[C_ID])
        for reason, count in skipped.items():
            ineligible[f"{model.key}: {reason}"] = ineligible.get(f"{model.key}: {reason}", 0) + count
        chosen.append((model, frame))
        model_docs.append(
            {
                "key": model.key,
                "name": model.name,
                "version": model.version,
                "gradeRanges": list(model.config.grade_ranges),
                "eligible": len(frame),
                "matchedByHigherPriority": before - len(frame),
            }
        )
    previous = load_previous(ctx)
    batches: list[pd.DataFrame] = []
    for model, frame in chosen:
        if frame.empty:
            continue
        frame = frame.sort_values(C_ID, kind="stable").reset_index(drop=True)
        frame[C_MODEL] = model.name
        frame[C_VERSION] = model.version
        frame[C_NAME] = frame[C_ID].map(names).fillna("")
        frame = _join_previous(frame, previous)
        for start in range(0, len(frame), batch_size):
            batches.append(frame.iloc[start : start + batch_size].reset_index(drop=True))
    not_found: list[dict[str, str]] = []
    if wanted is not None:
        known = set(opp[C_ID].astype(str).str.lower()) if C_ID in opp.columns else set()
        for i in sorted(wanted - taken):
            reason = "not in the lake (never synced or deleted)" if i not in known else _why(opp, i, models)
            not_found.append({"opportunityId": i, "reason": reason})
    if not models:
        log.warning("scoring run=%s: no published model; nothing to score", run_id)
    doc = {
        "runId": run_id,
        "actor": actor,
        "createdAt": _iso(clock),
        "asOf": _iso(as_of),
        "scoredOn": clock.date().isoformat(),
        "month": clock.strftime("%Y-%m"),
        "models": model_docs,
        "eligible": int(sum(len(b) for b in batches)),
        "batches": len(batches),
        "ineligible": ineligible,
        "notScored": not_found,
        "requestedIds": None if ids is None else len(wanted or ()),
        "quota": ctx.settings.monthly_quota,
        "trendTolerance": TREND_TOLERANCE,
    }
    return Plan(run_id, batches, doc)


def _names(opp: pd.DataFrame) -> dict[str, str]:
    if C_ID not in opp.columns or "name" not in opp.columns:
        return {}
    ids = opp[C_ID].astype(str).str.lower()
    return dict(zip(ids, opp["name"].astype(object).where(opp["name"].notna(), ""), strict=False))


def _why(opp: pd.DataFrame, opp_id: str, models: Sequence[PublishedModel]) -> str:
    if not models:
        return "no published model"
    row = opp[opp[C_ID].astype(str).str.lower() == opp_id]
    if not row.empty and "statecode" in row.columns and row["statecode"].iloc[0] != 0:
        return "not open"
    return "no published model matches it (filter, business process flow or created over 2 years ago)"


def _join_previous(frame: pd.DataFrame, previous: pd.DataFrame) -> pd.DataFrame:
    if previous.empty:
        frame[C_PREV_SCORE] = np.nan
        frame[C_PREV_GRADE] = np.nan
        frame[C_PREV_TREND] = np.nan
        frame[C_PREV_REASONS] = None
        return frame
    prev = previous.set_index("opportunityid")
    ids = frame[C_ID]
    frame[C_PREV_SCORE] = ids.map(prev["score"]).astype(float)
    frame[C_PREV_GRADE] = ids.map(prev["grade"]).astype(float)
    frame[C_PREV_TREND] = ids.map(prev["trend"]).astype(float)
    frame[C_PREV_REASONS] = ids.map(prev["reasons_sha"]).astype(object)
    return frame


def _to_arrow(frame: pd.DataFrame) -> pa.Table:
    """Parquet-safe: a column of mixed Python types (bad data) is stored as text, which the shared
    feature preparation parses or treats as missing exactly as it would the original value."""
    try:
        return pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        fixed = frame.copy()
        for col in fixed.columns:
            try:
                pa.array(fixed[col])
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                fixed[col] = fixed[col].map(lambda v: None if v is None or _isnan(v) else str(v)).astype(object)
        return pa.Table.from_pandas(fixed, preserve_index=False)


# ------------------------------------------------------------------------------------ messages, claims


def parse_message(body: bytes | str | Mapping[str, Any]) -> dict[str, Any]:
    """`{"runId", "batch"}` (a scoring batch) or `{"runId", "round", "chunk"}` (a write chunk), checked;
    the result carries `kind` = "score" | "write"."""
    if isinstance(body, Mapping):
        msg = dict(body)
    else:
        try:
            msg = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ScoringError(f"scoring message is not JSON: {exc}", code="BadMessage") from exc
    if not isinstance(msg, dict) or not isinstance(msg.get("runId"), str):
        raise ScoringError("scoring message needs runId (str) and batch or round+chunk", code="BadMessage")
    if not RUN_ID_RE.fullmatch(msg["runId"]):
        raise ScoringError("scoring message has an invalid runId", code="BadMessage")
    ints = {k: msg.get(k) for k in ("batch", "round", "chunk") if k in msg}
    if any(not isinstance(v, int) or isinstance(v, bool) or v < 0 for v in ints.values()):
        raise ScoringError("scoring message has an invalid batch, round or chunk", code="BadMessage")
    if "batch" in msg and "chunk" not in msg:
        return {"kind": "score", "runId": msg["runId"], "batch": msg["batch"]}
    if "chunk" in msg and "round" in msg and "batch" not in msg:
        return {"kind": "write", "runId": msg["runId"], "round": msg["round"], "chunk": msg["chunk"]}
    raise ScoringError("scoring message needs batch, or round and chunk", code="BadMessage")


def handle_message(ctx: Any, body: bytes | str | Mapping[str, Any]) -> dict[str, Any]:
    """The queue worker: one scoring batch or one write chunk. Raises to have the message retried."""
    msg = parse_message(body)
    if msg["kind"] == "score":
        return score_batch(ctx, msg)
    return write_chunk(ctx, msg)


_doc_cache: OrderedDict[str, Any] = OrderedDict()
_doc_lock = threading.Lock()


def _immutable_doc(blobs: JsonBlobs, path: str) -> Any:
    """A JSON blob that never changes once written (plans, write rounds), cached per process."""
    with _doc_lock:
        if path in _doc_cache:
            _doc_cache.move_to_end(path)
            return _doc_cache[path]
    doc = blobs.read(path)
    if doc is not None:
        with _doc_lock:
            _doc_cache[path] = doc
            while len(_doc_cache) > 256:
                _doc_cache.popitem(last=False)
    return doc


def _plan(blobs: JsonBlobs, run_id: str) -> dict[str, Any]:
    plan = _immutable_doc(blobs, f"{_run_prefix(run_id)}plan.json")
    if plan is None:
        raise ScoringError(f"no scoring run {run_id}", status=404, code="RunNotFound")
    return dict(plan)


def _worker_id() -> str:
    return f"{os.getpid()}-{threading.get_ident()}-{uuid.uuid4().hex[:6]}"


def _claim(blobs: JsonBlobs, path: str, worker: str, done: str) -> tuple[dict[str, Any], str] | None:
    """Take an item's checkpoint (created on first claim); None if it is already `done`. Waits for another
    worker's live claim, up to its expiry (then raises BatchBusy so the message is retried)."""
    deadline = time.monotonic() + CLAIM_SECONDS + 5
    while True:
        doc, etag = blobs.read_with_etag(path)
        doc = doc or {}
        if doc.get("status") == done:
            return None
        now = time.time()
        if doc.get("status") == "claimed" and doc.get("worker") != worker and float(doc.get("until", 0)) > now:
            if time.monotonic() > deadline:
                raise ScoringError(f"{path} stays claimed by {doc.get('worker')}", status=409, code="BatchBusy")
            time.sleep(0.5)
            continue
        new = {
            **doc,
            "status": "claimed",
            "worker": worker,
            "until": now + CLAIM_SECONDS,
            "attempts": int(doc.get("attempts", 0)) + 1,
        }
        try:
            if etag is None:
                new_etag = blobs.write(path, new, create_only=True)
            else:
                new_etag = blobs.write(path, new, etag=etag)
            return new, new_etag
        except (ResourceModifiedError, ResourceExistsError):
            continue


def _release(blobs: JsonBlobs, path: str, worker: str, exc: BaseException) -> None:
    """Give the claim back and keep the error: the poison handler reports it as the item's reason."""
    error = f"{type(exc).__name__}: {str(exc)[:300]}"
    code = getattr(exc, "code", None)
    try:
        doc, etag = blobs.read_with_etag(path)
        if doc and doc.get("worker") == worker and doc.get("status") == "claimed":
            new = {**doc, "status": "pending", "until": 0, "lastError": error, "lastErrorCode": code}
            blobs.write(path, new, etag=etag)
    except Exception:  # noqa: BLE001 - the claim expires anyway
        log.debug("could not release claim on %s", path)


def _superseded(blobs: JsonBlobs, run_id: str) -> dict[str, Any] | None:
    doc = blobs.read(f"{_run_prefix(run_id)}superseded.json")
    return dict(doc) if isinstance(doc, Mapping) else None


# ----------------------------------------------------------------------------------- phase 1: score


def score_batch(
    ctx: Any,
    message: bytes | str | Mapping[str, Any],
    *,
    return_rows: bool = False,
    worker: str | None = None,
) -> dict[str, Any]:
    """Score one batch and stage its changed rows (idempotent). Returns the batch result; raises to have
    it retried. With `return_rows`, the result lists every scored row (the synchronous API)."""
    msg = parse_message(message)
    if msg["kind"] != "score":
        raise ScoringError("not a scoring batch message", code="BadMessage")
    run_id, index = msg["runId"], int(msg["batch"])
    worker = worker or _worker_id()
    blobs = JsonBlobs(ctx.lake_container)
    base = f"{_run_prefix(run_id)}batches/{_batch_name(index)}"
    plan = _plan(blobs, run_id)
    if index >= int(plan.get("batches", 0)):
        raise ScoringError(f"run {run_id} has no batch {index}", status=404, code="BatchNotFound")
    if _superseded(blobs, run_id):
        log.info("scoring run=%s batch=%d dropped: the run was superseded", run_id, index)
        return {"superseded": True}
    claimed = _claim(blobs, base + ".json", worker, done="scored")
    if claimed is None:  # already scored (by us earlier, or another worker)
        log.info("scoring run=%s batch=%d already scored; skipped", run_id, index)
        done = blobs.read(base + ".json") or {}
        _mark(blobs, run_id, f"score-{_batch_name(index)}", {"status": "scored", **(done.get("result") or {})})
        advance(ctx, run_id)
        return {**(done.get("result") or {}), "alreadyDone": True}
    checkpoint, _ = claimed
    started = time.perf_counter()
    try:
        result, rows = _score(ctx, plan, run_id, index, base, want_rows=return_rows)
    except Exception as exc:
        _release(blobs, base + ".json", worker, exc)
        log.warning(
            "scoring run=%s batch=%d failed (attempt %d): %s",
            run_id,
            index,
            checkpoint["attempts"],
            type(exc).__name__,
        )
        raise
    result["seconds"] = round(time.perf_counter() - started, 3)
    blobs.write(
        base + ".json",
        {
            "status": "scored",
            "batch": index,
            "worker": worker,
            "result": result,
            "attempts": checkpoint["attempts"],
            "scoredAt": _iso(_utcnow()),
        },
    )
    _mark(blobs, run_id, f"score-{_batch_name(index)}", {"status": "scored", **result})
    log.info(
        "scoring run=%s batch=%d model=%s scored=%d changed=%d unchanged=%d skipped=%d quota_stopped=%d in %.2f s",
        run_id,
        index,
        result.get("model"),
        result["scored"],
        result["changed"],
        result["unchanged"],
        result["skipped"],
        result["quotaStopped"],
        result["seconds"],
    )
    advance(ctx, run_id)
    if return_rows:
        result = {**result, "rows": rows}
    return result


def _score(
    ctx: Any, plan: Mapping[str, Any], run_id: str, index: int, base: str, *, want_rows: bool = False
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    frame = ctx.lake.read_parquet(base + ".parquet").to_pandas()
    result = _empty_result()
    if frame.empty:
        return result, []
    name, version = str(frame[C_MODEL].iloc[0]), int(frame[C_VERSION].iloc[0])
    model_doc = next((m for m in plan["models"] if m["name"] == name and m["version"] == version), None)
    grade_ranges = tuple(model_doc["gradeRanges"]) if model_doc else None
    result["model"] = f"{name}@{version}"
    ids = frame[C_ID].astype(str).tolist()
    allowed = claim_quota(ctx, plan.get("month") or _utcnow().strftime("%Y-%m"), ids, ctx.settings.monthly_quota)
    if len(allowed) < len(ids):
        result["quotaStopped"] = len(ids) - len(allowed)
        log.warning(
            "scoring run=%s batch=%d: monthly quota of %s reached; %d records not scored",
            run_id,
            index,
            ctx.settings.monthly_quota,
            result["quotaStopped"],
        )
        frame = frame[frame[C_ID].isin(set(allowed))].reset_index(drop=True)
        if frame.empty:
            return result, []
    scorer = load_scorer(ctx, name, version)
    scored = scorer.score(frame)
    skipped = scored.attrs.get("skipped") if hasattr(scored, "attrs") else None
    decided = decide_rows(frame, scored, name, version, grade_ranges, str(plan.get("scoredOn") or ""))
    changed = decided[decided["changed"]]
    result["scored"] = len(scored)
    result["skipped"] = len(frame) - len(scored)
    if skipped:
        result["skipReasons"] = _count_reasons(skipped)
    elif result["skipped"]:
        result["skipReasons"] = {"not scored by the model (invalid record)": result["skipped"]}
    result["changed"] = len(changed)
    result["unchanged"] = len(decided) - len(changed)
    result["staged"] = _stage(ctx, run_id, index, changed)
    return result, _out_rows(decided, name, version) if want_rows else []


def decide_rows(
    frame: pd.DataFrame,
    scored: pd.DataFrame,
    name: str,
    version: int,
    grade_ranges: Sequence[int] | None,
    scored_on: str,
) -> pd.DataFrame:
    """Grade, trend and reasons of every scored row and whether it changed since the last written row.

    Columns: the STAGED_SCHEMA fields + `changed`. Plain lists/numpy, no per-row pandas indexing."""
    from modeling.config import grade_for
    from modeling.scoring import reasons_json

    prev = frame.drop_duplicates(C_ID).set_index(C_ID)
    ids = scored[C_ID].astype(str).str.lower().tolist()
    p = prev.reindex(ids)
    scores = np.clip(scored["score"].to_numpy(dtype=float), 0, 100).astype(int).tolist()
    if grade_ranges:
        grades = [int(grade_for(s, grade_ranges)) for s in scores]
    else:
        grades = scored["grade"].astype(int).tolist()
    texts = [
        r if isinstance(r, str) else reasons_json(name, version, r or {})
        for r in (scored["reasons"].tolist() if "reasons" in scored.columns else [None] * len(ids))
    ]
    too_long = next((i for i, t in enumerate(texts) if len(t) > MAX_REASONS_CHARS), None)
    if too_long is not None:  # the shared serialiser guarantees this; never send more
        raise ScoringError(
            f"reasons for {ids[too_long]} exceed {MAX_REASONS_CHARS} characters", status=500, code="ReasonsTooLong"
        )
    shas = [_sha(t) for t in texts]
    prev_scores = [None if _isnan(v) else float(v) for v in p[C_PREV_SCORE].astype(float).tolist()]
    prev_trends = [None if _isnan(v) else int(v) for v in p[C_PREV_TREND].astype(float).tolist()]
    prev_grades = [None if _isnan(v) else int(v) for v in p[C_PREV_GRADE].astype(float).tolist()]
    prev_shas = p[C_PREV_REASONS].astype(object).tolist()
    trends = [
        decide_trend(ps, pt, s, TREND_TOLERANCE) for ps, pt, s in zip(prev_scores, prev_trends, scores, strict=True)
    ]
    changed = [
        ps is None or int(ps) != s or pg != g or pt != t or psha != sha
        for ps, pg, pt, psha, s, g, t, sha in zip(
            prev_scores, prev_grades, prev_trends, prev_shas, scores, grades, trends, shas, strict=True
        )
    ]
    names = [
        (str(v) if isinstance(v, str) and v else f"Opportunity {i}")[:128]
        for v, i in zip(p[C_NAME].tolist(), ids, strict=True)
    ]
    return pd.DataFrame(
        {
            "opportunityid": ids,
            "batch": 0,
            "model": name,
            "version": int(version),
            "score": scores,
            "grade": grades,
            "trend": trends,
            "previous_score": prev_scores,
            "reasons": texts,
            "reasons_sha": shas,
            "scoredon": scored_on or _utcnow().date().isoformat(),
            "name": names,
            "changed": changed,
        }
    )


def _stage(ctx: Any, run_id: str, index: int, changed: pd.DataFrame) -> list[int]:
    """Store the batch's changed rows as parts of <= WRITE_CHUNK rows; returns the part sizes."""
    sizes = []
    frame = changed.drop(columns=["changed"]).assign(batch=index)
    parts = [frame.iloc[s : s + WRITE_CHUNK] for s in range(0, len(frame), WRITE_CHUNK)]
    _parallel(
        lambda item: ctx.lake.write_parquet(
            f"{_run_prefix(run_id)}staged/{_batch_name(index)}/{item[0]:03d}.parquet",
            pa.Table.from_pandas(item[1], schema=STAGED_SCHEMA, preserve_index=False),
        ),
        list(enumerate(parts)),
    )
    sizes = [len(p) for p in parts]
    return sizes


def _out_rows(decided: pd.DataFrame, name: str, version: int) -> list[dict[str, Any]]:
    return [
        {
            "opportunityId": r["opportunityid"],
            "score": r["score"],
            "grade": r["grade"],
            "trend": r["trend"],
            "previousScore": r["previous_score"],
            "changed": bool(r["changed"]),
            "model": f"{name}@{version}",
            "reasons": r["reasons"],
        }
        for r in decided.to_dict("records")
    ]


def _empty_result() -> dict[str, Any]:
    return {
        "model": None,
        "scored": 0,
        "changed": 0,
        "unchanged": 0,
        "skipped": 0,
        "quotaStopped": 0,
        "staged": [],
    }


def _count_reasons(skipped: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    items = skipped.to_dict("records") if isinstance(skipped, pd.DataFrame) else list(skipped)
    for item in items:
        reason = str(item.get("reason", "invalid record")) if isinstance(item, Mapping) else str(item)
        counts[reason] = counts.get(reason, 0) + 1
    return counts


# ----------------------------------------------------------------------------------- phase 2: write


def plan_writes(
    ctx: Any,
    run_id: str,
    results: Mapping[int, Mapping[str, Any]],
    rounds: Sequence[Mapping[str, Any]],
) -> tuple[str, dict[str, Any] | None]:
    """Cut the staged rows of scored batches not yet in a write round into chunks of exactly WRITE_CHUNK
    rows (the last one smaller), in batch order, and record them as the next round after `rounds` (the
    caller's snapshot; create-only, so when two workers race exactly one round is made).
    Returns ("created", round), ("nothing", None) when every scored batch is in a round already, or
    ("raced", None) when another worker made the round."""
    blobs = JsonBlobs(ctx.lake_container)
    included = {int(b) for r in rounds for b in r.get("batches", [])}
    new = sorted(i for i, res in results.items() if res.get("status") == "scored" and i not in included)
    slices: list[tuple[int, int, int, int]] = []  # (batch, part, start, stop)
    for i in new:
        for part, size in enumerate(results[i].get("staged") or []):
            if size:
                slices.append((i, part, 0, int(size)))
    if not new:
        return "nothing", None
    chunks: list[list[list[int]]] = [[]]
    room = WRITE_CHUNK
    for batch, part, start, stop in slices:
        while start < stop:
            if room == 0:
                chunks.append([])
                room = WRITE_CHUNK
            take = min(room, stop - start)
            chunks[-1].append([batch, part, start, start + take])
            start += take
            room -= take
    chunks = [c for c in chunks if c]
    doc = {
        "round": len(rounds),
        "batches": new,
        "chunks": chunks,
        "rows": sum(s[3] - s[2] for c in chunks for s in c),
        "createdAt": _iso(_utcnow()),
    }
    try:
        blobs.write(f"{_run_prefix(run_id)}writes/round-{doc['round']:03d}.json", doc, create_only=True)
    except ResourceExistsError:
        log.info("scoring run=%s: write round %d planned by another worker", run_id, doc["round"])
        return "raced", None
    log.info(
        "scoring run=%s write round %d: %d rows in %d chunks of <= %d",
        run_id,
        doc["round"],
        doc["rows"],
        len(chunks),
        WRITE_CHUNK,
    )
    return "created", doc


def _rounds(blobs: JsonBlobs, run_id: str) -> list[dict[str, Any]]:
    paths = sorted(p for p in blobs.list(f"{_run_prefix(run_id)}writes/round-") if p.endswith(".json"))
    return [dict(d) for d in _parallel(lambda p: _immutable_doc(blobs, p), paths) if d is not None]


def enqueue_chunks(ctx: Any, run_id: str, round_no: int, chunks: Iterable[int]) -> int:
    return _send(ctx, [{"runId": run_id, "round": round_no, "chunk": k} for k in chunks])


def write_chunk(ctx: Any, message: bytes | str | Mapping[str, Any], *, worker: str | None = None) -> dict[str, Any]:
    """Upsert one chunk (<= 1,000 rows) through one $batch request, record it in the score history and
    mark it written (idempotent; raises BatchFailed to have it retried)."""
    msg = parse_message(message)
    if msg["kind"] != "write":
        raise ScoringError("not a write chunk message", code="BadMessage")
    run_id, round_no, k = msg["runId"], int(msg["round"]), int(msg["chunk"])
    worker = worker or _worker_id()
    blobs = JsonBlobs(ctx.lake_container)
    _plan(blobs, run_id)
    round_doc = _immutable_doc(blobs, f"{_run_prefix(run_id)}writes/round-{round_no:03d}.json")
    if round_doc is None or k >= len(round_doc["chunks"]):
        raise ScoringError(f"run {run_id} has no write chunk {round_no}/{k}", status=404, code="ChunkNotFound")
    if _superseded(blobs, run_id):
        log.info("scoring run=%s chunk=%d/%d dropped: the run was superseded", run_id, round_no, k)
        return {"superseded": True}
    name = _chunk_name(round_no, k)
    path = f"{_run_prefix(run_id)}chunks/{name}.json"
    claimed = _claim(blobs, path, worker, done="written")
    if claimed is None:
        log.info("scoring run=%s chunk=%s already written; skipped", run_id, name)
        done = blobs.read(path) or {}
        _mark(blobs, run_id, f"write-{name}", {"status": "written", **(done.get("result") or {})})
        advance(ctx, run_id)
        return {**(done.get("result") or {}), "alreadyDone": True}
    checkpoint, _ = claimed
    started = time.perf_counter()
    try:
        result = _write(ctx, run_id, round_no, k, round_doc["chunks"][k])
    except Exception as exc:
        _release(blobs, path, worker, exc)
        log.warning(
            "scoring run=%s chunk=%s failed (attempt %d): %s", run_id, name, checkpoint["attempts"], type(exc).__name__
        )
        raise
    result["seconds"] = round(time.perf_counter() - started, 3)
    blobs.write(
        path,
        {
            "status": "written",
            "round": round_no,
            "chunk": k,
            "worker": worker,
            "result": result,
            "attempts": checkpoint["attempts"],
            "writtenAt": _iso(_utcnow()),
        },
    )
    _mark(blobs, run_id, f"write-{name}", {"status": "written", **result})
    log.info("scoring run=%s chunk=%s written=%d in %.2f s", run_id, name, result["written"], result["seconds"])
    advance(ctx, run_id)
    return result


def _write(ctx: Any, run_id: str, round_no: int, k: int, slices: Sequence[Sequence[int]]) -> dict[str, Any]:
    parts = sorted({(int(b), int(p)) for b, p, _, _ in slices})
    tables = dict(
        zip(
            parts,
            _parallel(
                lambda bp: ctx.lake.read_parquet(
                    f"{_run_prefix(run_id)}staged/{_batch_name(bp[0])}/{bp[1]:03d}.parquet"
                ),
                parts,
            ),
            strict=True,
        )
    )
    staged = pa.concat_tables(
        [tables[(int(b), int(p))].slice(int(s), int(e) - int(s)) for b, p, s, e in slices]
    ).to_pandas()
    rows = [
        {
            "msdyn_name": r["name"],
            "msdyn_entityid": r["opportunityid"],
            "msdyn_entitytype": ENTITY_TYPE,
            "msdyn_score": int(r["score"]),
            "msdyn_grade": int(r["grade"]),
            "msdyn_scoretrend": int(r["trend"]),
            "msdyn_scoredon": r["scoredon"],
            "msdyn_scorereasons": r["reasons"],
        }
        for r in staged.to_dict("records")
    ]
    responses = write_rows(ctx, rows)
    failed = [r for r in responses if not _ok(r)]
    if failed:
        first = failed[0]
        raise BatchFailed(
            f"{len(failed)} of {len(rows)} upserts failed; first: "
            f"{getattr(first, 'status', '?')} {str(getattr(first, 'error', '') or '')[:200]}"
        )
    history = staged.drop(columns=["name"]).assign(run_id=run_id, written_at=pd.Timestamp(_utcnow()))
    ctx.lake.write_parquet(
        f"scoring/history/{run_id}/chunk-{_chunk_name(round_no, k)}.parquet",
        pa.Table.from_pandas(history, schema=HISTORY_SCHEMA, preserve_index=False),
    )
    return {"written": len(rows), "requests": 1 if rows else 0}


def _ok(response: Any) -> bool:
    status = getattr(response, "status", None)
    if status is None and isinstance(response, Mapping):
        status = response.get("status")
    return isinstance(status, int) and 200 <= status < 300


# -------------------------------------------------------------------------------- progress and finish


def _mark(blobs: JsonBlobs, run_id: str, item: str, doc: Mapping[str, Any]) -> None:
    """A terminal marker (scored / written / failed): listing `done/` is the run's progress, so workers
    never contend on one progress blob."""
    blobs.write(f"{_run_prefix(run_id)}done/{item}.json", {**doc, "at": _iso(_utcnow())})


def _markers(blobs: JsonBlobs, run_id: str, kind: str) -> list[str]:
    return [p for p in blobs.list(f"{_run_prefix(run_id)}done/{kind}-") if p.endswith(".json")]


def _read_markers(blobs: JsonBlobs, paths: Sequence[str]) -> dict[str, dict[str, Any]]:
    docs = _parallel(blobs.read, list(paths))
    return {p.rsplit("/", 1)[-1][: -len(".json")]: dict(d or {}) for p, d in zip(paths, docs, strict=True)}


def advance(ctx: Any, run_id: str) -> str:
    """Move the run on after an item finished: when every scoring batch is scored (or failed) and every
    chunk of the existing rounds is written (or failed), plan the next write round, or finish the run.
    Cheap while items are outstanding (two blob listings). Returns what it did."""
    blobs = JsonBlobs(ctx.lake_container)
    plan = _plan(blobs, run_id)
    if _superseded(blobs, run_id):
        return "superseded"
    score_paths = _markers(blobs, run_id, "score")
    if len(score_paths) < int(plan.get("batches", 0)):
        return "scoring"
    rounds = _rounds(blobs, run_id)
    if len(_markers(blobs, run_id, "write")) < sum(len(r["chunks"]) for r in rounds):
        return "writing"
    results = {int(k.split("-", 1)[1]): v for k, v in _read_markers(blobs, score_paths).items()}
    what, new = plan_writes(ctx, run_id, results, rounds)
    if what == "raced":
        return "writing"
    if new is not None:
        if not new["chunks"]:  # the new batches changed nothing: the round is complete as made
            return advance(ctx, run_id)
        if not plan.get("inline"):
            enqueue_chunks(ctx, run_id, new["round"], range(len(new["chunks"])))
        return "writing"
    finish_run(ctx, run_id)
    return "finished"


def run_report(ctx: Any, run_id: str) -> dict[str, Any]:
    """Counts so far (or final): eligible, scored, changed, written, unchanged, skipped with reasons,
    quota, write requests and chunks, and the failed items with their reasons."""
    blobs = JsonBlobs(ctx.lake_container)
    plan = _plan(blobs, run_id)
    score = _read_markers(blobs, _markers(blobs, run_id, "score"))
    write = _read_markers(blobs, _markers(blobs, run_id, "write"))
    rounds = _rounds(blobs, run_id)
    totals = {"scored": 0, "changed": 0, "unchanged": 0, "skipped": 0, "quotaStopped": 0}
    reasons: dict[str, int] = {}
    failures: list[dict[str, Any]] = []
    for item, res in sorted(score.items()):
        if res.get("status") == "failed":
            failures.append(_failure(item, res))
            continue
        for k in totals:
            totals[k] += int(res.get(k, 0) or 0)
        for r, c in (res.get("skipReasons") or {}).items():
            reasons[r] = reasons.get(r, 0) + int(c)
    written = requests = 0
    for item, res in sorted(write.items()):
        if res.get("status") == "failed":
            failures.append(_failure(item, res))
            continue
        written += int(res.get("written", 0) or 0)
        requests += int(res.get("requests", 0) or 0)
    report = {
        "runId": run_id,
        "actor": plan.get("actor"),
        "createdAt": plan.get("createdAt"),
        "asOf": plan.get("asOf"),
        "models": plan.get("models", []),
        "eligible": plan.get("eligible", 0),
        **totals,
        "written": written,
        "skipReasons": reasons,
        "ineligible": plan.get("ineligible", {}),
        "notScored": plan.get("notScored", []),
        "batches": plan.get("batches", 0),
        "batchesDone": sum(1 for r in score.values() if r.get("status") == "scored"),
        "writeRounds": len(rounds),
        "writeChunks": sum(len(r["chunks"]) for r in rounds),
        "chunksDone": sum(1 for r in write.values() if r.get("status") == "written"),
        "writeRequests": requests,
        "failures": failures,
        "quota": plan.get("quota"),
        "quotaReached": totals["quotaStopped"] > 0,
    }
    if totals["quotaStopped"]:
        report["message"] = (
            f"monthly quota of {plan.get('quota')} scored records reached: "
            f"{totals['quotaStopped']} eligible records were not scored"
        )
    return report


def _failure(item: str, res: Mapping[str, Any]) -> dict[str, Any]:
    kind, _, ident = item.partition("-")
    out: dict[str, Any] = {"phase": kind, "reason": res.get("reason"), "attempts": res.get("attempts")}
    if kind == "score":
        out["batch"] = int(ident)
    else:
        r, c = ident.split("-")
        out["round"], out["chunk"] = int(r), int(c)
    return out


def finish_run(ctx: Any, run_id: str, *, superseded_by: str | None = None) -> dict[str, Any]:
    """Write the report and complete the run's job: `succeeded`; `failed` with code `BatchesFailed` and the
    failures listed in the result when an item was poisoned; `failed` with code `Superseded` when a later
    scheduled run replaced it. Safe to call twice (the same report is rewritten)."""
    blobs = JsonBlobs(ctx.lake_container)
    report = run_report(ctx, run_id)
    plan = _plan(blobs, run_id)
    try:
        created = dt.datetime.fromisoformat(str(plan.get("createdAt")))
        report["durationSeconds"] = round((_utcnow() - created).total_seconds(), 3)
    except (TypeError, ValueError):
        report["durationSeconds"] = None
    report["finishedAt"] = _iso(_utcnow())
    if superseded_by:
        report["status"], report["final"] = "superseded", True
        report["supersededBy"] = superseded_by
        error = {"code": "Superseded", "message": f"replaced by scoring run {superseded_by} before it finished"}
    elif report["failures"]:
        report["status"], report["final"] = "failed", False
        n = len(report["failures"])
        first = report["failures"][0]
        error = {
            "code": "BatchesFailed",
            "message": f"{n} item(s) failed after retries (first: {first['phase']} "
            f"{first.get('batch', first.get('chunk'))}: {first.get('reason')}); "
            f'POST /api/score {{"resume": "{run_id}"}} retries them',
        }
    else:
        report["status"], report["final"] = "succeeded", True
        error = None
    if report["final"]:
        report["scratchDeleted"] = drop_scratch(ctx, run_id)
    blobs.write(f"{_run_prefix(run_id)}report.json", report)
    blobs.write(f"reports/scoring/{run_id}.json", report)
    if report["quotaReached"]:
        log.warning("scoring run=%s stopped by the monthly quota: %s", run_id, report["message"])
    log.info(
        "scoring run=%s %s: eligible=%d scored=%d changed=%d written=%d unchanged=%d skipped=%d "
        "quota_stopped=%d write_requests=%d failures=%d",
        run_id,
        report["status"],
        report["eligible"],
        report["scored"],
        report["changed"],
        report["written"],
        report["unchanged"],
        report["skipped"],
        report["quotaStopped"],
        report["writeRequests"],
        len(report["failures"]),
    )
    try:
        if error is None:
            ctx.jobs.succeed(run_id, report)
        else:
            ctx.jobs.update(run_id, status="failed", error=error, result=report, finishedAt=report["finishedAt"])
    except Exception as exc:  # noqa: BLE001 - runs planned without a job (job=False) have none
        log.debug("run %s has no job to complete: %s", run_id, type(exc).__name__)
    return report


def drop_scratch(ctx: Any, run_id: str) -> int:
    """Delete a final run's working data (batch frames, staged rows: the Parquet under batches/ and
    staged/), which nothing reads once the run is final; the lake would otherwise grow by a copy of every
    eligible opportunity each day. The JSON checkpoints and markers stay (a redelivered message still finds
    its item done), and so do the plan, the report and the score history. Returns the blobs deleted."""
    blobs = JsonBlobs(ctx.lake_container)
    prefix = _run_prefix(run_id)
    paths = [
        p
        for sub in ("batches/", "staged/")
        for p in blobs.list(prefix + sub)
        if p.endswith(".parquet")
    ]
    return sum(_parallel(blobs.delete, paths))


# -------------------------------------------------------------------------------------------- poison


def record_poisoned(ctx: Any, body: bytes | str | Mapping[str, Any]) -> dict[str, Any] | None:
    """A message the host gave up on (`<queue>-poison`): record its batch or chunk as failed with the
    last error its worker saved, then move the run on (it finishes `failed` with the failures listed
    once every item is done or failed). Never raises for a bad message: it is logged and dropped."""
    try:
        msg = parse_message(body)
    except ScoringError as exc:
        log.warning("poisoned scoring message dropped: %s", exc)
        return None
    run_id = msg["runId"]
    blobs = JsonBlobs(ctx.lake_container)
    try:
        _plan(blobs, run_id)
    except ScoringError:
        log.warning("poisoned message of unknown scoring run=%s dropped", run_id)
        return None
    if msg["kind"] == "score":
        item, path, done = (
            f"score-{_batch_name(msg['batch'])}",
            f"{_run_prefix(run_id)}batches/{_batch_name(msg['batch'])}.json",
            "scored",
        )
    else:
        name = _chunk_name(msg["round"], msg["chunk"])
        item, path, done = f"write-{name}", f"{_run_prefix(run_id)}chunks/{name}.json", "written"
    checkpoint = blobs.read(path) or {}
    if checkpoint.get("status") == done:  # a late duplicate of an item that succeeded after all
        log.info("poisoned message for scoring run=%s %s ignored: it is %s", run_id, item, done)
        return None
    reason = checkpoint.get("lastError") or "no error recorded (the worker died or timed out)"
    failed = {
        "status": "failed",
        "reason": reason,
        "code": checkpoint.get("lastErrorCode"),
        "attempts": checkpoint.get("attempts", 0),
    }
    blobs.write(path, {**checkpoint, **failed, "until": 0})
    _mark(blobs, run_id, item, failed)
    log.error("scoring run=%s %s failed after %s attempts: %s", run_id, item, failed["attempts"], reason)
    advance(ctx, run_id)
    return failed


# ------------------------------------------------------------------------------ resume and supersede


def resume_run(ctx: Any, run_id: str) -> dict[str, Any]:
    """Re-enqueue every item of a run that is not done: scoring batches not scored, chunks of existing
    write rounds not written (failed ones included: their failure markers are cleared), then move the
    run on (plans the next write round or finishes when nothing was outstanding)."""
    if not isinstance(run_id, str) or not RUN_ID_RE.fullmatch(run_id):
        raise ScoringError("resume needs the runId of an earlier run", code="InvalidRunId")
    blobs = JsonBlobs(ctx.lake_container)
    plan = _plan(blobs, run_id)
    if _superseded(blobs, run_id):
        raise ScoringError(f"scoring run {run_id} was superseded; start a new run", status=409, code="Superseded")
    score = _read_markers(blobs, _markers(blobs, run_id, "score"))
    write = _read_markers(blobs, _markers(blobs, run_id, "write"))
    pending = [
        i
        for i in range(int(plan.get("batches", 0)))
        if score.get(f"score-{_batch_name(i)}", {}).get("status") != "scored"
    ]
    chunks: list[tuple[int, int]] = []
    for r in _rounds(blobs, run_id):
        for k in range(len(r["chunks"])):
            if write.get(f"write-{_chunk_name(r['round'], k)}", {}).get("status") != "written":
                chunks.append((int(r["round"]), k))
    stale = [f"score-{_batch_name(i)}" for i in pending] + [f"write-{_chunk_name(r, k)}" for r, k in chunks]
    for item in stale:
        blobs.delete(f"{_run_prefix(run_id)}done/{item}.json")
    enqueue_batches(ctx, run_id, pending)
    _send(ctx, [{"runId": run_id, "round": r, "chunk": k} for r, k in chunks])
    if pending or chunks:
        try:
            ctx.jobs.update(run_id, status="running", error=None)
        except Exception as exc:  # noqa: BLE001 - runs without a job
            log.debug("run %s has no job: %s", run_id, type(exc).__name__)
    log.info("scoring run=%s resumed: %d batches and %d chunks re-enqueued", run_id, len(pending), len(chunks))
    state = "resumed" if (pending or chunks) else advance(ctx, run_id)
    return {"runId": run_id, "reenqueued": pending, "chunks": [list(c) for c in chunks], "state": state}


def unfinished_runs(ctx: Any) -> list[str]:
    """Runs that are not final: no report yet, or a failed one (a resume could still complete them)."""
    names = ctx.lake_container.walk_blobs(name_starts_with="scoring/runs/", delimiter="/")
    blobs = JsonBlobs(ctx.lake_container)
    run_ids = [getattr(i, "name", str(i))[len("scoring/runs/") :].rstrip("/") for i in names]
    run_ids = [r for r in run_ids if r]
    reports = _parallel(lambda r: blobs.read(f"{_run_prefix(r)}report.json"), run_ids)
    return [r for r, rep in zip(run_ids, reports, strict=True) if not (isinstance(rep, Mapping) and rep.get("final"))]


def supersede_run(ctx: Any, run_id: str, by: str) -> dict[str, Any]:
    """Mark an unfinished run as replaced by run `by`: workers drop its remaining messages, its job fails
    with code Superseded, and its report becomes final (what it wrote stays in the score history)."""
    blobs = JsonBlobs(ctx.lake_container)
    blobs.write(f"{_run_prefix(run_id)}superseded.json", {"by": by, "at": _iso(_utcnow())})
    if blobs.read(f"{_run_prefix(run_id)}plan.json") is not None:
        return finish_run(ctx, run_id, superseded_by=by)
    # killed while planning: no plan, so nothing was enqueued or written; close it all the same
    report = {"runId": run_id, "status": "superseded", "final": True, "supersededBy": by, "finishedAt": _iso(_utcnow())}
    blobs.write(f"{_run_prefix(run_id)}report.json", report)
    try:
        ctx.jobs.update(
            run_id,
            status="failed",
            error={"code": "Superseded", "message": f"replaced by scoring run {by} while it was planned"},
            result=report,
        )
    except Exception as exc:  # noqa: BLE001 - runs without a job
        log.debug("run %s has no job: %s", run_id, type(exc).__name__)
    return report


def scheduled_run(ctx: Any, *, actor: str = "timer") -> dict[str, Any]:
    """The timer's run. Earlier runs that never finished (killed, or failed after retries) are superseded
    rather than resumed: the new run rescores everything from the current lake snapshot, against the
    score history that already holds whatever they wrote, so resuming them would only write stale
    scores that the new run overwrites."""
    stale = unfinished_runs(ctx)
    run_id = uuid.uuid4().hex
    for old in stale:
        try:
            supersede_run(ctx, old, run_id)
        except Exception as exc:  # noqa: BLE001 - a broken old run must not stop today's run
            log.warning("scoring run=%s could not be superseded: %s", old, type(exc).__name__)
    if stale:
        log.warning("scoring: %d unfinished runs superseded by run=%s: %s", len(stale), run_id, ",".join(stale[:5]))
    plan = plan_run(ctx, actor=actor, run_id=run_id)
    return {**plan, "superseded": stale}


# ------------------------------------------------------------------------------------------- quota


def claim_quota(ctx: Any, month: str, ids: Sequence[str], limit: int | None) -> list[str]:
    """Ids of this batch that may be scored this calendar month. Counts DISTINCT opportunities scored in
    the month (rescoring one already counted is free); claimed durably, before scoring, with ETags."""
    if limit is None:
        return list(ids)
    blobs = JsonBlobs(ctx.lake_container)
    path = f"scoring/quota/{month}.json"
    for _ in range(50):
        doc, etag = blobs.read_with_etag(path)
        doc = doc or {"month": month, "limit": limit, "ids": []}
        counted = set(doc.get("ids", []))
        room = max(0, limit - len(counted))
        allowed = []
        new = []
        for i in ids:
            if i in counted:
                allowed.append(i)
            elif room > 0:
                allowed.append(i)
                new.append(i)
                room -= 1
        if not new:
            return allowed
        doc = {
            **doc,
            "limit": limit,
            "ids": sorted(counted | set(new)),
            "used": len(counted) + len(new),
            "updated_at": _iso(_utcnow()),
        }
        try:
            if etag is None:
                blobs.write(path, doc, create_only=True)
            else:
                blobs.write(path, doc, etag=etag)
            return allowed
        except (ResourceModifiedError, ResourceExistsError):
            time.sleep(0.05)
    raise ScoringError("the quota counter kept changing; try again", status=503, code="QuotaBusy")


def quota_usage(ctx: Any, month: str) -> dict[str, Any]:
    doc = JsonBlobs(ctx.lake_container).read(f"scoring/quota/{month}.json") or {}
    return {"month": month, "limit": ctx.settings.monthly_quota, "used": len(doc.get("ids", []))}


def score_now(ctx: Any, ids: Sequence[str], *, actor: str = "anonymous") -> tuple[int, dict[str, Any]]:
    """Score listed ids. At most SYNC_LIMIT: scored and written now -> (200, scores). More: a queued
    run -> (202, job)."""
    ids = validate_ids(list(ids))
    if len(ids) > SYNC_LIMIT:
        plan = plan_run(ctx, opportunity_ids=ids, actor=actor)
        return 202, {"job": ctx.jobs.get(plan["runId"]), "run": _plan_summary(plan)}
    plan = plan_run(ctx, opportunity_ids=ids, actor=actor, enqueue=False)
    rows = run_inline(ctx, plan["runId"])
    scores = [decode_row_dict(r) for r in rows]
    report = run_report(ctx, plan["runId"])
    return 200, {
        "runId": plan["runId"],
        "scores": scores,
        "notScored": plan["notScored"],
        "quotaStopped": report["quotaStopped"],
        "message": report.get("message"),
    }


def run_inline(ctx: Any, run_id: str) -> list[dict[str, Any]]:
    """Execute a run planned with `enqueue=False` in this process (both phases); returns every scored row
    (`written` tells whether it changed and was written)."""
    blobs = JsonBlobs(ctx.lake_container)
    plan = _plan(blobs, run_id)
    rows: list[dict[str, Any]] = []
    for i in range(int(plan["batches"])):
        rows.extend(score_batch(ctx, {"runId": run_id, "batch": i}, return_rows=True).get("rows", []))
    for r in _rounds(blobs, run_id):
        for k in range(len(r["chunks"])):
            write_chunk(ctx, {"runId": run_id, "round": r["round"], "chunk": k})
    return rows


def _plan_summary(plan: Mapping[str, Any]) -> dict[str, Any]:
    return {k: plan.get(k) for k in ("runId", "eligible", "batches", "models", "notScored", "asOf")}


def decode_row_dict(r: Mapping[str, Any]) -> dict[str, Any]:
    reasons = _parse_reasons(r.get("reasons"))
    return {
        "opportunityId": r["opportunityId"],
        "score": r["score"],
        "grade": GRADE_LABELS[int(r["grade"])],
        "trend": TREND_LABELS[int(r["trend"])],
        "previousScore": r.get("previousScore"),
        "model": r.get("model"),
        "written": r.get("changed"),
        "reasons": reasons,
    }


def _parse_reasons(text: Any) -> Any:
    if not isinstance(text, str) or not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return {"raw": text}


def get_score(ctx: Any, opportunity_id: str) -> dict[str, Any]:
    """The current msdyn_predictivescore row of an opportunity, decoded for the widget."""
    from functions.http import BadRequest, NotFound

    if not isinstance(opportunity_id, str) or not GUID_RE.match(opportunity_id):
        raise BadRequest(f"opportunity id {opportunity_id!r} is not a GUID", code="InvalidOpportunityId")
    opp_id = opportunity_id.lower()
    select = "msdyn_score,msdyn_grade,msdyn_scoretrend,msdyn_scoredon,msdyn_scorereasons,msdyn_name"
    try:
        row = ctx.dataverse.get(alternate_key_path(opp_id), params={"$select": select})
    except Exception as exc:
        if getattr(exc, "status", None) == 404:
            raise NotFound(f"opportunity {opp_id} has no score", code="ScoreNotFound") from exc
        raise
    return decode_dataverse_row(opp_id, row)


def decode_dataverse_row(opp_id: str, row: Mapping[str, Any]) -> dict[str, Any]:
    reasons = _parse_reasons(row.get("msdyn_scorereasons"))
    model = None
    if isinstance(reasons, Mapping) and reasons.get("model"):
        model = f"{reasons.get('model')}@{reasons.get('version')}"
    grade = row.get("msdyn_grade")
    trend = row.get("msdyn_scoretrend")
    return {
        "opportunityId": opp_id,
        "score": row.get("msdyn_score"),
        "grade": GRADE_LABELS[grade] if isinstance(grade, int) and 0 <= grade < 4 else None,
        "gradeValue": grade,
        "trend": TREND_LABELS[trend] if isinstance(trend, int) and 0 <= trend < 4 else None,
        "trendValue": trend,
        "scoredOn": row.get("msdyn_scoredon"),
        "model": model,
        "reasons": reasons,
    }


# keep the public names in one place for readers
__all__ = [
    "SCORE_BATCH_SIZE",
    "WRITE_CHUNK",
    "SYNC_LIMIT",
    "TREND_TOLERANCE",
    "ScoringError",
    "BatchFailed",
    "PublishedModel",
    "plan_run",
    "scheduled_run",
    "handle_message",
    "score_batch",
    "plan_writes",
    "write_chunk",
    "advance",
    "record_poisoned",
    "finish_run",
    "run_report",
    "resume_run",
    "supersede_run",
    "run_inline",
    "score_now",
    "get_score",
    "claim_quota",
    "quota_usage",
    "model_priority",
    "decide_trend",
    "decide_rows",
    "validate_ids",
    "alternate_key_path",
    "load_previous",
    "unfinished_runs",
    "parse_message",
    "decode_dataverse_row",
]
