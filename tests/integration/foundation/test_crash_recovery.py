"""`kill -9` of the Functions worker in the middle of a sync, a scoring run, a training, a run's planning and
a backtest, then a restart: the redelivered queue message takes the job over once its heartbeat is stale (the dead
sync's 15 s lease expires, `recover` completes a half-committed table; the training starts again), a run
whose planner died reads failed and is resumed; every job ends succeeded or failed with a reason."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import pytest

from connectors.blobs import JsonBlobs, container_client
from connectors.lake import Lake
from local_runner import stack
from tests.conftest import mock_call
from tests.integration.http import call
from tests.integration.http import wait_job as _wait_job
from tests.integration.sync.test_sync_mock import SYNCED, assert_history_clean, assert_lake_equals_mock

pytestmark = pytest.mark.integration
STALE = 10  # JOB_STALE_SECONDS of these runners (20 by default): a dead worker's job is taken over sooner


def test_kill_9_mid_sync_then_restart_equals_a_clean_sync(azurite, mock_info, mock_server, tmp_path) -> None:
    mock_call(mock_info, "POST", "/_mock/reset")
    settings = stack.unique_settings(azurite, mock_info, tag="k", JOB_STALE_SECONDS=str(STALE))
    lake = Lake(container_client(azurite.connection_string, settings["LAKE_CONTAINER"]))
    log = str(tmp_path / "runner.log")
    # slow every request down so the kill lands while tables are half done
    mock_call(mock_info, "POST", "/_mock/faults", {"latency_ms": 150})
    first = stack.start_runner(settings, log_path=log, extra_args=["--no-timers"])
    try:
        status, accepted = call(first.url, "POST", "/api/sync", {"full": True})
        assert status == 202, accepted
        job_id = accepted["job"]["id"]
        deadline = time.monotonic() + 120
        while not any(lake.tables.exists(f"history/{t}") for t in SYNCED):
            assert time.monotonic() < deadline, "no table was committed in time"
            time.sleep(0.05)
        os.kill(first.process.pid, signal.SIGKILL)  # the worker dies mid-sync
        first.process.wait(10)
        killed = time.monotonic()
    finally:
        first.stop()
    done = [t for t in SYNCED if lake.synced(t)]
    assert 0 < len(done) < len(SYNCED) or not lake.synced("opportunity"), "the kill came too late to test anything"
    mock_call(mock_info, "POST", "/_mock/faults", {})
    second = stack.start_runner(settings, log_path=log, extra_args=["--no-timers"])
    try:
        job = _wait_job(second.url, job_id, timeout=180)  # redelivered after the message's visibility timeout
        print(f"\nsync: succeeded {time.monotonic() - killed:.1f} s after the kill (restart included)")
    finally:
        second.stop()
    assert job["status"] == "succeeded" and not job["result"]["skipped"], job
    assert job["attempts"] == 2 and job["takenOverAt"], job  # the redelivery took the dead worker's job over
    assert_lake_equals_mock(lake, mock_server)
    assert_history_clean(lake)


def _wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:.0f} s"
        time.sleep(0.05)


def test_kill_9_mid_scoring_run_then_restart_writes_every_score_once(azurite, mock_info, mock_server, tmp_path) -> None:
    mock_call(mock_info, "POST", "/_mock/reset")
    settings = stack.unique_settings(azurite, mock_info, tag="s", SCORING_BATCH_SIZE="40")
    lake = Lake(container_client(azurite.connection_string, settings["LAKE_CONTAINER"]))
    log = str(tmp_path / "runner.log")
    first = stack.start_runner(settings, log_path=log, extra_args=["--no-timers"])
    try:
        _synced_and_trained(first.url, "Crash")
        assert call(first.url, "POST", "/api/models/Crash/publish", {})[0] == 200
        mock_call(mock_info, "POST", "/_mock/faults", {"latency_ms": 300})  # slow write-back: the kill lands mid-run
        status, accepted = call(first.url, "POST", "/api/score", {})
        assert status == 202, accepted
        run_id = accepted["job"]["id"]
        batches = int(accepted["run"]["batches"])
        assert batches >= 4, accepted["run"]
        _wait_for(lambda: lake.list(f"scoring/runs/{run_id}/results/"), 180, "a first batch result")
        os.kill(first.process.pid, signal.SIGKILL)  # the worker dies mid-run
        first.process.wait(10)
        killed = time.monotonic()
    finally:
        first.stop()
    done = len(lake.list(f"scoring/runs/{run_id}/results/"))
    assert 0 < done < batches, f"the kill came at {done} of {batches} batches"
    mock_call(mock_info, "POST", "/_mock/faults", {})
    second = stack.start_runner(settings, log_path=log, extra_args=["--no-timers"])
    try:
        job = _wait_job(second.url, run_id, timeout=240)  # its messages are redelivered to the new worker
        print(f"\nscoring: succeeded {time.monotonic() - killed:.1f} s after the kill (restart included)")
        assert job["status"] == "succeeded", job
        report = job["result"]
        rows = [r for r in mock_server.org.rows("msdyn_predictivescore") if r.get("msdyn_entitytype") == "opportunity"]
        ids = [str(r["msdyn_entityid"]).lower() for r in rows]
        assert len(ids) == len(set(ids)) == report["eligible"] == report["written"] > 0
        history = lake.tables.read("scores/history", ["opportunityid", "run"])
        assert history is not None
        mine = [
            i
            for i, r in zip(history.column("opportunityid").to_pylist(), history.column("run").to_pylist(), strict=True)
            if r == run_id
        ]
        assert len(mine) == len(set(mine)) == report["written"]  # no score recorded twice
        status, again = call(second.url, "POST", "/api/score", {})  # the same snapshot: nothing changes
        rerun = _wait_job(second.url, again["job"]["id"], 240)
        assert rerun["status"] == "succeeded" and rerun["result"]["written"] == 0, rerun
    finally:
        second.stop()


def _synced_and_trained(url: str, name: str) -> None:
    """A full sync, then model `name` created and trained: both jobs succeeded."""
    status, accepted = call(url, "POST", "/api/sync", {"full": True})
    assert status == 202 and _wait_job(url, accepted["job"]["id"], 120)["status"] == "succeeded"
    status, accepted = call(url, "POST", "/api/models", {"name": name})
    assert status == 202 and _wait_job(url, accepted["job"]["id"], 300)["status"] == "succeeded"


def _kill(runner: stack.Runner) -> float:
    os.kill(runner.process.pid, signal.SIGKILL)
    runner.process.wait(10)
    runner.stop()
    return time.monotonic()


def test_kill_9_mid_training_and_mid_planning_then_restart_ends_every_job(azurite, mock_info, tmp_path) -> None:
    """A training whose worker is killed is taken over by the redelivered message (the model trains and is
    usable again); a scoring run whose planner is killed reads `failed` (PlanningInterrupted) once its
    heartbeat is stale, holds the org no longer, and `resume` plans and finishes it."""
    from connectors.jobs import JobStore

    mock_call(mock_info, "POST", "/_mock/reset")
    settings = stack.unique_settings(azurite, mock_info, tag="t", JOB_STALE_SECONDS=str(STALE))
    container = container_client(azurite.connection_string, settings["LAKE_CONTAINER"])
    jobs, lake = JobStore(JsonBlobs(container), stale_after_s=STALE), Lake(container)
    log = str(tmp_path / "runner.log")
    first = stack.start_runner(settings, log_path=log, extra_args=["--no-timers"])
    try:
        status, accepted = call(first.url, "POST", "/api/sync", {"full": True})
        assert status == 202 and _wait_job(first.url, accepted["job"]["id"], 120)["status"] == "succeeded"
        status, accepted = call(first.url, "POST", "/api/models", {"name": "Crash"})
        assert status == 202, accepted
        job_id = accepted["job"]["id"]
        _wait_for(lambda: jobs.get(job_id)["status"] == "running", 60, "the training to start")
        time.sleep(1.0)
        killed = _kill(first)  # the worker dies mid-training
    finally:
        first.stop()
    assert jobs.get(job_id)["status"] == "running", "the kill came too late to test anything"
    second = stack.start_runner(settings, log_path=log, extra_args=["--no-timers"])
    try:
        _wait_for(lambda: jobs.get(job_id).get("takenOverAt"), 60, "a takeover of the training")
        took_over = time.monotonic() - killed
        job = _wait_job(second.url, job_id, 300)
        ended = time.monotonic() - killed
        assert job["status"] == "succeeded" and job["attempts"] == 2, job
        print(f"\ntraining: taken over {took_over:.1f} s after the kill, succeeded after {ended:.1f} s")
        assert took_over <= STALE + 15, took_over  # <= 12 s to redelivery, the heartbeat stale at <= STALE
        status, model = call(second.url, "GET", "/api/models/Crash")
        assert status == 200 and model["status"] == "ready" and model["latestVersion"] == 1, model
        assert call(second.url, "POST", "/api/models/Crash/publish", {})[0] == 200
        planning = threading.Thread(target=lambda: _quietly(call, second.url, "POST", "/api/score", {}), daemon=True)
        planning.start()
        _wait_for(lambda: _scoring_job(jobs, lake), 60, "a scoring job")
        run_id = _scoring_job(jobs, lake)
        killed = _kill(second)  # the worker dies while the run plans
    finally:
        second.stop()
    assert lake.read_json(f"scoring/runs/{run_id}/plan.json") is None, "the kill came after the plan"
    third = stack.start_runner(settings, log_path=log, extra_args=["--no-timers"])
    try:
        if (jobs.heartbeat_age(jobs.get(run_id)) or 0) < STALE - 4:  # the dead run still holds
            status, busy = call(third.url, "POST", "/api/score", {})
            assert status == 409 and busy["error"]["code"] == "ScoringInProgress", busy
        _wait_for(lambda: call(third.url, "GET", f"/api/jobs/{run_id}")[1]["status"] == "failed", 60, "a failed run")
        print(f"planning: reads failed {time.monotonic() - killed:.1f} s after the kill")
        job = call(third.url, "GET", f"/api/jobs/{run_id}")[1]
        assert job["error"]["code"] == "PlanningInterrupted", job
        status, resumed = call(third.url, "POST", "/api/score", {"resume": run_id})
        assert status == 202 and resumed["resume"]["state"] == "replanned", resumed
        status, busy = call(third.url, "POST", "/api/score", {})
        assert status in (202, 409), busy  # 409 while the resumed run is unfinished; 202 if it already finished
        done = _wait_job(third.url, run_id, 240)
        assert done["status"] == "succeeded" and done["result"]["written"] == done["result"]["eligible"] > 0, done
    finally:
        third.stop()


def test_kill_9_mid_backtest_then_restart_goes_on_from_the_saved_months(azurite, mock_info, tmp_path) -> None:
    """A backtest whose worker is killed after some months is taken over by the redelivered message, which
    replays only the months not saved yet: the saved ones come back in the report unchanged."""
    from functions.app_context import AppContext
    from functions.settings import load_settings

    mock_call(mock_info, "POST", "/_mock/reset")
    settings = stack.unique_settings(azurite, mock_info, tag="b", JOB_STALE_SECONDS=str(STALE))
    store = AppContext(load_settings(settings)).model_store
    log = str(tmp_path / "runner.log")
    first = stack.start_runner(settings, log_path=log, extra_args=["--no-timers"])
    try:
        _synced_and_trained(first.url, "Crash_BT")
        status, accepted = call(first.url, "POST", "/api/models/Crash_BT/backtest", {"months": 6})
        assert status == 202, accepted
        job_id, cuts = accepted["job"]["id"], accepted["cutDates"]

        def saved() -> dict[str, Any]:
            return {c: m for c in cuts if (m := store.backtests.month("Crash_BT", job_id, c)) is not None}

        _wait_for(lambda: len(saved()) >= 2, 120, "two saved months")
        killed = _kill(first)  # the worker dies with months left
    finally:
        first.stop()
    before = saved()
    assert 2 <= len(before) < len(cuts), "the kill came too late to test anything"
    second = stack.start_runner(settings, log_path=log, extra_args=["--no-timers"])
    try:
        job = _wait_job(second.url, job_id, 300)
        after = time.monotonic() - killed
        print(f"\nbacktest: {len(before)} of {len(cuts)} months saved at the kill, succeeded {after:.1f} s after it")
    finally:
        second.stop()
    assert job["status"] == "succeeded" and job["attempts"] == 2 and job["takenOverAt"], job
    months = dict(zip(cuts, job["result"]["months"], strict=True))
    assert all(months[c] == m["report"] for c, m in before.items())  # reused as saved, not replayed
    assert [m["cutDate"] for m in job["result"]["months"]] == cuts and not saved()


def _quietly(fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except Exception:  # noqa: BLE001 - the request dies with the worker
        pass


def _scoring_job(jobs: Any, lake: Lake) -> str | None:
    for name in lake.list("jobs/"):
        job_id = name[len("jobs/") : -len(".json")]
        if jobs.get(job_id).get("kind") == "scoring":
            return job_id
    return None
