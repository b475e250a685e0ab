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
