"""What a run scores, from the lake and the model store: the published models, their scorers (cached per
process), the lake's tables (all of them for a run, or only the rows a few listed ids need), and the
assignment of each eligible opportunity to exactly one model (`modeling.scoring_rules.model_priority`)."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from connectors.clock import iso, parse, utcnow
from connectors.lake import Lake
from functions.services.scoring.common import C_ID, C_NAME
from model_store.errors import IntegrityError, ModelStoreError
from modeling.scoring_rules import PublishedModel, model_priority, past_outcome_rows, snapshot_time

if TYPE_CHECKING:
    from functions.app_context import AppContext
    from modeling.scoring import Scorer

log = logging.getLogger(__name__)

# The listed-ids reads run each on its own long-lived thread: the lake keeps opened Delta tables per thread
# (brought up to date incrementally), so a read on a thread that has not opened its table rereads its log.
_READERS = [ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"scoring-read-{i}") for i in range(7)]
# Opportunity columns the past-outcome features (account / owner win rates) read from other deals.
EVENT_COLUMNS = (
    C_ID,
    "_parentaccountid_value",
    "_ownerid_value",
    "actualclosedate",
    "modifiedon",
    "createdon",
    "estimatedvalue",
    "statecode",
)
STAGE_HISTORY_COLUMNS = [C_ID, "stepname", "modifiedon"]


@dataclass
class LakeInputs:
    tables: dict[str, pd.DataFrame]
    metadata: dict[str, Any]
    as_of: dt.datetime


@dataclass
class Assignment:
    """Each eligible opportunity with exactly one model, plus what the plan reports about the rest."""

    frames: list[tuple[PublishedModel, pd.DataFrame]] = field(default_factory=list)
    models: list[dict[str, Any]] = field(default_factory=list)
    ineligible: dict[str, int] = field(default_factory=dict)
    not_scored: list[dict[str, str]] = field(default_factory=list)
    broken: list[dict[str, Any]] = field(default_factory=list)  # published models that failed to load

    @property
    def eligible(self) -> int:
        return sum(len(f) for _, f in self.frames)


def published_models(ctx: AppContext) -> list[PublishedModel]:
    """Every model with a published version, in priority order."""
    from modeling.config import ModelConfig

    out = []
    for raw in ctx.model_store.list_configs():
        alias = ctx.model_store.get_alias(str(raw["name"]))
        if alias.get("published") is not None:
            config = ModelConfig.from_json(raw)
            out.append(
                PublishedModel(config.name, int(alias["published"]), config, str(alias.get("publishedAt") or ""))
            )
    return sorted(out, key=model_priority)


_models: dict[str, tuple[Scorer, Mapping[str, Any], str | None]] = {}
_model_lock = threading.Lock()
MODEL_HEALTH = "scoring/model-health.json"  # the models the last plan could not load (GET /api/health)


def load_model(ctx: AppContext, name: str, version: int) -> tuple[Scorer, Mapping[str, Any]]:
    """The shared Scorer of name@version and its meta (the training stats the scoring frame needs). Built
    once per process and reused while the stored model.onnx keeps its ETag (one HEAD request per use);
    every load from storage checks the sha256, and an artifact onnxruntime cannot load is refused the same
    way (`IntegrityError`, code ModelIntegrityError), never a bare onnxruntime error."""
    from modeling.scoring import Scorer

    key = f"{ctx.settings.model_container}/{name}@{version}"
    with _model_lock:
        cached = _models.get(key)
    if cached is not None and (cached[2] is None or ctx.model_store.version_etag(name, version) == cached[2]):
        return cached[0], cached[1]
    started = time.perf_counter()
    loaded = ctx.model_store.load_version(name, version)
    try:
        scorer = Scorer(loaded.onnx, loaded.meta)
    except Exception as exc:
        raise IntegrityError(
            f"model {name}@{version} matches its recorded sha256 but cannot be loaded ({type(exc).__name__}); "
            "the artifact and its checksum were replaced together: retrain or publish another version",
            model=name,
            version=version,
        ) from exc
    with _model_lock:
        _models[key] = (scorer, dict(loaded.meta), loaded.etag)
    log.info("loaded model=%s@%d in %.0f ms", name, version, (time.perf_counter() - started) * 1000)
    return scorer, dict(loaded.meta)


def record_broken(ctx: AppContext, run_id: str, broken: Sequence[Mapping[str, Any]]) -> None:
    """What the health endpoint reports: the published models this run could not load (none: cleared)."""
    ctx.lake.json.write(MODEL_HEALTH, {"checkedAt": iso(), "runId": run_id, "broken": list(broken)})


def model_health(ctx: AppContext) -> dict[str, Any]:
    """The published models the last planned run could not load (`GET /api/health`)."""
    doc = ctx.lake.read_json(MODEL_HEALTH) or {}
    return {"broken": list(doc.get("broken") or []), "checkedAt": doc.get("checkedAt"), "runId": doc.get("runId")}


def load_scorer(ctx: AppContext, name: str, version: int) -> Scorer:
    return load_model(ctx, name, version)[0]


def clear_model_cache() -> None:
    with _model_lock:
        _models.clear()


def read_all(ctx: AppContext) -> LakeInputs:
    """The lake's current tables (the training service's readers), stage history, metadata and "as of"."""
    from functions.services.training import load_metadata, load_tables

    lake = ctx.lake
    tables = load_tables(lake, history=False)
    tables["opportunity_history"] = lake.read_history("opportunity", STAGE_HISTORY_COLUMNS).to_pandas()
    return LakeInputs(tables, load_metadata(lake), _as_of(lake, tables))


def read_listed(ctx: AppContext, ids: Sequence[str], models: Sequence[PublishedModel]) -> LakeInputs:
    """Only what scoring `ids` needs: those opportunities, their BPF instances, stage history and accounts
    (filtered reads), and, from the few columns past outcomes and "as of" need, the won and lost deals of
    their accounts and owners (their past win rates are features) and the newest change times."""
    from functions.services.training import load_metadata

    lake, wanted = ctx.lake, list(ids)
    outcome_columns = list(dict.fromkeys([*EVENT_COLUMNS, *(m.config.state_option_set for m in models)]))
    opp_path, bpf_path = Lake.current_path("opportunity"), Lake.current_path("opportunitysalesprocess")
    listed, outcomes, bpf, stage_history, bpf_times, metadata, synced = _on_readers(
        [
            lambda: _read(lake, opp_path, None, pc.field(C_ID).isin(wanted)),
            lambda: lake.tables.read(opp_path, outcome_columns),
            lambda: _read(lake, bpf_path, None, pc.field("_opportunityid_value").isin(wanted)),
            lambda: _read(lake, Lake.history_path("opportunity"), STAGE_HISTORY_COLUMNS, pc.field(C_ID).isin(wanted)),
            lambda: _read(lake, bpf_path, ["modifiedon"], _ALL),
            lambda: load_metadata(lake),
            lambda: lake.synced("opportunity"),
        ],
    )
    accounts, owners = _distinct(listed, "_parentaccountid_value"), _distinct(listed, "_ownerid_value")
    account = _read(
        lake, Lake.current_path("account"), None, pc.field("accountid").isin(accounts) if accounts else None
    )
    events = _related(outcomes, accounts, owners)
    opp_times = (
        outcomes.select([c for c in ("createdon", "modifiedon") if c in outcomes.column_names]).to_pandas()
        if outcomes is not None
        else pd.DataFrame()
    )
    tables = {
        "opportunity": pd.concat([past_outcome_rows(events, [m.config for m in models]), listed], ignore_index=True),
        "account": account,
        "opportunitysalesprocess": bpf,
        "opportunity_history": stage_history,
    }
    as_of = snapshot_time(
        parse(str(synced.get("synced_at") or "")), {"opportunity": opp_times, "opportunitysalesprocess": bpf_times}
    )
    return LakeInputs(tables, metadata, as_of or utcnow())


def _on_readers(reads: Sequence[Callable[[], Any]]) -> list[Any]:
    """Read i on reader thread i (the same thread every time), results in order."""
    futures = [_READERS[i].submit(read) for i, read in enumerate(reads)]
    return [f.result() for f in futures]


def _related(rows: pa.Table | None, accounts: Sequence[str], owners: Sequence[str]) -> pd.DataFrame:
    """The deals of these accounts or owners."""
    if rows is None or not (accounts or owners):
        return pd.DataFrame()
    mask = (
        pc.is_in(rows["_parentaccountid_value"], pa.array(accounts, pa.string()))
        if "_parentaccountid_value" in rows.column_names
        else None
    )
    if "_ownerid_value" in rows.column_names:
        by_owner = pc.is_in(rows["_ownerid_value"], pa.array(owners, pa.string()))
        mask = by_owner if mask is None else pc.or_(mask, by_owner)
    return pd.DataFrame() if mask is None else rows.filter(pc.fill_null(mask, False)).to_pandas()


_ALL = object()  # a read without a filter (a column of every row, for "as of")


def _read(lake: Lake, path: str, columns: Sequence[str] | None, where: Any) -> pd.DataFrame:
    """Rows matching `where` (None: nothing to read, _ALL: every row); empty when the table is absent."""
    if where is None:
        return pd.DataFrame()
    rows = lake.tables.read(path, columns, filters=None if where is _ALL else where)
    return pd.DataFrame() if rows is None else rows.to_pandas()


def _distinct(frame: pd.DataFrame, column: str) -> list[str]:
    return [] if column not in frame.columns else sorted({str(v) for v in frame[column].dropna()})


def _as_of(lake: Lake, frames: Mapping[str, pd.DataFrame]) -> dt.datetime:
    synced = parse(str(lake.synced("opportunity").get("synced_at") or ""))
    return snapshot_time(synced, frames) or utcnow()


def scoring_frame(
    inputs: LakeInputs, model: PublishedModel, meta: Mapping[str, Any], ids: Sequence[str] | None
) -> tuple[pd.DataFrame, dict[str, int]]:
    """The model's eligible rows (the shared modeling.dataset code, with the version's training stats) and
    counts of ineligible ids by reason."""
    from modeling.dataset import build_scoring_frame

    stats = meta.get("stats") or {}
    result = build_scoring_frame(inputs.tables, inputs.metadata, model.config, inputs.as_of, stats, opportunity_ids=ids)
    counts: dict[str, int] = {}
    for item in result.skipped:
        reason = f"{model.key}: {item.get('reason', 'not eligible')}"
        counts[reason] = counts.get(reason, 0) + 1
    return result.frame, counts


def assign(
    ctx: AppContext, inputs: LakeInputs, models: Sequence[PublishedModel], ids: Sequence[str] | None
) -> Assignment:
    """Each eligible opportunity goes to the first model (priority order) that accepts it. A published
    model that cannot be loaded (integrity check, missing version) is left out and listed in `broken`;
    the opportunities it would have taken go to the next model that accepts them, if any."""
    out = Assignment()
    names = _names(inputs.tables.get("opportunity", pd.DataFrame()))
    taken: set[str] = set()
    for model in models:
        try:
            meta = load_model(ctx, model.name, model.version)[1]
        except ModelStoreError as exc:  # one broken model must not stop the others: reported, left out
            log.error("scoring: model=%s left out of the run: %s", model.key, exc)
            out.broken.append({"model": model.name, "version": model.version, "code": exc.code, "message": str(exc)})
            continue
        frame, skipped = scoring_frame(inputs, model, meta, ids)
        frame = frame.assign(**{C_ID: frame[C_ID].astype(str).str.lower()})
        before = len(frame)
        frame = frame[~frame[C_ID].isin(taken)].sort_values(C_ID, kind="stable").reset_index(drop=True)
        frame[C_NAME] = frame[C_ID].map(names).astype(object)
        taken.update(frame[C_ID])
        for reason, count in skipped.items():
            out.ineligible[reason] = out.ineligible.get(reason, 0) + count
        out.frames.append((model, frame))
        out.models.append(
            {
                "key": model.key,
                "name": model.name,
                "version": model.version,
                "gradeRanges": list(model.config.grade_ranges),
                "eligible": len(frame),
                "matchedByHigherPriority": before - len(frame),
            }
        )
    if ids is not None:
        out.not_scored = _not_scored(inputs.tables.get("opportunity", pd.DataFrame()), ids, taken, models)
    return out


def _names(opp: pd.DataFrame) -> dict[str, Any]:
    if C_ID not in opp.columns or "name" not in opp.columns:
        return {}
    return dict(zip(opp[C_ID].astype(str).str.lower(), opp["name"].astype(object), strict=True))


def _not_scored(
    opp: pd.DataFrame, ids: Sequence[str], taken: set[str], models: Sequence[PublishedModel]
) -> list[dict[str, str]]:
    known = pd.DataFrame()
    if C_ID in opp.columns:
        known = (
            opp.assign(_key=opp[C_ID].astype(str).str.lower()).drop_duplicates("_key", keep="last").set_index("_key")
        )
    out = []
    for i in sorted(set(ids) - taken):
        if i not in known.index:
            reason = "not in the lake (never synced or deleted)"
        elif not models:
            reason = "no published model"
        elif "statecode" in known.columns and known.at[i, "statecode"] != 0:
            reason = "not open"
        else:
            reason = "no published model accepts it (filter, business process flow or created over 2 years ago)"
        out.append({"opportunityId": i, "reason": reason})
    return out
