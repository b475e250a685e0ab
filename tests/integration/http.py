"""Calls to the function app over real HTTP, shared by the integration tests that drive the local runner."""

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Timers far from the test's run, so only the test's own requests move the app.
QUIET_SCHEDULES = {
    "SYNC_SCHEDULE": "0 0 */4 * * *",
    "SCORING_SCHEDULE": "0 30 5 * * *",
    "RETRAIN_SCHEDULE": "0 0 3 * * *",
}


def call(base: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as err:
        raw = err.read()
        return err.code, json.loads(raw) if raw else None


def wait_job(base: str, job_id: str, timeout: float = 300) -> dict[str, Any]:
    """The job once it has ended (`succeeded` or `failed`), polled over HTTP."""
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status, job = call(base, "GET", f"/api/jobs/{job_id}")
        if status == 200 and job["status"] in ("succeeded", "failed"):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still {job.get('status')} after {timeout} s")


@contextmanager
def synced_runner(
    azurite: Any, mock_info: dict[str, Any], log_path: Path, *, tag: str, **settings: str
) -> Iterator[tuple[str, dict[str, str]]]:
    """The local runner (timers off) on containers of its own (`tag`), with the reset seeded org fully synced
    into its lake: (its URL, its app settings). Stopped by PID however the test ends."""
    from local_runner import stack
    from tests.conftest import mock_call

    mock_call(mock_info, "POST", "/_mock/reset")
    app_settings = stack.unique_settings(azurite, mock_info, tag=tag, **{**QUIET_SCHEDULES, **settings})
    runner = stack.start_runner(app_settings, log_path=str(log_path), extra_args=["--no-timers"])
    try:
        status, accepted = call(runner.url, "POST", "/api/sync", {"full": True})
        assert status == 202, accepted
        assert wait_job(runner.url, accepted["job"]["id"])["status"] == "succeeded"
        yield runner.url, app_settings
    finally:
        runner.stop()
