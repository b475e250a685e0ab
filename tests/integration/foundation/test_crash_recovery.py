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
