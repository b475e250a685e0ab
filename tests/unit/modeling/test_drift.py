"""modeling.drift: PSI on known distributions, its thresholds, population drift of a feed against a stored
profile (the shifted attribute named, derived inputs never alerting), the score's reference population,
realized performance and the assessment."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from modeling import drift
from modeling.evaluation import ece
from modeling.features import MISSING, OTHER

SPEC = {
    "features": [
        {
            "name": "budgetstatus",
            "input": "budgetstatus",
            "kind": "category",
            "label": "Budget",
            "options": {"0": "No Committed", "1": "May Buy", "2": "Can Buy"},
            "categories": ["0", "1", "2", OTHER, MISSING],
        },
        {"name": "estimatedvalue", "input": "estimatedvalue", "kind": "number", "label": "Value", "bins": [10, 20]},
        {
            "name": "d_days_open",
            "input": "d_days_open",
            "kind": "number",
            "label": "Days open",
            "derived": True,
            "bins": [30, 90],
        },  # fmt: skip
    ]
}


def _feed(rng: np.random.Generator, n: int, budget_p: list[float], days_scale: float = 40.0) -> dict[str, np.ndarray]:
    budget = rng.choice(["0", "1", "2", MISSING], size=n, p=budget_p).astype(object)
    value = rng.uniform(0, 30, size=n).astype(np.float32)
    value[rng.random(n) < 0.1] = np.nan
    days = rng.exponential(days_scale, size=n).astype(np.float32)
    columns = {"budgetstatus": budget, "estimatedvalue": value, "d_days_open": days}
    return {k: v.reshape(-1, 1) for k, v in columns.items()}


def _by_hand(e: dict[str, float], a: dict[str, float]) -> float:
    return sum((a[k] - e[k]) * math.log(a[k] / e[k]) for k in e)


def test_psi_of_known_distributions():
    same = {"a": 0.2, "b": 0.3, "c": 0.5}
    assert drift.psi(same, same) == 0.0
    moved = {"a": 0.5, "b": 0.3, "c": 0.2}
    assert drift.psi(same, moved) == pytest.approx(_by_hand(same, moved))
    assert drift.psi(same, moved) == pytest.approx(drift.psi(moved, same))  # symmetric
    # a bucket absent on one side counts as EMPTY_SHARE: large but finite
    gone = drift.psi({"a": 0.5, "b": 0.5}, {"a": 1.0})
    assert math.isfinite(gone) and gone == pytest.approx(
        _by_hand({"a": 0.5, "b": 0.5}, {"a": 1.0, "b": drift.EMPTY_SHARE}), rel=1e-3
    )
    assert gone > drift.PSI_SIGNIFICANT


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.0, "stable"), (drift.PSI_MODERATE - 1e-9, "stable"), (drift.PSI_MODERATE, "moderate"),
     (drift.PSI_SIGNIFICANT, "moderate"), (drift.PSI_SIGNIFICANT + 1e-9, "significant"), (None, None)],
)  # fmt: skip
def test_levels_follow_the_documented_thresholds(value, expected):
    assert drift.level(value) == expected


def test_shares_sum_to_one_and_count_each_value():
    keys = np.array(["x", "y", "y", "z"], dtype=object)
    found = drift.shares(keys)
    assert found == {"x": 0.25, "y": 0.5, "z": 0.25}
    assert drift.shares(np.array([], dtype=object)) == {}


def _profile(rng: np.random.Generator) -> dict:
    train = _feed(rng, 4000, [0.3, 0.3, 0.3, 0.1])
    return drift.training_profile(train, SPEC, rng.uniform(0, 1, 800), rng.uniform(0, 0.6, 600))


def test_population_drift_names_the_shifted_attribute_and_not_a_stable_one():
    rng = np.random.default_rng(1)
    profile = _profile(rng)
    assert set(profile["attributes"]) == {"budgetstatus", "estimatedvalue", "d_days_open"}
    for found in profile["attributes"].values():
        assert sum(found.values()) == pytest.approx(1.0, abs=1e-3)

    stable = drift.population(profile, _feed(rng, 600, [0.3, 0.3, 0.3, 0.1]), SPEC, rng.uniform(0, 0.6, 600))
    assert stable["measured"] and stable["drifted"] == [] and stable["moderate"] == []
    assert all(r["level"] == "stable" for r in stable["attributes"]), stable["attributes"]
    assert stable["score"]["level"] == "stable" and stable["score"]["against"] == "open records at training"

    shifted_feed = _feed(rng, 600, [0.05, 0.1, 0.8, 0.05], days_scale=200.0)
    shifted = drift.population(profile, shifted_feed, SPEC, rng.uniform(0.4, 1.0, 600))
    assert shifted["drifted"] == ["budgetstatus"]  # d_days_open drifted too, but derived inputs never alert
    rows = {r["attribute"]: r for r in shifted["attributes"]}
    expected = drift.psi(profile["attributes"]["budgetstatus"], drift.shares(shifted_feed["budgetstatus"].ravel()))
    assert rows["budgetstatus"]["psi"] == pytest.approx(expected, abs=1e-4)
    assert rows["d_days_open"]["level"] == "significant" and rows["d_days_open"]["derived"]
    assert rows["budgetstatus"]["topShift"]["value"] == "Can Buy"
    assert shifted["score"]["level"] == "significant"
    assert [r["psi"] for r in shifted["attributes"]] == sorted((r["psi"] for r in shifted["attributes"]), reverse=True)


def test_too_few_open_records_are_not_judged():
    rng = np.random.default_rng(2)
    n = drift.MIN_OPEN_RECORDS - 1
    found = drift.population(_profile(rng), _feed(rng, n, [1.0, 0, 0, 0]), SPEC, rng.uniform(0, 1, n))
    assert not found["measured"] and found["drifted"] == [] and found["score"] is None


def test_the_score_falls_back_to_the_test_records_without_open_ones():
    rng = np.random.default_rng(3)
    p_test = rng.uniform(0, 1, 500)
    profile = drift.training_profile(_feed(rng, 500, [0.3, 0.3, 0.3, 0.1]), SPEC, p_test, np.zeros(0))
    p = rng.uniform(0, 1, 400)
    found = drift.score_drift(profile, p)
    assert found is not None and found["against"] == "test records"
    expected = drift.psi(drift.shares(drift.score_keys(p_test)), drift.shares(drift.score_keys(p)))
    assert found["psi"] == pytest.approx(expected, abs=1e-4) and found["vsTest"] == found["psi"]


def _outcomes(rng: np.random.Generator, n: int, signal: float) -> tuple[np.ndarray, np.ndarray]:
    y = (rng.random(n) < 0.4).astype(int)
    p = np.clip(0.4 + signal * (y - 0.4) + rng.normal(0, 0.2, n), 0.01, 0.99)
    return p, y


def test_realized_performance_against_the_test_metrics():
    rng = np.random.default_rng(4)
    p, y = _outcomes(rng, 400, 0.5)
    test = {"auc": float(roc_auc_score(y, p)), "ece": 0.05, "conversion_rate": 0.4}
    same = drift.realized(p, y, test)
    assert same["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-4)
    assert same["ece"] == pytest.approx(ece(p, y), abs=1e-4) and same["wonRate"] == pytest.approx(y.mean(), abs=1e-4)
    assert same["enough"] and not same["worse"] and same["aucDrop"] == pytest.approx(0.0, abs=1e-4)

    weak_p, weak_y = _outcomes(rng, 400, 0.05)
    weak = drift.realized(weak_p, weak_y, test)
    assert weak["aucDrop"] > drift.AUC_MARGIN and weak["enough"] and weak["worse"]

    few = drift.realized(weak_p[: drift.MIN_REALIZED - 1], weak_y[: drift.MIN_REALIZED - 1], test)
    assert not few["enough"] and not few["worse"]  # the same drop on too few records says nothing
    one_outcome = drift.realized(np.full(200, 0.3), np.zeros(200, dtype=int), test)
    assert one_outcome["auc"] is None and not one_outcome["worse"]


def test_assessment_alerts_and_early_retrain_conditions():
    quiet = {"drifted": [], "score": {"psi": 0.02, "level": "stable"}}
    assert drift.assess(quiet, None) == {"alert": False, "retrain": False, "reasons": [], "message": "no drift"}
    moved = drift.assess({"drifted": ["new_channel"], "score": {"psi": 0.05, "level": "stable"}}, None)
    assert moved["alert"] and not moved["retrain"] and "new_channel" in moved["message"]
    assert "retrain" in moved["message"]
    scores = drift.assess({"drifted": [], "score": {"psi": 0.4, "level": "significant"}}, None)
    assert scores["alert"] and scores["retrain"]
    worse = {"worse": True, "auc": 0.7, "closed": 300, "testAuc": 0.85}
    got_worse = drift.assess(quiet, worse)
    assert got_worse["retrain"] and "got worse" in got_worse["message"] and "300" in got_worse["message"]
