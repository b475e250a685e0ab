"""Long-running operation records (`GET /api/jobs/{id}`) stored as JSON blobs under `jobs/`."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from azure.core.exceptions import ResourceModifiedError

from connectors.blobs import JsonBlobs

STATUSES = ("queued", "running", "succeeded", "failed")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class JobNotFound(Exception):
    status = 404
    code = "JobNotFound"


class JobStore:
    def __init__(self, blobs: JsonBlobs, prefix: str = "jobs/"):
        self.blobs = blobs
        self.prefix = prefix

    def _path(self, job_id: str) -> str:
        return f"{self.prefix}{job_id}.json"

    def create(self, kind: str, params: dict[str, Any] | None = None, job_id: str | None = None) -> dict[str, Any]:
        new_id = job_id or uuid.uuid4().hex
        job: dict[str, Any] = {
            "id": new_id,
            "kind": kind,
            "status": "queued",
            "params": params or {},
            "createdAt": _now(),
            "updatedAt": _now(),
            "result": None,
            "error": None,
        }
        self.blobs.write(self._path(new_id), job, create_only=True)
        return job

    def get(self, job_id: str) -> dict[str, Any]:
        if not job_id or not all(c.isalnum() or c in "-_" for c in job_id):
            raise JobNotFound(f"no job with id {job_id!r}")
        job = self.blobs.read(self._path(job_id))
        if job is None:
            raise JobNotFound(f"no job with id {job_id!r}")
        return dict(job)

    def update(self, job_id: str, **changes: Any) -> dict[str, Any]:
        """Apply changes with an ETag check, retrying on concurrent writers."""
        for _ in range(10):
            job, etag = self.blobs.read_with_etag(self._path(job_id))
            if job is None:
                raise JobNotFound(f"no job with id {job_id!r}")
            status = changes.get("status")
            if status is not None and status not in STATUSES:
                raise ValueError(f"unknown job status {status!r}")
            job.update(changes)
            job["updatedAt"] = _now()
            try:
                self.blobs.write(self._path(job_id), job, etag=etag)
                return dict(job)
            except ResourceModifiedError:
                continue
        raise RuntimeError(f"job {job_id} kept changing under us")

    def start(self, job_id: str) -> dict[str, Any]:
        return self.update(job_id, status="running", startedAt=_now())

    def succeed(self, job_id: str, result: Any) -> dict[str, Any]:
        return self.update(job_id, status="succeeded", result=result, finishedAt=_now())

    def fail(self, job_id: str, code: str, message: str) -> dict[str, Any]:
        return self.update(job_id, status="failed", error={"code": code, "message": message}, finishedAt=_now())
