"""The scoring run's pure rules (no I/O): which model scores an opportunity, the trend to write, which rows
changed since the last written score, and the moment the lake's data describes. docs/SCORING.md states
each rule; `functions/services/scoring` applies them."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from modeling.config import ModelConfig, grade_for
from modeling.scoring import HISTORY_POINTS, REASONS_MAX_CHARS, TREND_TOLERANCE, reasons_json, trend, with_history

GRADE_LABELS = ("A", "B", "C", "D")
TREND_LABELS = ("Improving", "Steady", "Declining", "Not enough info")
NOT_ENOUGH_INFO = 3
NAME_MAX = 128  # msdyn_name
# What a decided row holds (the score history adds run, batch and written_at).
DECIDED_COLUMNS = (
    "opportunityid",
    "model",
    "version",
    "score",
    "grade",
    "trend",
    "previous_score",
    "reasons",
    "reasons_sha",
    "scoredon",
    "name",
    "changed",
    "facts",
    "recent",
)


@dataclass(frozen=True)
class PublishedModel:
    name: str
    version: int
    config: ModelConfig
    published_at: str

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"


def model_priority(model: PublishedModel) -> tuple[Any, ...]:
    """Sort key: the first model in this order scores an opportunity several models accept.

    1. a model with a filter before one without, and among those the fewest filter values first;
    2. a model bound to a business process flow before one that takes every BPF;
    3. the most recently published; 4. the name, so the choice is always deterministic."""
    cfg = model.config
    has_filter = cfg.filter_column is not None
    n_values = len(cfg.filter_values) if has_filter else 10**9
    has_bpf = cfg.business_process_flow is not None
    published = _timestamp(model.published_at)
    return (not has_filter, n_values, not has_bpf, -published, model.name.lower())


def _timestamp(text: str) -> float:
    try:
        value = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).timestamp()


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def decide_trend(prev_score: float | None, prev_trend: int | None, new_score: int, tolerance: int) -> int:
    """No previous score -> Not enough info; the same score as the last written one -> the trend written
    then (nothing moved, nothing to write); otherwise Improving / Steady / Declining by the tolerance."""
    if _missing(prev_score):
        return NOT_ENOUGH_INFO
    assert prev_score is not None
    if int(prev_score) == int(new_score) and not _missing(prev_trend):
        assert prev_trend is not None
        return int(prev_trend)
    return int(trend(int(prev_score), int(new_score), tolerance))


def reasons_sha(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()  # noqa: S324 - change detection, not security


def decide_rows(
    scored: pd.DataFrame,
    previous: pd.DataFrame,
    *,
    names: Mapping[str, str],
    model: str,
    version: int,
    grade_ranges: Sequence[int] | None,
    scored_on: str,
    tolerance: int = TREND_TOLERANCE,
) -> pd.DataFrame:
    """Grade, trend and reasons of every scored row, and whether it differs from the last written row
    (`previous`: opportunityid, score, grade, trend, reasons_sha, recent) in score, grade, trend or
    reasons (compared without the history, so a rerun with no change writes nothing). A changed row's
    reasons text carries its last HISTORY_POINTS written scores (`recent`, this one last) and its facts
    (every fact's points and value, JSON) for the lake's score history.
    Columns: DECIDED_COLUMNS. Raises ValueError if a reasons text is over the 10,000-character cap."""
    ids = scored["opportunityid"].astype(str).str.lower().tolist()
    prev = previous.drop_duplicates("opportunityid", keep="last").set_index("opportunityid").reindex(ids)
    scores = np.clip(scored["score"].to_numpy(dtype=float), 0, 100).astype(int).tolist()
    grades = [int(grade_for(s, grade_ranges)) for s in scores] if grade_ranges else scored["grade"].astype(int).tolist()
    raw = scored["reasons"].tolist() if "reasons" in scored.columns else [None] * len(ids)
    texts = [r if isinstance(r, str) else reasons_json(model, version, r or {}) for r in raw]
    shas = [reasons_sha(t) for t in texts]
    too_long = next((i for i, t in enumerate(texts) if len(t) > REASONS_MAX_CHARS), None)
    if too_long is not None:  # the shared serialiser guarantees the cap; never send more
        raise ValueError(f"reasons for {ids[too_long]} exceed {REASONS_MAX_CHARS} characters")
    prev_scores = [None if _missing(v) else float(v) for v in _column(prev, "score")]
    prev_grades = [None if _missing(v) else int(v) for v in _column(prev, "grade")]
    prev_trends = [None if _missing(v) else int(v) for v in _column(prev, "trend")]
    prev_shas = _column(prev, "reasons_sha")
    trends = [decide_trend(p, t, s, tolerance) for p, t, s in zip(prev_scores, prev_trends, scores, strict=True)]
    changed = [
        p is None or int(p) != s or pg != g or pt != t or psha != sha
        for p, pg, pt, psha, s, g, t, sha in zip(
            prev_scores, prev_grades, prev_trends, prev_shas, scores, grades, trends, shas, strict=True
        )
    ]
    prev_recent = _column(prev, "recent")
    facts = scored["facts"].tolist() if "facts" in scored.columns else [None] * len(ids)
    recents: list[str | None] = [None] * len(ids)
    facts_json: list[str | None] = [None] * len(ids)
    for i in (i for i, c in enumerate(changed) if c):
        points = _recent(prev_recent[i]) + [{"date": scored_on, "score": scores[i], "grade": GRADE_LABELS[grades[i]]}]
        points = points[-HISTORY_POINTS:]
        recents[i] = json.dumps(points, separators=(",", ":"))
        if not isinstance(raw[i], str):
            texts[i] = with_history(texts[i], points) or reasons_json(model, version, raw[i] or {}, history=points)
        facts_json[i] = None if facts[i] is None else facts[i].to_json()
    return pd.DataFrame(
        {
            "opportunityid": ids,
            "model": model,
            "version": int(version),
            "score": scores,
            "grade": grades,
            "trend": trends,
            "previous_score": prev_scores,
            "reasons": texts,
            "reasons_sha": shas,
            "scoredon": scored_on,
            "name": [row_name(names.get(i), i) for i in ids],
            "changed": changed,
            "facts": facts_json,
            "recent": recents,
        },
        columns=list(DECIDED_COLUMNS),
    )


def _recent(text: Any) -> list[dict[str, Any]]:
    """The written scores a state row keeps (a JSON list), or none."""
    if not isinstance(text, str) or not text:
        return []
    try:
        value = json.loads(text)
    except ValueError:
        return []
    return [p for p in value if isinstance(p, dict)] if isinstance(value, list) else []


def _column(frame: pd.DataFrame, name: str) -> list[Any]:
    return frame[name].astype(object).tolist() if name in frame.columns else [None] * len(frame)


def row_name(name: Any, opportunity_id: str) -> str:
    """msdyn_name: the opportunity's name (<= 128 characters), or a stand-in when it has none."""
    return (name if isinstance(name, str) and name else f"Opportunity {opportunity_id}")[:NAME_MAX]


def past_outcome_rows(frame: pd.DataFrame, configs: Sequence[ModelConfig]) -> pd.DataFrame:
    """The rows that are a won or lost deal for at least one model: the only other deals the past-outcome
    features (account, owner and account-and-value win rates) read."""
    from modeling.dataset.tables import outcome_labels

    if frame.empty or not configs:
        return frame.iloc[0:0]
    keep = np.zeros(len(frame), dtype=bool)
    for config in configs:
        keep |= outcome_labels(frame, config).notna().to_numpy()
    return frame[keep].reset_index(drop=True)


def snapshot_time(synced_at: dt.datetime | None, frames: Mapping[str, pd.DataFrame]) -> dt.datetime | None:
    """The moment the lake's data describes: the later of the last sync's time and the newest
    createdon/modifiedon in the opportunities and BPF instances. Derived features are measured to it, so
    two runs over the same snapshot give the same scores, and an org whose clock runs ahead of the
    machine's still has its new records eligible. None when there is nothing to go by."""
    candidates: list[pd.Timestamp] = []
    if synced_at is not None:
        candidates.append(
            pd.Timestamp(synced_at).tz_convert("UTC") if synced_at.tzinfo else pd.Timestamp(synced_at, tz="UTC")
        )
    for table, cols in (("opportunity", ("createdon", "modifiedon")), ("opportunitysalesprocess", ("modifiedon",))):
        frame = frames.get(table)
        for col in cols:
            if frame is not None and col in frame.columns and len(frame):
                value = pd.to_datetime(frame[col], utc=True, errors="coerce").max()
                if not pd.isna(value):
                    candidates.append(value)
    return max(candidates).to_pydatetime() if candidates else None
