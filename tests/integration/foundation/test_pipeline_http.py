"""The whole pipeline over real HTTP through the local runner: sync -> create/train (queue) -> publish ->
score (queue fan-out + $batch write-back) -> the widget's decoded row, on the session's mock org."""

from typing import Any

import pytest

from local_runner import stack
from tests.conftest import mock_call
from tests.integration.http import call, wait_job

pytestmark = pytest.mark.integration


def wait(base: str, accepted: dict[str, Any], timeout: float = 300) -> dict[str, Any]:
    return wait_job(base, accepted["job"]["id"], timeout)


@pytest.fixture(scope="module")
def pipeline_runner(azurite, mock_info, tmp_path_factory):
    settings = stack.unique_settings(azurite, mock_info, tag="p")
    log = tmp_path_factory.mktemp("pipeline") / "runner.log"
    runner = stack.start_runner(settings, log_path=str(log), extra_args=["--no-timers"])
    try:
        yield runner
    finally:
        runner.stop()


def test_sync_train_publish_score_and_read_back_over_http(pipeline_runner, mock_info, mock_server):
    mock_call(mock_info, "POST", "/_mock/reset")
    base = pipeline_runner.url

    status, accepted = call(base, "POST", "/api/sync", {"full": True})
    assert status == 202, accepted
    job = wait(base, accepted)
    assert job["status"] == "succeeded", job

    status, accepted = call(base, "POST", "/api/models", {"name": "Pipeline_All"})
    assert status == 202, accepted
    job = wait(base, accepted)
    assert job["status"] == "succeeded", job

    status, perf = call(base, "GET", "/api/models/Pipeline_All/performance")
    assert status == 200, perf
    metrics = perf.get("metrics", perf)
    assert 0.6 < metrics["auc"] <= 1.0 and 0 <= metrics["brier"] < 0.25
    excluded = {k for k, v in (perf.get("leakage") or metrics.get("leakage") or {}).items() if v.get("excluded")}
    assert "new_contractnumber" in excluded
    choice = perf["choice"]  # every candidate's validation figures, and the one the rule chose
    assert set(choice["candidates"]) == {
        "logistic_regression:attributes",
        "logistic_regression",
        "hist_gradient_boosting:attributes",
        "hist_gradient_boosting",
    }
    assert choice["candidate"] in choice["candidates"] and choice["calibration"]["method"] in {"none", "platt", "blend"}
    lag = choice["candidates"][choice["candidate"]]
    assert lag["behindBest"] <= lag["standardError"] or lag["behindBest"] == 0

    status, body = call(base, "POST", "/api/models/Pipeline_All/publish", {})
    assert status == 200, body

    mock_call(mock_info, "POST", "/_mock/stats/reset")
    status, accepted = call(base, "POST", "/api/score", {})
    assert status == 202, accepted
    job = wait(base, accepted)
    assert job["status"] == "succeeded", job

    stats = mock_call(mock_info, "GET", "/_mock/stats")
    assert stats["bulk_requests"] >= 1 and stats["by_status"].get("500", 0) == 0  # UpsertMultiple

    rows = mock_server.org.rows("msdyn_predictivescore")
    opportunities = {o["opportunityid"]: o for o in mock_server.org.rows("opportunity")}
    assert rows, "no score rows were written back"
    assert len({r["msdyn_entityid"] for r in rows}) == len(rows)  # one row per opportunity
    assert all(opportunities[r["msdyn_entityid"]]["statecode"] == 0 for r in rows)  # only open ones
    assert stats["bulk_requests"] <= -(-len(rows) // 1000) + stats["by_status"].get("429", 0)

    best = max(rows, key=lambda r: r["msdyn_score"])
    status, decoded = call(base, "GET", f"/api/opportunities/{best['msdyn_entityid']}/score")
    assert status == 200, decoded
    assert decoded["score"] == best["msdyn_score"]
    reasons = decoded["reasons"]
    assert reasons["positive"] and len(reasons["positive"]) <= 5 and len(reasons["negative"]) <= 5
    top = reasons["positive"][0]
    assert top["points"] >= 1 and top["headline"] and any(ch.isdigit() for ch in top["insight"])
    assert reasons["format"] == 2 and [p["score"] for p in reasons["history"]] == [best["msdyn_score"]]
    assert [p["score"] for p in decoded["history"]] == [best["msdyn_score"]] and decoded["lastChange"] is None
    assert len(best["msdyn_scorereasons"]) <= 10_000
