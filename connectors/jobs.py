"""Long-running operation records (`GET /api/jobs/{id}`) stored as JSON blobs under `jobs/`."""

from __future__ import annotations

import re
import uuid
from typing import Any

from connectors.blobs import JsonBlobs
from connectors.clock import iso

STATUSES = ("queued", "running", "succeeded", "failed")
# Job ids are 32 hex digits (uuid4) or a scoring run id (`YYYYMMDDTHHMMSSZ` + 10 hex); anything outside this
# full-match rule is no job (and never reaches the blob service: a 20,000-character name is its 431).
JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class JobNotFound(Exception):
    code = "JobNotFound"


class JobStore:
    def __init__(self, blobs: JsonBlobs, prefix: str = "jobs/"):
        self.blobs = blobs
        self.prefix = prefix

    def _path(self, job_id: str) -> str:
        return f"{self.prefix}{job_id}.json"

    def create(self, kind: str, params: dict[str, Any] | None = None, job_id: str | None = None) -> dict[str, Any]:
        new_id = job_id or uuid.uuid4().hex
        now = iso()
        job: dict[str, Any] = {
            "id": new_id,
            "kind": kind,
            "status": "queued",
            "params": params or {},
            "createdAt": now,
            "updatedAt": now,
            "result": None,
            "error": None,
        }
        self.blobs.write(self._path(new_id), job, create_only=True)
        return job

    def get(self, job_id: str) -> dict[str, Any]:
        if not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id):
            shown = str(job_id)
            raise JobNotFound(f"no job with id {shown[:80]!r}" + (" (truncated)" if len(shown) > 80 else ""))
        job = self.blobs.read(self._path(job_id))
        if job is None:
            raise JobNotFound(f"no job with id {job_id!r}")
        return dict(job)

    def update(self, job_id: str, **changes: Any) -> dict[str, Any]:
        """Apply changes (ETag-conditioned, retried on concurrent writers)."""
        status = changes.get("status")
        if status is not None and status not in STATUSES:
            raise ValueError(f"unknown job status {status!r}")
        self.get(job_id)

        def apply(job: dict[str, Any] | None) -> dict[str, Any]:
            if job is None:
                raise JobNotFound(f"no job with id {job_id!r}")
            return {**job, **changes, "updatedAt": iso()}

        return dict(self.blobs.update(self._path(job_id), apply))

    def start(self, job_id: str) -> dict[str, Any]:
        return self.update(job_id, status="running", startedAt=iso())

    def succeed(self, job_id: str, result: Any) -> dict[str, Any]:
        return self.update(job_id, status="succeeded", result=result, finishedAt=iso())

    def fail(self, job_id: str, code: str, message: str) -> dict[str, Any]:
        return self.update(job_id, status="failed", error={"code": code, "message": message}, finishedAt=iso())
