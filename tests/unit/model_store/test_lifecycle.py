"""Lifecycle rules: retrain due, auto-publish decision, readiness."""

from __future__ import annotations

import datetime as dt

import pytest

from model_store import lifecycle

NOW = dt.datetime(2025, 5, 31, 3, 0, tzinfo=dt.UTC)


def test_months_before_clamps_to_month_end():
    assert lifecycle.months_before(NOW, 3) == dt.datetime(2025, 2, 28, 3, 0, tzinfo=dt.UTC)
    assert lifecycle.months_before(dt.datetime(2025, 1, 15, tzinfo=dt.UTC), 3).date() == dt.date(2024, 10, 15)


@pytest.mark.parametrize(
    "config, published, days, due",
    [
        ({"autoRetrain": True}, 1, 15, True),
        ({"autoRetrain": True}, 1, 14.9, False),
        ({"autoRetrain": False}, 1, 30, False),
        ({"autoRetrain": True}, None, 30, False),
        ({"autoRetrain": True, "status": "training"}, 1, 30, False),
    ],
)
def test_retrain_due(config, published, days, due):
    config = dict(config, lastTrainedAt=(NOW - dt.timedelta(days=days)).isoformat())
    assert lifecycle.retrain_due(config, published, NOW) is due


def test_retrain_due_without_a_training_date():
    assert lifecycle.retrain_due({"autoRetrain": True}, 1, NOW) is True


@pytest.mark.parametrize(
    "new, current, age_days, publish",
    [
        (0.95, 1.0, 10, True),  # exactly 95%
        (0.949, 1.0, 10, False),
        (0.50, 0.90, 95, True),  # current version older than 3 months
        (0.50, 0.90, 85, False),
        (None, 0.90, 10, False),
        (0.90, None, 10, False),
    ],
)
def test_auto_publish_decision(new, current, age_days, publish):
    decision = lifecycle.auto_publish_decision(
        new_auc=new, current_auc=current, current_trained_at=NOW - dt.timedelta(days=age_days), now=NOW
    )
    assert decision.publish is publish and decision.reason


@pytest.mark.parametrize(
    "auc, verdict", [(0.75, "Ready"), (0.7499, "OK"), (0.65, "OK"), (0.6, "Not ready"), (None, "Not ready")]
)
def test_readiness(auc, verdict):
    assert lifecycle.readiness(auc, ready=0.75, ok=0.65) == verdict


def test_parse_time():
    assert lifecycle.parse_time("2025-01-01T00:00:00Z") == dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    assert lifecycle.parse_time("2025-01-01T00:00:00") == dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    assert lifecycle.parse_time("garbage") is None and lifecycle.parse_time(None) is None


def _drift(version: int = 1, retrain: bool = True, measured_days_ago: float = 0.0) -> dict:
    measured = NOW_FOR_DRIFT - dt.timedelta(days=measured_days_ago)
    return {"version": version, "measuredAt": measured.isoformat(), "assessment": {"retrain": retrain, "message": "m"}}


NOW_FOR_DRIFT = dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("config", "published", "drift", "starts"),
    [
        ({"lastTrainedAt": "2026-11-25T00:00:00Z"}, 1, _drift(), True),
        ({"lastTrainedAt": "2026-11-25T00:00:00Z"}, 1, _drift(retrain=False), False),  # attributes only: no
        ({"lastTrainedAt": "2026-11-25T00:00:00Z"}, 2, _drift(version=1), False),  # another version's drift
        ({"lastTrainedAt": "2026-11-25T00:00:00Z"}, 1, _drift(measured_days_ago=7), False),  # before the training
        ({"lastTrainedAt": "2026-11-30T00:00:00Z"}, 1, _drift(), False),  # trained 1.5 days ago: too soon
        ({"lastTrainedAt": "2026-11-25T00:00:00Z", "autoRetrain": False}, 1, _drift(), False),
        ({"lastTrainedAt": "2026-11-25T00:00:00Z", "status": "training"}, 1, _drift(), False),
        ({"lastTrainedAt": "2026-11-25T00:00:00Z"}, None, _drift(), False),  # unpublished
        ({"lastTrainedAt": "2026-11-25T00:00:00Z"}, 1, None, False),
    ],
)
def test_early_retrain_on_drift(config, published, drift, starts):
    found = lifecycle.early_retrain(config, published, drift, NOW_FOR_DRIFT)
    assert (found is not None) == starts and (found is None or found == "drift: m")
