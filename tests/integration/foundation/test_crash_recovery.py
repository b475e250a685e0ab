"""`kill -9` of the Functions worker in the middle of a sync, then a restart: the redelivered queue
message finishes the job (the dead holder's 15 s lease expires, `recover` completes a half-committed
table) and the lake equals the mock's org, with no row version twice in history."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest

from connectors.blobs import container_client
from connectors.lake import Lake
from local_runner import stack
from tests.conftest import mock_call
from tests.integration.foundation.test_pipeline_http import call
from tests.integration.sync.test_sync_mock import SYNCED, assert_history_clean, assert_lake_equals_mock

pytestmark = pytest.mark.integration


def _wait_job(base: str, job_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status, job = call(base, "GET", f"/api/jobs/{job_id}")
        if status == 200 and job["status"] in ("succeeded", "failed"):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still {job.get('status')} after {timeout} s")


def test_kill_9_mid_sync_then_restart_equals_a_clean_sync(azurite, mock_info, mock_server, tmp_path) -> None:
    mock_call(mock_info, "POST", "/_mock/reset")
    settings = stack.unique_settings(azurite, mock_info, tag="k")
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
    finally:
        first.stop()
    done = [t for t in SYNCED if lake.synced(t)]
    assert 0 < len(done) < len(SYNCED) or not lake.synced("opportunity"), "the kill came too late to test anything"
    mock_call(mock_info, "POST", "/_mock/faults", {})
    second = stack.start_runner(settings, log_path=log, extra_args=["--no-timers"])
    try:
        job = _wait_job(second.url, job_id, timeout=180)  # redelivered after the message's visibility timeout
    finally:
        second.stop()
    assert job["status"] == "succeeded" and not job["result"]["skipped"], job
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
        status, accepted = call(first.url, "POST", "/api/sync", {"full": True})
        assert status == 202 and _wait_job(first.url, accepted["job"]["id"], 120)["status"] == "succeeded"
        status, accepted = call(first.url, "POST", "/api/models", {"name": "Crash"})
        assert status == 202 and _wait_job(first.url, accepted["job"]["id"], 300)["status"] == "succeeded"
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
    finally:
        first.stop()
    done = len(lake.list(f"scoring/runs/{run_id}/results/"))
    assert 0 < done < batches, f"the kill came at {done} of {batches} batches"
    mock_call(mock_info, "POST", "/_mock/faults", {})
    second = stack.start_runner(settings, log_path=log, extra_args=["--no-timers"])
    try:
        job = _wait_job(second.url, run_id, timeout=240)  # its messages are redelivered to the new worker
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
