"""Scoring runs: plan (eligibility, model choice, batches on a queue), score and write each batch, report.

A run is planned once and executed by many queue-triggered workers:

1. `plan_run` reads the lake's current tables once, builds the scoring frame of every published model
   with the shared `modeling.dataset` code (eligibility: open, filter, BPF, created within 2 years as of
   the lake snapshot), gives each eligible opportunity exactly ONE model (rule in `model_priority`),
   joins the last written score of each opportunity (from the score history in the lake), and stores
   one Parquet file + one checkpoint blob per batch before sending one queue message per batch.
2. `score_batch` (one message) claims the batch's checkpoint, claims quota, scores with the shared
   `modeling.scoring.Scorer` (model version cached per process by name@version), computes the trend
   against the last written score, upserts ONLY changed rows through `$batch` on the alternate key,
   appends what it wrote to the score history (one Parquet file per batch) and checkpoints. A batch
   already checkpointed as written is skipped, so redelivered or re-enqueued messages never write twice;
   a batch that fails raises, so the host retries it and finally moves it to the poison queue.
3. The worker that completes the last batch writes the run report and finishes the job.

Layout in the lake container (all under `scoring/`):
```
scoring/runs/<run>/plan.json                 # the plan: models, counts, skip reasons, batch count
scoring/runs/<run>/batches/<NNNNN>.parquet   # a batch's scoring frame + previous score columns
scoring/runs/<run>/batches/<NNNNN>.json      # its checkpoint: pending | claimed | written (+ result)
scoring/runs/<run>/progress.json             # finished batches (ETag-conditioned set)
scoring/runs/<run>/report.json               # the final report (also reports/scoring/<run>.json)
scoring/history/<run>/batch-<NNNNN>.parquet  # every row written: what, when, by which model version
scoring/state/manifest.json                  # compacted last-written score per opportunity ...
scoring/state/scores-<run>.parquet           # ... and the finished runs folded into it
scoring/quota/<YYYY-MM>.json                 # ids scored this calendar month (only with a quota)
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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError

from connectors.blobs import JsonBlobs

log = logging.getLogger(__name__)

ENTITY_TYPE = "opportunity"
ENTITY_SET = "msdyn_predictivescores"
BATCH_SIZE = 1000  # ids per queue message; also Dataverse's $batch limit per request
SYNC_LIMIT = 20  # POST /api/score with at most this many ids is answered synchronously
CLAIM_SECONDS = 30  # a worker's claim on a batch; another worker takes over after it expires
TREND_TOLERANCE = 3  # |new - previous| <= 3 points is "Steady"
MAX_REASONS_CHARS = 10_000
GRADE_LABELS = ("A", "B", "C", "D")
TREND_LABELS = ("Improving", "Steady", "Declining", "Not enough info")
GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

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


class ScoringError(Exception):
    """A scoring request that cannot be served; carries an HTTP status and a code."""

    status = 400
    code = "ScoringError"

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None, **details: Any):
        super().__init__(message)
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.details = details or None


class BatchFailed(ScoringError):
    """A batch could not be written; raised so the queue host retries it (and finally poisons it)."""

    status = 502
    code = "BatchWriteFailed"


# ------------------------------------------------------------------------------------------------ helpers


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat(timespec="seconds")


def _batch_name(i: int) -> str:
    return f"{i:05d}"


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

    Runs that have finished are folded into a new compacted state (written by this call when `fold`)."""
    blobs = JsonBlobs(ctx.lake_container)
    manifest, etag = blobs.read_with_etag("scoring/state/manifest.json")
    manifest = manifest or {"snapshot": None, "runs": []}
    folded = set(manifest.get("runs", []))
    parts: list[pd.DataFrame] = []
    if manifest.get("snapshot"):
        parts.append(ctx.lake.read_parquet(manifest["snapshot"]).to_pandas())
    newly_finished: list[str] = []
    for run_id in _history_runs(ctx):
        if run_id in folded or run_id == exclude_run:
            continue
        for path in sorted(ctx.lake.list(f"scoring/history/{run_id}/")):
            if path.endswith(".parquet"):
                parts.append(ctx.lake.read_parquet(path).to_pandas())
        if blobs.read(f"{_run_prefix(run_id)}report.json") is not None:
            newly_finished.append(run_id)
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
    if fold and newly_finished:
        _fold(ctx, blobs, hist, sorted(folded | set(newly_finished)), etag)
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


