"""The training set: closed deals of the period observed at a reference time inside their open life (one row
per deal, or per deal and stage reached), with point-in-time values and derived features."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from modeling import similar
from modeling.config import ModelConfig
from modeling.dataset.attributes import feature_descriptors, model_attributes
from modeling.dataset.derived import COUNT_COLUMNS, choose_similar, closed_events, derive_features, derive_open
from modeling.dataset.history import late_changes, point_in_time, stage_at, stage_history
from modeling.dataset.scoring_frame import open_rows
from modeling.dataset.split import known_times, prior_as_of
from modeling.dataset.tables import (
    active_bpf,
    as_utc,
    bpf_process,
    close_time,
    ensure_columns,
    latest_opportunities,
    outcome_labels,
    selection_mask,
    with_account,
)
from modeling.errors import InsufficientDataError
from modeling.features import STAGE_COLUMN

MIN_PER_CLASS = 40
MIN_LAST_STAGE = 40


@dataclass
class TrainingData:
    frame: pd.DataFrame  # opportunityid, feature columns, STAGE_COLUMN (per-stage)
    labels: np.ndarray  # 1 won, 0 lost
    closed_at: np.ndarray  # datetime64[ns] close time per row (time order for the splits)
    features: list[dict[str, Any]]  # descriptors for features.build_spec
    open_frame: pd.DataFrame  # open opportunities observed now (for the closed-vs-open leakage test)
    counts: dict[str, int]
    stats: dict[str, Any]  # what scoring needs to derive features the same way (stage medians, prior)
    stages: list[str] = field(default_factory=list)
    period: dict[str, str] = field(default_factory=dict)
    late: dict[str, dict[str, int]] = field(default_factory=dict)  # leakage_report's history test (late_changes)


def _uniform(ids: pd.Series, salt: str = "") -> np.ndarray:
    """Deterministic u in [0.1, 0.9] per id (stable across runs and machines)."""
    out = np.empty(len(ids))
    for i, v in enumerate(ids.astype(str).to_numpy()):
        h = hashlib.blake2b((salt + v).encode(), digest_size=8).digest()
        out[i] = int.from_bytes(h, "big") / 2.0**64
    return 0.1 + 0.8 * out


def _months_before(now: pd.Timestamp, months: int) -> pd.Timestamp:
    return now - pd.DateOffset(months=months)


def build_training_frame(
    tables: Mapping[str, pd.DataFrame], metadata: Mapping[str, Any], config: ModelConfig, now: datetime
) -> TrainingData:
    """Closed deals of the period -> training rows. Raises InsufficientDataError (422)."""
    now_ts = pd.Timestamp(now).tz_convert("UTC") if pd.Timestamp(now).tzinfo else pd.Timestamp(now, tz="UTC")
    start = _months_before(now_ts, config.training_months)
    opp = latest_opportunities(tables)
    attributes = model_attributes(config, metadata)
    bpf_inst = active_bpf(tables)
    closed, created, close, labels_closed = _closed_in_period(opp, config, bpf_inst, start, now_ts)
    won, lost = int((labels_closed == 1).sum()), int((labels_closed == 0).sum())
    counts = {"won": won, "lost": lost, "closed": won + lost}

    process = bpf_process(metadata, config.business_process_flow)
    stages = [str(s["stagename"]) for s in sorted((process or {}).get("stages", []), key=lambda s: s.get("order", 0))]
    history = tables.get("opportunity_history")
    stage_hist = stage_history(history)
    prior = won / max(won + lost, 1)
    late = late_changes(closed, close[closed.index], history, attributes)

    rows = _observed_rows(closed, created, close, config, counts, stages, stage_hist, bpf_inst, process)
    rows = rows.reset_index(drop=True)
    rows["_y"] = outcome_labels(rows, config).to_numpy()
    rows = point_in_time(rows, history, attributes)
    rows = with_account(rows, tables, attributes)

    for c in ("_t", "_created", "_stage_start", "_close"):
        rows[c] = as_utc(rows[c], len(rows)).array
    stats = _stage_time_stats(rows, prior)
    events = closed_events(opp, config)
    open_raw = open_rows(
        opp, tables, config, attributes, bpf_inst, stage_hist, now_ts, events, prior, stats, process, derive=False
    )
    feats = feature_descriptors(attributes, metadata)
    deals = with_account(closed.reset_index(drop=True), tables, attributes)
    deal_close = close[closed.index].to_numpy(dtype="datetime64[ns]")
    deal_y = labels_closed.to_numpy(dtype=int)
    # training rows smooth their past rates toward the win rate known at their as-of time (test rows: at the
    # test window's start, see known_times); open rows (scoring) toward the training win rate
    ev_close = as_utc(events["_close"], len(events)).to_numpy(dtype="datetime64[ns]")
    known = known_times(rows["_t"].to_numpy(dtype="datetime64[ns]"), rows["_close"].to_numpy(dtype="datetime64[ns]"))
    row_prior = prior_as_of(known, ev_close, events["_y"].to_numpy())
    stats["similar"] = choose_similar(rows, deals, deal_close, deal_y, open_raw, feats, prior, row_prior, late)
    rate, n_similar, won_similar = similar.training_values(
        stats["similar"]["attributes"], rows, known, deals, deal_close, deal_y, row_prior
    )
    rows["d_similar_win_rate"], rows["d_similar_closed"], rows["d_similar_won"] = rate, n_similar, won_similar
    rows = derive_features(rows, events, row_prior, stats)
    open_data = derive_open(open_raw, events, prior, stats)
    keep = ["opportunityid", STAGE_COLUMN] + [f["name"] for f in feats] + COUNT_COLUMNS
    frame = ensure_columns(rows, keep)
    return TrainingData(
        frame=frame,
        labels=rows["_y"].to_numpy(dtype=int),
        closed_at=rows["_close"].to_numpy(),
        features=feats,
        open_frame=ensure_columns(open_data, keep),
        counts=counts,
        stats=stats,
        stages=stages,
        period={"start": start.isoformat(), "end": now_ts.isoformat()},
        late=late,
    )


def _closed_in_period(
    opp: pd.DataFrame, config: ModelConfig, bpf_inst: pd.DataFrame, start: pd.Timestamp, now_ts: pd.Timestamp
) -> tuple[pd.DataFrame, pd.Series, pd.Series, pd.Series]:
    """The closed deals created and closed between `start` and `now_ts` that match the model's filter and BPF,
    with every opportunity's creation and close times and the deals' labels (1 won, 0 lost)."""
    n = len(opp)
    created = as_utc(opp.get("createdon"), n)
    created.index = opp.index
    close = close_time(opp)
    y = outcome_labels(opp, config)
    sel = selection_mask(opp, config, bpf_inst).to_numpy()
    in_period = ((created >= start) & (close >= start) & (close <= now_ts) & (created <= close)).to_numpy()
    closed = opp[sel & in_period & y.notna().to_numpy()].copy()
    labels_closed = y[closed.index].astype(int)
    return closed, created, close, labels_closed


def _observed_rows(
    closed: pd.DataFrame,
    created: pd.Series,
    close: pd.Series,
    config: ModelConfig,
    counts: dict[str, int],
    stages: Sequence[str],
    stage_hist: pd.DataFrame,
    bpf_inst: pd.DataFrame,
    process: Mapping[str, Any] | None,
) -> pd.DataFrame:
    """The training rows of the closed deals, each observed at its reference time `_t`: per stage one row per
    deal and stage reached (sets counts["closed_in_last_stage"]), else one per deal. Raises
    InsufficientDataError (422) below the minimum counts."""
    won, lost = counts["won"], counts["lost"]
    if config.per_stage:
        rows = _per_stage_rows(closed, created, close, stages, stage_hist, bpf_inst, process)
        last = stages[-1] if stages else None
        in_last = int(rows.loc[rows[STAGE_COLUMN] == last, "opportunityid"].nunique()) if last else 0
        counts["closed_in_last_stage"] = in_last
        if in_last < MIN_LAST_STAGE:
            raise InsufficientDataError(
                f"per-stage modelling needs at least {MIN_LAST_STAGE} opportunities closed in the last "
                f"stage ({last}) created and closed in the last {config.training_period}; found {in_last}",
                found={"closedInLastStage": in_last},
                needed={"closedInLastStage": MIN_LAST_STAGE},
            )
    else:
        if won < MIN_PER_CLASS or lost < MIN_PER_CLASS:
            raise InsufficientDataError(
                f"training needs at least {MIN_PER_CLASS} won and {MIN_PER_CLASS} lost opportunities "
                f"created and closed in the last {config.training_period}; found {won} won and {lost} lost",
                found={"won": won, "lost": lost},
                needed={"won": MIN_PER_CLASS, "lost": MIN_PER_CLASS},
            )
        rows = closed.copy()
        rows["_created"] = created[closed.index].array
        rows["_close"] = close[closed.index].array
        u = _uniform(rows["opportunityid"])
        rows["_t"] = rows["_created"] + (rows["_close"] - rows["_created"]) * u
        rows[STAGE_COLUMN] = None
        rows["_stage_start"] = pd.NaT
        rows = stage_at(rows, stage_hist)
    return rows


def _stage_time_stats(rows: pd.DataFrame, prior: float) -> dict[str, Any]:
    """meta["stats"] before the similar deals: the won rows' median days in each stage (and over all stages)
    and the training win rate `prior`."""
    won_rows = rows[rows["_y"] == 1]
    days_in_stage = (
        (won_rows["_t"] - won_rows["_stage_start"].fillna(won_rows["_created"])) / np.timedelta64(1, "D")
    ).astype(float)
    med = days_in_stage.groupby(won_rows[STAGE_COLUMN].astype(object)).median().dropna().to_dict()
    return {
        "won_median_days_in_stage": {str(k): float(v) for k, v in med.items() if k is not None},
        "won_median_days_in_stage_all": float(days_in_stage.median()) if len(days_in_stage) else 1.0,
        "prior_win_rate": prior,
    }


def _per_stage_rows(
    closed: pd.DataFrame,
    created: pd.Series,
    close: pd.Series,
    stages: Sequence[str],
    stage_hist: pd.DataFrame,
    bpf_inst: pd.DataFrame,
    process: Mapping[str, Any] | None,
) -> pd.DataFrame:
    """One row per closed deal and BPF stage it reached, observed inside that stage."""
    ids = closed["opportunityid"].astype(str)
    order = {s: i for i, s in enumerate(stages)}
    id_to_stage = {str(s["processstageid"]).lower(): str(s["stagename"]) for s in (process or {}).get("stages", [])}
    traversed = dict(zip(bpf_inst["opportunityid"].astype(str), bpf_inst["traversed"], strict=False))
    hist = {k: g for k, g in stage_hist.groupby("opportunityid")} if not stage_hist.empty else {}
    recs: list[tuple[int, str, Any, Any]] = []  # (row position, stage, entered, left)
    cr = created[closed.index].to_numpy()
    cl = close[closed.index].to_numpy()
    for pos, oid in enumerate(ids.to_numpy()):
        g = hist.get(oid)
        entries: list[tuple[str, Any]] = []
        if g is not None:
            entries = [(s, e) for s, e in zip(g["stage"], g["entered"], strict=False) if s in order]
        path = traversed.get(oid)
        names = [id_to_stage.get(p.strip().lower()) for p in str(path).split(",")] if isinstance(path, str) else []
        seq = [s for s in names if s in order]
        if len(seq) > len(entries):  # history too sparse: spread the traversed stages over the deal's life
            span = cl[pos] - cr[pos]
            entries = [(s, cr[pos] + span * (i / max(len(seq), 1))) for i, s in enumerate(seq)]
        for i, (s, e) in enumerate(entries):
            left = entries[i + 1][1] if i + 1 < len(entries) else cl[pos]
            recs.append((pos, s, e, left))
    if not recs:
        empty = closed.iloc[0:0].copy()
        for c in (STAGE_COLUMN, "_created", "_close", "_t", "_stage_start"):
            empty[c] = []
        return empty
    pos_arr = np.array([r[0] for r in recs])
    rows = closed.iloc[pos_arr].copy()
    rows[STAGE_COLUMN] = [r[1] for r in recs]
    rows["_stage_start"] = pd.to_datetime([r[2] for r in recs], utc=True)
    left = pd.to_datetime([r[3] for r in recs], utc=True)
    rows["_created"] = cr[pos_arr]
    rows["_close"] = cl[pos_arr]
    u = _uniform(rows["opportunityid"].astype(str) + "|" + rows[STAGE_COLUMN].astype(str))
    rows["_t"] = rows["_stage_start"] + (pd.Series(left, index=rows.index) - rows["_stage_start"]) * u
    return rows
