"""Backtests: replay past dates from the lake's tables (pure pandas; the I/O is functions/services/backtest.py).

For each cut date D (the first day of a month, 00:00 UTC) the model's configuration is trained as it would
have been on D (`dataset.build_training_frame(now=D)`: deals closed by D, values point-in-time) and scores
the opportunities that were open on D: created <= D and not closed by D (no close, or closed after D),
eligible as the product scores (created within `SCORING_WINDOW_DAYS` of D, the model's filter and BPF),
with their attribute values and stage as of D (`opportunity_history`, as training rows get them) and the
derived features computed at D (only deals closed strictly before D count). Their outcomes come from the
current lake: those won or lost since D are the evaluated rows; the others (still open) are counted only.

The tables are read once per backtest (`Source`); each month selects its open rows from them.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from modeling.config import ModelConfig
from modeling.dataset import build_training_frame
from modeling.dataset.attributes import feature_descriptors, model_attributes
from modeling.dataset.derived import COUNT_COLUMNS, closed_events, derive_open
from modeling.dataset.history import point_in_time, stage_at, stage_history
from modeling.dataset.scoring_frame import SCORING_WINDOW_DAYS
from modeling.dataset.tables import (
    active_bpf,
    as_utc,
    close_time,
    ensure_columns,
    latest_opportunities,
    option_key,
    outcome_labels,
    selection_mask,
    with_account,
)
from modeling.errors import FieldError, InsufficientDataError
from modeling.evaluation import DEFAULT_READINESS, ece
from modeling.features import STAGE_COLUMN
from modeling.scoring import Scorer
from modeling.train import train_model

MAX_MONTHS = 12
DEFAULT_MONTHS = 12
FIELDS = ("from", "to", "months")
TOP_SHARE = 0.1  # the top decile
PROBABILITY_DIGITS = 6  # scores are kept (and measured) at this precision
EARLIEST = pd.Timestamp("1970-01-01", tz="UTC")
_MONTH_START = re.compile(r"\d{4}-\d{2}-01")


# ---------------------------------------------------------------------------------------------- cut dates


def month_start(when: datetime | pd.Timestamp) -> pd.Timestamp:
    ts = pd.Timestamp(when)
    ts = ts.tz_convert("UTC") if ts.tzinfo else ts.tz_localize("UTC")
    return pd.Timestamp(year=ts.year, month=ts.month, day=1, tz="UTC")


def last_full_month(now: datetime) -> pd.Timestamp:
    """The first day of the last full month before `now` (in December 2026: 2026-11-01)."""
    return month_start(now) - pd.DateOffset(months=1)


def _months_between(start: pd.Timestamp, end: pd.Timestamp) -> int:
    return (end.year - start.year) * 12 + end.month - start.month + 1


def _date_field(body: Mapping[str, Any], name: str) -> pd.Timestamp | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not _MONTH_START.fullmatch(value):
        raise FieldError(name, f"must be the first day of a month as YYYY-MM-01, got {str(value)[:40]!r}")
    try:
        when = pd.Timestamp(value, tz="UTC").as_unit("ns")
    except ValueError:
        raise FieldError(name, f"is not a date from {EARLIEST.date()} to the last full month: {value!r}") from None
    if when < EARLIEST:
        raise FieldError(name, f"must be on or after {EARLIEST.date()}, got {value}")
    return when


def _months_field(body: Mapping[str, Any]) -> int | None:
    value = body.get("months")
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_MONTHS:
        raise FieldError("months", f"must be an integer from 1 to {MAX_MONTHS}, got {str(value)[:40]}")
    return value


def cut_dates(body: Mapping[str, Any], now: datetime) -> list[pd.Timestamp]:
    """The monthly cut dates a backtest request asks for: `{}` (the last 12 months, ending at the last full
    month), `{"months": n}`, `{"from": "YYYY-MM-01", "to": "YYYY-MM-01"}`, `from` or `to` with `months`.
    Raises FieldError (400) naming the field that is wrong."""
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        rule = "is not a backtest field; give from, to (YYYY-MM-01) or months"
        raise FieldError(unknown[0], rule, code="UnknownField")
    start, end, months = _date_field(body, "from"), _date_field(body, "to"), _months_field(body)
    latest = last_full_month(now)
    if start is not None and end is not None and months is not None:
        raise FieldError("months", "give months or both from and to, not all three")
    if end is None:
        end = start + pd.DateOffset(months=months - 1) if start is not None and months else latest
    elif end > latest:
        raise FieldError("to", f"must be at most {latest.date()} (the last full month): later months have no outcome")
    if start is None:
        start = end - pd.DateOffset(months=(months or DEFAULT_MONTHS) - 1)
    if end > latest:
        raise FieldError("months", f"from {start.date()} reaches past {latest.date()}, the last full month")
    if start > end:
        raise FieldError("from", f"must not be after to ({end.date()})")
    count = _months_between(start, end)
    if count > MAX_MONTHS:
        raise FieldError("from", f"the range spans {count} months; a backtest covers at most {MAX_MONTHS}")
    return [start + pd.DateOffset(months=i) for i in range(count)]


# ---------------------------------------------------------------------------------------------- the tables


@dataclass
class Source:
    """The lake's tables prepared once for every month of a backtest."""

    tables: Mapping[str, pd.DataFrame]
    metadata: Mapping[str, Any]
    config: ModelConfig
    opp: pd.DataFrame = field(init=False)
    created: np.ndarray = field(init=False)  # datetime64[ns] (UTC)
    close: np.ndarray = field(init=False)  # close time, NaT while open
    outcome: np.ndarray = field(init=False)  # 1 won, 0 lost, NaN neither
    eligible: np.ndarray = field(init=False)  # the model's filter and BPF
    attributes: list[str] = field(init=False)
    history: pd.DataFrame | None = field(init=False)  # opportunity_history (point-in-time values)
    stage_hist: pd.DataFrame = field(init=False)  # (opportunityid, stage, entered)
    events: pd.DataFrame = field(init=False)  # closed deals: account, owner, close time, outcome, value

    def __post_init__(self) -> None:
        opp = latest_opportunities(self.tables)
        self.opp = opp
        n = len(opp)
        self.created = as_utc(opp.get("createdon"), n).to_numpy(dtype="datetime64[ns]")
        self.outcome = outcome_labels(opp, self.config).to_numpy(dtype=float)
        state = opp.get("statecode", pd.Series([None] * n, index=opp.index)).map(option_key)
        closed = (state.notna() & state.ne("0")).to_numpy() | ~np.isnan(self.outcome)
        close = close_time(opp).to_numpy(dtype="datetime64[ns]")
        self.close = np.where(closed, close, np.datetime64("NaT", "ns"))
        self.eligible = selection_mask(opp, self.config, active_bpf(self.tables)).to_numpy(dtype=bool)
        self.attributes = model_attributes(self.config, self.metadata)
        self.history = self.tables.get("opportunity_history")
        self.stage_hist = stage_history(self.history)
        self.events = closed_events(opp, self.config)


