"""A 12-month backtest of IBM sales win/loss (../shared/datasets, skipped when absent): the CSV imported into
the mock through the shipped mapping, synced into a lake on Azurite, a model of the last 6 months' deals
backtested by the service, and every month checked against the lake read by deltalake
(tests/integration/models/backtest_check.py). IBM has no dates: the mapping spreads creation over 900 days in
id order and closes each deal 30 days later, so every deal open on a cut date has ended by now."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from connectors.clock import utcnow
from functions.app_context import AppContext
from functions.services.backtest import run_backtest
from functions.services.sync import run_sync
from functions.settings import load_settings
from local_runner import stack
from mock_dataverse.server import MockServer
from modeling.backtest import cut_dates
from modeling.config import ModelConfig
from tests.integration.models.backtest_check import check_report, lake_opportunities

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[3]
DATASET = REPO / ".." / "shared" / "datasets" / "ibm_sales_win_loss"
NAME = "IBM_Backtest"


def test_ibm_backtest_matches_an_independent_recomputation_from_the_lake(azurite: Any) -> None:
    if not DATASET.is_dir():
        pytest.skip(f"shared data set ibm_sales_win_loss not present at {DATASET}")
    with MockServer(mapping=REPO / "mappings" / "ibm_sales_win_loss.json") as srv:
        ctx = AppContext(load_settings(stack.unique_settings(azurite, srv.info, tag="ibm")))
        run_sync(ctx.lake, ctx.dataverse, full=True)
    ctx.model_store.create_config(NAME, ModelConfig(name=NAME, training_period="6m").to_json())
    cuts = [c.date().isoformat() for c in cut_dates({}, utcnow())]
    report = run_backtest(ctx, NAME, cuts, actor="test")
    scores = ctx.model_store.backtests.scores(NAME)
    assert scores is not None and ctx.model_store.backtests.report(NAME) == report
    opp = lake_opportunities(ctx.lake)
    assert len(opp) == 78025 and report["opportunities"] == 78025
    check_report(report, scores, opp, training_months=6)
    evaluated = [m for m in report["months"] if m["status"] == "evaluated"]
    assert len(evaluated) == 12 and all(m["stillOpen"] == 0 and m["closedSince"] > 1000 for m in evaluated)
    assert report["summary"]["medianAuc"] > 0.75 and report["summary"]["medianTopDecileLift"] > 1.5, report["summary"]
    print("IBM backtest seconds per month:", [m["seconds"] for m in report["months"]], "total", report["seconds"])