def _fold(ctx: Any, blobs: JsonBlobs, state: pd.DataFrame, runs: list[str], etag: str | None) -> None:
    path = f"scoring/state/scores-{uuid.uuid4().hex[:12]}.parquet"
    table = pa.Table.from_pandas(state, preserve_index=False)
    ctx.lake.write_parquet(path, table)
    doc = {"snapshot": path, "runs": runs, "rows": len(state), "updated_at": _iso(_utcnow())}
    try:
        if etag is None:
            blobs.write("scoring/state/manifest.json", doc, create_only=True)
        else:
            blobs.write("scoring/state/manifest.json", doc, etag=etag)
        log.info("score state compacted: %d rows, %d runs folded", len(state), len(runs))
    except (ResourceModifiedError, ResourceExistsError):
        log.info("score state changed concurrently; compaction left to the next run")


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
    batch_size: int = BATCH_SIZE,
    now: dt.datetime | None = None,
    job: bool = True,
) -> dict[str, Any]:
    """Plan a scoring run and send one queue message per batch. Returns the plan document.

    `opportunity_ids` limits the run to those ids (each still has to be eligible; the others are
    reported with a reason). `enqueue=False` plans without sending (the synchronous path)."""
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
    for i, frame in enumerate(plan.batches):
        path = f"{_run_prefix(run_id)}batches/{_batch_name(i)}"
        ctx.lake.write_parquet(path + ".parquet", _to_arrow(frame))
        blobs.write(path + ".json", {"status": "pending", "batch": i, "rows": len(frame)})
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
    sender = ctx.queue(ctx.settings.scoring_queue)
    n = 0
    for i in batches:
        sender.send({"runId": run_id, "batch": i})
        n += 1
    return n


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
                fixed[col] = (
                    fixed[col].map(lambda v: None if v is None or _isnan(v) else str(v)).astype(object)
                )
        return pa.Table.from_pandas(fixed, preserve_index=False)


# --------------------------------------------------------------------------------------- the worker