def open_at(created: np.ndarray, close: np.ndarray, cut: pd.Timestamp) -> np.ndarray:
    """Open on `cut`: created at or before it and not closed by then (no close time, or one after it)."""
    at = np.datetime64(cut.tz_convert("UTC").tz_localize(None), "ns")
    created = np.asarray(created, dtype="datetime64[ns]")
    close = np.asarray(close, dtype="datetime64[ns]")
    return (created <= at) & (np.isnat(close) | (close > at))


def scored_mask(src: Source, cut: pd.Timestamp) -> np.ndarray:
    """The opportunities the product would have scored on `cut`: open then, created within the scoring
    window before it, inside the model's filter and BPF."""
    at = np.datetime64(cut.tz_convert("UTC").tz_localize(None), "ns")
    recent = src.created >= at - np.timedelta64(SCORING_WINDOW_DAYS, "D")
    return open_at(src.created, src.close, cut) & recent & src.eligible


def scoring_frame_at(src: Source, mask: np.ndarray, cut: pd.Timestamp, stats: Mapping[str, Any]) -> pd.DataFrame:
    """The rows of `mask` observed at `cut` as the training rows are observed at their reference time (stage
    from the stage history, values from `opportunity_history`, derived features from deals closed before
    `cut`), scored with the trained version's `stats` (prior, similar deals)."""
    rows = src.opp.loc[mask].copy()
    rows["_created"] = pd.Series(src.created[mask], index=rows.index).dt.tz_localize("UTC").array
    rows["_t"] = pd.Series(cut, index=rows.index).astype("datetime64[ns, UTC]")
    rows["_close"] = pd.NaT
    rows[STAGE_COLUMN] = None
    rows["_stage_start"] = pd.NaT
    rows = stage_at(rows.reset_index(drop=True), src.stage_hist)
    rows = point_in_time(rows, src.history, src.attributes)
    rows = with_account(rows, src.tables, src.attributes)
    rows = derive_open(rows, src.events, float(stats.get("prior_win_rate", 0.5)), stats)
    keep = ["opportunityid", STAGE_COLUMN] + [f["name"] for f in feature_descriptors(src.attributes, src.metadata)]
    return ensure_columns(rows, keep + COUNT_COLUMNS)


# ---------------------------------------------------------------------------------------------- metrics


def _rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


