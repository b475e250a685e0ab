"""modeling.segments: metrics per segment equal the metrics of each segment's records, small segments are
flagged (not hidden), and the test records a version keeps round-trip (per-stage rows included)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from modeling import segments
from modeling.evaluation import ece


def test_each_segment_gets_the_metrics_of_its_own_records():
    rng = np.random.default_rng(5)
    n = 600
    keys = rng.choice(["north", "south", "east"], size=n, p=[0.5, 0.4, 0.1]).astype(object)
    y = (rng.random(n) < 0.35).astype(int)
    p = np.clip(0.35 + np.where(keys == "north", 0.4, 0.05) * (y - 0.35) + rng.normal(0, 0.15, n), 0.01, 0.99)
    keys[:7] = None
    rows = {r["value"]: r for r in segments.by_segment(p, y, keys.tolist(), {"north": "North"})}
    assert set(rows) == {"north", "south", "east", None}
    assert rows["north"]["label"] == "North" and rows[None]["label"] == "(empty)"
    for value, row in rows.items():
        mask = np.array([k == value for k in keys]) if value is not None else np.array([k is None for k in keys])
        assert row["closed"] == mask.sum() and row["won"] == y[mask].sum()
        assert row["ece"] == pytest.approx(ece(p[mask], y[mask]), abs=1e-4)
        if len(set(y[mask])) == 2:
            assert row["auc"] == pytest.approx(roc_auc_score(y[mask], p[mask]), abs=1e-4)
    assert rows["north"]["auc"] > rows["south"]["auc"]  # the planted difference shows
    assert sum(r["closed"] for r in rows.values()) == n
    assert [r["closed"] for r in rows.values()] == sorted((r["closed"] for r in rows.values()), reverse=True)


def test_small_and_single_outcome_segments_are_flagged_not_hidden():
    p = np.linspace(0.1, 0.9, 100)
    y = np.array([1, 0] * 50)
    keys = ["big"] * 60 + ["few"] * (segments.MIN_SEGMENT_CLOSED - 1) + ["one-sided"] * 11
    y[60 + segments.MIN_SEGMENT_CLOSED - 1 :] = 1
    rows = {r["value"]: r for r in segments.by_segment(p, y, keys)}
    assert not rows["big"]["small"]
    assert rows["few"]["small"] and rows["few"]["auc"] is not None
    assert rows["one-sided"]["small"] and rows["one-sided"]["auc"] is None and rows["one-sided"]["won"] == 11


def test_kept_test_records_round_trip():
    ids = ["A", "B", "C"]
    kept = segments.kept_records(ids, np.array([0.12345, 0.5, 0.9]), np.array([0, 1, 1]), ["Qualify", None, "Close"])
    assert "row" not in kept and kept["p"] == [0.1235, 0.5, 0.9] and kept["stages"] == ["Qualify", None, "Close"]
    frame = segments.kept_rows({"ids": ids, **kept})
    assert frame is not None and frame["opportunityid"].tolist() == ["a", "b", "c"]
    assert frame["won"].tolist() == [0, 1, 1]
    # per-stage models: several rows of one deal
    rows = ["A", "A", "B"]
    stages = ["Qualify", "Develop", "Qualify"]
    kept = segments.kept_records(rows, np.array([0.2, 0.3, 0.4]), np.array([1, 1, 0]), stages)
    frame = segments.kept_rows({"ids": list(dict.fromkeys(rows)), **kept})
    assert frame is not None and frame["opportunityid"].tolist() == ["a", "a", "b"]
    assert frame["stage"].tolist() == ["Qualify", "Develop", "Qualify"]
    assert segments.kept_rows({"ids": ids}) is None  # a version trained before the records were kept
