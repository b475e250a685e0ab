"""A 12-month backtest of the seeded synthetic org (the session mock: 1,500 opportunities) over real HTTP
through the local runner: sync, create a model, `POST /api/models/{name}/backtest`, poll the job, read
`GET .../backtest`; every month's figures are then recomputed independently from the lake's Delta tables
(tests/integration/models/backtest_check.py). The runner's BACKTEST_DELIVERY_SECONDS is 0, so each
delivery runs one month and queues the rest: the report is assembled from 12 deliveries' saved months."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from functions.app_context import AppContext
from functions.settings import load_settings
from tests.integration.http import call, synced_runner, wait_job
from tests.integration.models.backtest_check import check_report, lake_opportunities

pytestmark = pytest.mark.integration

NAME = "Backtest_Synth"


@pytest.fixture(scope="module")
def app(
    azurite: Any, mock_info: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, AppContext]]:
    """The runner on containers of its own, the seeded org synced into its lake and a model created."""
    log = tmp_path_factory.mktemp("backtest") / "runner.log"
    with synced_runner(azurite, mock_info, log, tag="bt", BACKTEST_DELIVERY_SECONDS="0") as (url, settings):
        status, created = call(url, "POST", "/api/models", {"name": NAME})
        assert status == 202, created
        assert wait_job(url, created["job"]["id"])["status"] == "succeeded"
        yield url, AppContext(load_settings(settings))


def test_a_12_month_backtest_matches_an_independent_recomputation_from_the_lake(app: tuple[str, AppContext]) -> None:
    url, ctx = app
    status, body = call(url, "GET", f"/api/models/{NAME}/backtest")
    assert status == 404 and body["error"]["code"] == "BacktestNotFound"
    status, accepted = call(url, "POST", f"/api/models/{NAME}/backtest", {})
    assert status == 202, accepted
    assert len(accepted["cutDates"]) == 12
    job = wait_job(url, accepted["job"]["id"], timeout=600)
    assert job["status"] == "succeeded", job
    assert job["attempts"] == 12 and job["progress"] == {"monthsDone": 11, "months": 12}  # a month a delivery
    assert all(ctx.model_store.backtests.month(NAME, job["id"], c) is None for c in accepted["cutDates"])
    status, report = call(url, "GET", f"/api/models/{NAME}/backtest")
    assert status == 200 and report["running"] is None
    assert report["months"] == job["result"]["months"] and report["cutDates"] == accepted["cutDates"]

    scores = ctx.model_store.backtests.scores(NAME)
    assert scores is not None and scores["jobId"] == job["id"]
    check_report(report, scores, lake_opportunities(ctx.lake), training_months=24)
    evaluated = [m for m in report["months"] if m["status"] == "evaluated"]
    assert len(evaluated) == 12  # 2.7 years of history: every month trains
    assert all(m["closedSince"] > 20 for m in evaluated)
    assert any(m["stillOpen"] > 0 for m in evaluated)  # the latest months still have open deals
    # the planted signal holds over time, and scores are not leaking their outcome
    assert 0.6 < report["summary"]["medianAuc"] < 0.99, report["summary"]
    print("backtest seconds per month:", [m["seconds"] for m in report["months"]], "total", report["seconds"])


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"months": 0}, 400, "months"),
        ({"from": "2025-01-15", "to": "2025-03-01"}, 400, "from"),
        ({"from": "2025-01-01", "to": "2026-12-01", "months": 3}, 400, "months"),
        ({"until": "2025-01-01"}, 400, "until"),
    ],
)
def test_bad_ranges_are_400_naming_the_field(app: tuple[str, AppContext], body: dict, status: int, field: str) -> None:
    url, _ = app
    got, payload = call(url, "POST", f"/api/models/{NAME}/backtest", body)
    assert got == status and payload["error"]["field"] == field, payload
    assert call(url, "POST", "/api/models/NoSuchModel/backtest", {})[0] == 404
