"""Calls to the function app over real HTTP, shared by the integration tests that drive the local runner."""

import json
import time
import urllib.error
import urllib.request
from typing import Any


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