def top_decile(ids: Sequence[str], p: np.ndarray) -> np.ndarray:
    """Positions of the ceil(10%) highest scores (ties: the smaller opportunity id first)."""
    k = math.ceil(len(p) * TOP_SHARE)
    order = np.lexsort((np.asarray(ids, dtype=str), -np.asarray(p, dtype=float)))
    return order[:k]


def month_metrics(ids: Sequence[str], p: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """How the scores `p` of the opportunities open on a cut date compare with how they ended (`y`: 1 won,
    0 lost, NaN not ended yet, left out of the metrics but counted)."""
    from sklearn.metrics import roc_auc_score

    p, y = np.asarray(p, dtype=float), np.asarray(y, dtype=float)
    done = ~np.isnan(y)
    pe, ye, ide = p[done], y[done].astype(int), np.asarray(ids, dtype=str)[done]
    won = int(ye.sum())
    rate = won / len(ye) if len(ye) else None
    top = top_decile(ide, pe)
    lift = float(ye[top].mean()) / rate if rate and len(top) else None
    return {
        "scoredRows": int(len(p)),
        "closedSince": int(done.sum()),
        "stillOpen": int((~done).sum()),
        "won": won,
        "lost": int(len(ye) - won),
        "auc": _rounded(float(roc_auc_score(ye, pe))) if len(np.unique(ye)) == 2 else None,
        "ece": _rounded(ece(pe, ye)) if len(ye) else None,
        "wonRate": _rounded(rate),
        "meanPredicted": _rounded(float(pe.mean())) if len(pe) else None,
        "topDecileRows": int(len(top)),
        "topDecileWonRate": _rounded(float(ye[top].mean())) if len(top) else None,
        "topDecileLift": _rounded(lift),
    }


SUMMARY_KEYS = ("auc", "ece", "wonRate", "meanPredicted", "topDecileLift")


def summary(months: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Medians over the months that have each figure."""
    out: dict[str, Any] = {
        "months": len(months),
        "evaluated": sum(1 for m in months if m.get("status") == "evaluated"),
        "skipped": sum(1 for m in months if m.get("status") == "skipped"),
    }
    for key in SUMMARY_KEYS:
        values = [float(m[key]) for m in months if m.get(key) is not None]
        out["median" + key[0].upper() + key[1:]] = _rounded(float(np.median(values))) if values else None
    return out


# ---------------------------------------------------------------------------------------------- one month


@dataclass
class Month:
    report: dict[str, Any]  # the month's line of the report (camelCase)
    ids: list[str] = field(default_factory=list)  # the scored opportunities
    probabilities: list[float] = field(default_factory=list)
    outcomes: list[int | None] = field(default_factory=list)  # 1 won, 0 lost, None not ended


def run_month(
    src: Source,
    cut: pd.Timestamp,
    *,
    seed: int = 0,
    readiness: Sequence[float] = DEFAULT_READINESS,
    threads: int | None = None,
) -> Month:
    """Train the configuration as on `cut`, score what was open then, compare with how it ended. A month
    without enough data is reported with the reason (InsufficientDataError), not raised."""
    started = time.perf_counter()
    head: dict[str, Any] = {"cutDate": cut.date().isoformat()}
    mask = scored_mask(src, cut)
    try:
        data = build_training_frame(src.tables, src.metadata, src.config, cut.to_pydatetime())
        trained = train_model(data, src.config, seed=seed, readiness=readiness, threads=threads, explain=False)
    except InsufficientDataError as exc:
        reason = {"code": exc.code, "message": exc.message, "found": exc.found, "needed": exc.needed}
        head.update(status="skipped", reason=reason, openRows=int(mask.sum()))
        head["seconds"] = round(time.perf_counter() - started, 2)
        return Month(head)
    frame = scoring_frame_at(src, mask, cut, trained.meta["stats"])
    if len(frame):
        _, p = Scorer(trained.onnx_bytes, trained.meta).feed_probabilities(frame)
    else:
        p = np.zeros(0)
    p = np.round(np.asarray(p, dtype=float), PROBABILITY_DIGITS)
    y = src.outcome[mask]
    ids = frame["opportunityid"].astype(str).tolist()
    counts = trained.meta.get("counts") or {}
    head.update(
        status="evaluated",
        trainedRows=int(len(data.frame)),
        trainingCounts={"won": int(data.counts["won"]), "lost": int(data.counts["lost"])},
        algorithm=trained.meta.get("algorithm"),
        testAuc=(trained.meta.get("metrics") or {}).get("auc"),
        testRows=counts.get("test_rows"),
        **month_metrics(ids, p, y),
    )
    head["seconds"] = round(time.perf_counter() - started, 2)
    outcomes = [None if np.isnan(v) else int(v) for v in y]
    return Month(head, ids, p.tolist(), outcomes)
