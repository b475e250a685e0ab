"""The scoring run's pure rules: model priority, trend, what changed, snapshot time."""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd
import pytest

from modeling.config import ModelConfig
from modeling.scoring_rules import PublishedModel, decide_rows, decide_trend, model_priority, snapshot_time


def _model(name: str, published: str, *, values: list[str] | None = None, bpf: str | None = None) -> PublishedModel:
    cfg = ModelConfig.from_json(
        {
            "name": name,
            "filterColumn": "new_channel" if values else None,
            "filterValues": values or [],
            "businessProcessFlow": bpf,
        }
    )
    return PublishedModel(name, 1, cfg, published)


def test_model_priority_filter_then_bpf_then_newest_then_name() -> None:
    broad = _model("Broad", "2026-03-01T00:00:00Z")
    one = _model("One", "2026-01-01T00:00:00Z", values=["1"])
    two = _model("Two", "2026-05-01T00:00:00Z", values=["1", "2"])
    bpf = _model("Bpf", "2026-01-01T00:00:00Z", bpf="b")
    newer = _model("Newer", "2026-04-01T00:00:00Z")
    a, b = _model("a", "2026-01-01T00:00:00Z"), _model("b", "2026-01-01T00:00:00Z")
    order = sorted([broad, two, bpf, newer, one], key=model_priority)
    assert [m.name for m in order] == ["One", "Two", "Bpf", "Newer", "Broad"]
    assert sorted([b, a], key=model_priority)[0].name == "a", "same filter and time: by name"


def test_decide_trend_rules() -> None:
    assert decide_trend(None, None, 50, 3) == 3
    assert decide_trend(float("nan"), None, 50, 3) == 3
    assert decide_trend(50.0, 3, 50, 3) == 3, "unchanged score keeps the written trend"
    assert decide_trend(50.0, 3, 54, 3) == 0
    assert decide_trend(50.0, 0, 47, 3) == 1
    assert decide_trend(50.0, 1, 46, 3) == 2


def _scored(scores: list[int], reasons: list[str] | None = None) -> pd.DataFrame:
    ids = [f"id{i}" for i in range(len(scores))]
    texts = reasons or [json.dumps({"model": "M", "version": 1, "positive": [], "negative": []})] * len(scores)
    return pd.DataFrame({"opportunityid": ids, "score": scores, "grade": 0, "reasons": texts})


def test_decide_rows_marks_only_rows_that_differ_from_the_last_written_one() -> None:
    first = decide_rows(
        _scored([80, 40, 10]),
        pd.DataFrame(columns=["opportunityid"]),
        names={"id0": "Deal"},
        model="M",
        version=1,
        grade_ranges=(75, 50, 25),
        scored_on="2026-12-01",
    )
    assert first["changed"].tolist() == [True, True, True] and first["trend"].tolist() == [3, 3, 3]
    assert first["grade"].tolist() == [0, 2, 3] and first["name"].tolist()[:2] == ["Deal", "Opportunity id1"]
    prev = first[["opportunityid", "score", "grade", "trend", "reasons_sha"]]
    other = json.dumps({"model": "M", "version": 1, "positive": [{"text": "x"}], "negative": []})
    texts = [first["reasons"][0], first["reasons"][1], other]
    again = decide_rows(
        _scored([80, 45, 10], texts),
        prev,
        names={},
        model="M",
        version=1,
        grade_ranges=(75, 50, 25),
        scored_on="2026-12-02",
    )
    assert again["changed"].tolist() == [False, True, True], "same / score moved / reasons changed"
    assert again["trend"].tolist() == [3, 0, 3] and again["previous_score"].tolist() == [80.0, 40.0, 10.0]
    with pytest.raises(ValueError, match="10000"):
        decide_rows(
            _scored([1], ["x" * 10_001]),
            prev,
            names={},
            model="M",
            version=1,
            grade_ranges=None,
            scored_on="2026-12-02",
        )


def test_snapshot_time_is_the_later_of_the_sync_and_the_newest_change() -> None:
    sync = dt.datetime(2026, 12, 1, 5, 0, tzinfo=dt.UTC)
    opp = pd.DataFrame(
        {"createdon": pd.to_datetime(["2026-11-01T00:00:00Z"]), "modifiedon": pd.to_datetime(["2026-12-01T06:00:00Z"])}
    )
    assert snapshot_time(sync, {"opportunity": opp}) == dt.datetime(2026, 12, 1, 6, 0, tzinfo=dt.UTC)
    assert snapshot_time(sync, {}) == sync
    assert snapshot_time(None, {}) is None