def parse_message(body: bytes | str | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(body, Mapping):
        msg = dict(body)
    else:
        try:
            msg = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ScoringError(f"scoring message is not JSON: {exc}", code="BadMessage") from exc
    if (
        not isinstance(msg, dict)
        or not isinstance(msg.get("runId"), str)
        or not isinstance(msg.get("batch"), int)
    ):
        raise ScoringError("scoring message needs runId (str) and batch (int)", code="BadMessage")
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", msg["runId"]) or msg["batch"] < 0:
        raise ScoringError("scoring message has an invalid runId or batch", code="BadMessage")
    return msg


def score_batch(
    ctx: Any,
    message: bytes | str | Mapping[str, Any],
    *,
    return_rows: bool = False,
    worker: str | None = None,
) -> dict[str, Any]:
    """Score and write one batch (idempotent). Returns the batch result; raises to have it retried."""
    msg = parse_message(message)
    run_id, index = msg["runId"], int(msg["batch"])
    worker = worker or f"{os.getpid()}-{threading.get_ident()}-{uuid.uuid4().hex[:6]}"
    blobs = JsonBlobs(ctx.lake_container)
    base = f"{_run_prefix(run_id)}batches/{_batch_name(index)}"
    plan = blobs.read(f"{_run_prefix(run_id)}plan.json")
    if plan is None:
        raise ScoringError(f"run {run_id} has no plan", status=404, code="RunNotFound")
    claimed = _claim(blobs, base + ".json", worker)
    if claimed is None:  # already written (by us earlier, or another worker)
        done = blobs.read(base + ".json") or {}
        log.info("scoring run=%s batch=%d already written; skipped", run_id, index)
        _mark_done(ctx, blobs, run_id, index, done.get("result") or {}, plan)
        return {**(done.get("result") or {}), "alreadyWritten": True}
    checkpoint, etag = claimed
    started = time.perf_counter()
    try:
        result, rows = _execute(ctx, plan, run_id, index, base)
    except Exception as exc:
        attempts = int(checkpoint.get("attempts", 0))
        _release(blobs, base + ".json", worker, f"{type(exc).__name__}: {str(exc)[:300]}", attempts)
        log.warning(
            "scoring run=%s batch=%d failed (attempt %d): %s", run_id, index, attempts, type(exc).__name__
        )
        raise
    result["seconds"] = round(time.perf_counter() - started, 3)
    blobs.write(
        base + ".json",
        {
            "status": "written",
            "batch": index,
            "worker": worker,
            "result": result,
            "attempts": checkpoint.get("attempts", 1),
            "writtenAt": _iso(_utcnow()),
        },
    )
    log.info(
        "scoring run=%s batch=%d model=%s scored=%d written=%d unchanged=%d skipped=%d quota_stopped=%d "
        "in %.2f s",
        run_id,
        index,
        result.get("model"),
        result["scored"],
        result["written"],
        result["unchanged"],
        result["skipped"],
        result["quotaStopped"],
        result["seconds"],
    )
    _mark_done(ctx, blobs, run_id, index, result, plan)
    if return_rows:
        result = {**result, "rows": rows}
    return result


def _claim(blobs: JsonBlobs, path: str, worker: str) -> tuple[dict[str, Any], str] | None:
    """Take the batch's checkpoint; None if it is already written. Waits for another live claim."""
    deadline = time.monotonic() + CLAIM_SECONDS + 5
    while True:
        doc, etag = blobs.read_with_etag(path)
        if doc is None:
            raise ScoringError(f"checkpoint {path} is missing", status=404, code="BatchNotFound")
        if doc.get("status") == "written":
            return None
        now = time.time()
        if (
            doc.get("status") == "claimed"
            and doc.get("worker") != worker
            and float(doc.get("until", 0)) > now
        ):
            if time.monotonic() > deadline:
                raise ScoringError(
                    f"batch {path} stays claimed by {doc.get('worker')}", status=409, code="BatchBusy"
                )
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
            new_etag = blobs.write(path, new, etag=etag)
            return new, new_etag
        except ResourceModifiedError:
            continue


def _release(blobs: JsonBlobs, path: str, worker: str, error: str, attempts: int) -> None:
    try:
        doc, etag = blobs.read_with_etag(path)
        if doc and doc.get("worker") == worker and doc.get("status") == "claimed":
            blobs.write(path, {**doc, "status": "pending", "until": 0, "lastError": error}, etag=etag)
    except Exception:  # noqa: BLE001 - the claim expires anyway
        log.debug("could not release claim on %s", path)


def _execute(
    ctx: Any, plan: Mapping[str, Any], run_id: str, index: int, base: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    frame = ctx.lake.read_parquet(base + ".parquet").to_pandas()
    if frame.empty:
        return _empty_result(), []
    name, version = str(frame[C_MODEL].iloc[0]), int(frame[C_VERSION].iloc[0])
    model_doc = next((m for m in plan["models"] if m["name"] == name and m["version"] == version), None)
    grade_ranges = tuple(model_doc["gradeRanges"]) if model_doc else None
    result = _empty_result()
    result["model"] = f"{name}@{version}"
    ids = frame[C_ID].astype(str).tolist()
    allowed = claim_quota(
        ctx, plan.get("month") or _utcnow().strftime("%Y-%m"), ids, ctx.settings.monthly_quota
    )
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
    skipped = getattr(scored, "attrs", {}).get("skipped") if hasattr(scored, "attrs") else None
    rows, history, out_rows = _rows_to_write(frame, scored, plan, name, version, grade_ranges, run_id, index)
    result["scored"] = len(scored)
    result["skipped"] = len(frame) - len(scored)
    if skipped:
        result["skipReasons"] = _count_reasons(skipped)
    elif result["skipped"]:
        result["skipReasons"] = {"not scored by the model (invalid record)": result["skipped"]}
    result["unchanged"] = len(scored) - len(rows)
    result["written"] = len(rows)
    if rows:
        responses = write_rows(ctx, rows)
        failed = [r for r in responses if not _ok(r)]
        if failed:
            first = failed[0]
            raise BatchFailed(
                f"{len(failed)} of {len(rows)} upserts failed; first: "
                f"{getattr(first, 'status', '?')} {str(getattr(first, 'error', '') or '')[:200]}"
            )
        ctx.lake.write_parquet(
            f"scoring/history/{run_id}/batch-{_batch_name(index)}.parquet",
            pa.Table.from_pandas(history, schema=HISTORY_SCHEMA, preserve_index=False),
        )
    return result, out_rows


def _empty_result() -> dict[str, Any]:
    return {"model": None, "scored": 0, "written": 0, "unchanged": 0, "skipped": 0, "quotaStopped": 0}


def _ok(response: Any) -> bool:
    status = getattr(response, "status", None)
    if status is None and isinstance(response, Mapping):
        status = response.get("status")
    return isinstance(status, int) and 200 <= status < 300


def _count_reasons(skipped: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    items = skipped.to_dict("records") if isinstance(skipped, pd.DataFrame) else list(skipped)
    for item in items:
        reason = str(item.get("reason", "invalid record")) if isinstance(item, Mapping) else str(item)
        counts[reason] = counts.get(reason, 0) + 1
    return counts


def _rows_to_write(
    frame: pd.DataFrame,
    scored: pd.DataFrame,
    plan: Mapping[str, Any],
    name: str,
    version: int,
    grade_ranges: tuple[int, ...] | None,
    run_id: str,
    index: int,
) -> tuple[list[dict[str, Any]], pd.DataFrame, list[dict[str, Any]]]:
    """Decide grade, trend and reasons per scored row; keep only rows that changed."""
    from modeling.config import grade_for
    from modeling.scoring import reasons_json

    prev = frame.set_index(C_ID)[[C_PREV_SCORE, C_PREV_GRADE, C_PREV_TREND, C_PREV_REASONS, C_NAME]]
    scored_on = str(plan.get("scoredOn") or _utcnow().date().isoformat())
    written_at = pd.Timestamp(_utcnow())
    rows: list[dict[str, Any]] = []
    hist: dict[str, list[Any]] = {f.name: [] for f in HISTORY_SCHEMA}
    out: list[dict[str, Any]] = []
    for rec in scored.to_dict("records"):
        opp_id = str(rec[C_ID]).lower()
        score = int(max(0, min(100, int(rec["score"]))))
        grade = int(grade_for(score, grade_ranges)) if grade_ranges else int(rec["grade"])
        reasons = rec.get("reasons")
        text = reasons if isinstance(reasons, str) else reasons_json(name, version, reasons or {})
        if len(text) > MAX_REASONS_CHARS:  # the shared serialiser guarantees this; never send more
            raise ScoringError(
                f"reasons for {opp_id} exceed {MAX_REASONS_CHARS} characters",
                status=500,
                code="ReasonsTooLong",
            )
        p = prev.loc[opp_id]
        prev_score = None if _isnan(p[C_PREV_SCORE]) else float(p[C_PREV_SCORE])
        prev_trend = None if _isnan(p[C_PREV_TREND]) else int(p[C_PREV_TREND])
        trend = decide_trend(prev_score, prev_trend, score, TREND_TOLERANCE)
        sha = _sha(text)
        changed = (
            prev_score is None
            or int(prev_score) != score
            or _isnan(p[C_PREV_GRADE])
            or int(p[C_PREV_GRADE]) != grade
            or prev_trend != trend
            or p[C_PREV_REASONS] != sha
        )
        out.append(
            {
                "opportunityId": opp_id,
                "score": score,
                "grade": grade,
                "trend": trend,
                "previousScore": prev_score,
                "written": bool(changed),
                "model": f"{name}@{version}",
                "reasons": text,
            }
        )
        if not changed:
            continue
        rows.append(
            {
                "msdyn_name": (str(p[C_NAME] or "") or f"Opportunity {opp_id}")[:128],
                "msdyn_entityid": opp_id,
                "msdyn_entitytype": ENTITY_TYPE,
                "msdyn_score": score,
                "msdyn_grade": grade,
                "msdyn_scoretrend": trend,
                "msdyn_scoredon": scored_on,
                "msdyn_scorereasons": text,
            }
        )
        for key, value in (
            ("opportunityid", opp_id),
            ("run_id", run_id),
            ("batch", index),
            ("model", name),
            ("version", version),
            ("score", score),
            ("grade", grade),
            ("trend", trend),
            ("previous_score", prev_score),
            ("reasons", text),
            ("reasons_sha", sha),
            ("scoredon", scored_on),
            ("written_at", written_at),
        ):
            hist[key].append(value)
    return rows, pd.DataFrame(hist), out


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


# ---------------------------------------------------------------------------------- finish / report


def _mark_done(
    ctx: Any, blobs: JsonBlobs, run_id: str, index: int, result: Mapping[str, Any], plan: Mapping[str, Any]
) -> None:
    path = f"{_run_prefix(run_id)}progress.json"
    for _ in range(100):
        doc, etag = blobs.read_with_etag(path)
        doc = doc or {"done": {}}
        if str(index) in doc["done"]:
            break
        doc["done"][str(index)] = dict(result)
        try:
            if etag is None:
                blobs.write(path, doc, create_only=True)
            else:
                blobs.write(path, doc, etag=etag)
            break
        except (ResourceModifiedError, ResourceExistsError):
            time.sleep(0.02)
    else:
        raise ScoringError(f"progress of run {run_id} kept changing", status=503, code="ProgressBusy")
    if len(doc["done"]) >= int(plan.get("batches", 0)):
        finish_run(ctx, run_id)


def run_report(ctx: Any, run_id: str) -> dict[str, Any]:
    """Counts so far (or final): eligible, scored, written, unchanged, skipped with reasons, quota."""
    blobs = JsonBlobs(ctx.lake_container)
    plan = blobs.read(f"{_run_prefix(run_id)}plan.json")
    if plan is None:
        raise ScoringError(f"no scoring run {run_id}", status=404, code="RunNotFound")
    progress = blobs.read(f"{_run_prefix(run_id)}progress.json") or {"done": {}}
    totals = {"scored": 0, "written": 0, "unchanged": 0, "skipped": 0, "quotaStopped": 0}
    reasons: dict[str, int] = {}
    for res in progress["done"].values():
        for k in totals:
            totals[k] += int(res.get(k, 0) or 0)
        for r, c in (res.get("skipReasons") or {}).items():
            reasons[r] = reasons.get(r, 0) + int(c)
    report = {
        "runId": run_id,
        "actor": plan.get("actor"),
        "createdAt": plan.get("createdAt"),
        "asOf": plan.get("asOf"),
        "models": plan.get("models", []),
        "eligible": plan.get("eligible", 0),
        **totals,
        "skipReasons": reasons,
        "ineligible": plan.get("ineligible", {}),
        "notScored": plan.get("notScored", []),
        "batches": plan.get("batches", 0),
        "batchesDone": len(progress["done"]),
        "quota": plan.get("quota"),
        "quotaReached": totals["quotaStopped"] > 0,
    }
    if totals["quotaStopped"]:
        report["message"] = (
            f"monthly quota of {plan.get('quota')} scored records reached: "
            f"{totals['quotaStopped']} eligible records were not scored"
        )
    return report


def finish_run(ctx: Any, run_id: str) -> dict[str, Any]:
    """Write the final report (idempotent) and complete the run's job."""
    blobs = JsonBlobs(ctx.lake_container)
    report = run_report(ctx, run_id)
    plan = blobs.read(f"{_run_prefix(run_id)}plan.json") or {}
    try:
        created = dt.datetime.fromisoformat(str(plan.get("createdAt")))
        report["durationSeconds"] = round((_utcnow() - created).total_seconds(), 3)
    except (TypeError, ValueError):
        report["durationSeconds"] = None
    report["finishedAt"] = _iso(_utcnow())
    try:
        blobs.write(f"{_run_prefix(run_id)}report.json", report, create_only=True)
    except ResourceExistsError:
        return blobs.read(f"{_run_prefix(run_id)}report.json") or report
    blobs.write(f"reports/scoring/{run_id}.json", report)
    if report["quotaReached"]:
        log.warning("scoring run=%s stopped by the monthly quota: %s", run_id, report["message"])
    log.info(
        "scoring run=%s finished: eligible=%d scored=%d written=%d unchanged=%d skipped=%d quota_stopped=%d",
        run_id,
        report["eligible"],
        report["scored"],
        report["written"],
        report["unchanged"],
        report["skipped"],
        report["quotaStopped"],
    )
    try:
        ctx.jobs.succeed(run_id, report)
    except Exception as exc:  # noqa: BLE001 - runs planned without a job (job=False) have none
        log.debug("run %s has no job to complete: %s", run_id, type(exc).__name__)
    return report


def resume_run(ctx: Any, run_id: str) -> dict[str, Any]:
    """Re-enqueue every batch of a run not yet written (after a crash or a poisoned batch)."""
    blobs = JsonBlobs(ctx.lake_container)
    plan = blobs.read(f"{_run_prefix(run_id)}plan.json")
    if plan is None:
        raise ScoringError(f"no scoring run {run_id}", status=404, code="RunNotFound")
    pending = []
    for i in range(int(plan.get("batches", 0))):
        doc = blobs.read(f"{_run_prefix(run_id)}batches/{_batch_name(i)}.json") or {}
        if doc.get("status") != "written":
            pending.append(i)
    enqueue_batches(ctx, run_id, pending)
    log.info("scoring run=%s resumed: %d batches re-enqueued", run_id, len(pending))
    if not pending:
        finish_run(ctx, run_id)
    return {"runId": run_id, "reenqueued": pending}


# ------------------------------------------------------------------------------------ synchronous API


def score_now(ctx: Any, ids: Sequence[str], *, actor: str = "anonymous") -> tuple[int, dict[str, Any]]:
    """Score listed ids. At most SYNC_LIMIT: scored and written now -> (200, scores). More: a queued
    run -> (202, job)."""
    ids = validate_ids(list(ids))
    if len(ids) > SYNC_LIMIT:
        plan = plan_run(ctx, opportunity_ids=ids, actor=actor)
        return 202, {"job": ctx.jobs.get(plan["runId"]), "run": _plan_summary(plan)}
    plan = plan_run(ctx, opportunity_ids=ids, actor=actor, enqueue=False)
    rows: list[dict[str, Any]] = []
    for i in range(int(plan["batches"])):
        res = score_batch(ctx, {"runId": plan["runId"], "batch": i}, return_rows=True)
        rows.extend(res.get("rows", []))
    scores = [decode_row_dict(r) for r in rows]
    report = run_report(ctx, plan["runId"])
    return 200, {
        "runId": plan["runId"],
        "scores": scores,
        "notScored": plan["notScored"],
        "quotaStopped": report["quotaStopped"],
        "message": report.get("message"),
    }


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
        "written": r.get("written"),
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


def unfinished_runs(ctx: Any) -> list[str]:
    """Runs whose plan exists but whose report does not (for operators and the timer's log)."""
    names = ctx.lake_container.walk_blobs(name_starts_with="scoring/runs/", delimiter="/")
    blobs = JsonBlobs(ctx.lake_container)
    out = []
    for item in names:
        name = getattr(item, "name", str(item))
        run_id = name[len("scoring/runs/") :].rstrip("/")
        if run_id and blobs.read(f"{_run_prefix(run_id)}report.json") is None:
            out.append(run_id)
    return out


# keep the public names in one place for readers
__all__ = [
    "BATCH_SIZE",
    "SYNC_LIMIT",
    "TREND_TOLERANCE",
    "ScoringError",
    "BatchFailed",
    "PublishedModel",
    "plan_run",
    "score_batch",
    "finish_run",
    "run_report",
    "resume_run",
    "score_now",
    "get_score",
    "claim_quota",
    "quota_usage",
    "model_priority",
    "decide_trend",
    "validate_ids",
    "alternate_key_path",
    "load_previous",
    "unfinished_runs",
    "parse_message",
    "decode_dataverse_row",
]
