"""Long-running operation records (`GET /api/jobs/{id}`) stored as JSON blobs under `jobs/`.

A worker that runs a job `claim`s it (queued -> running, compare-and-set on the record's ETag) and keeps a
`heartbeatAt` in the record fresh every `heartbeat_s` seconds while it works (`heartbeat`). A job whose
heartbeat is older than `stale_after_s` belongs to a worker that died: a redelivered message takes it over
(`claim` again), and `abandon` ends it `failed` with code `WorkerLost`."""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from connectors.blobs import JsonBlobs
from connectors.clock import iso, parse, utcnow

log = logging.getLogger(__name__)

STATUSES = ("queued", "running", "succeeded", "failed")
FINISHED = ("succeeded", "failed")
HEARTBEAT_SECONDS = 5.0  # a running job's worker refreshes `heartbeatAt` this often
STALE_AFTER_SECONDS = 20.0  # a heartbeat older than this: the worker is gone (4 missed beats)
# Job ids are 32 hex digits (uuid4) or a scoring run id (`YYYYMMDDTHHMMSSZ` + 10 hex); anything outside this
# full-match rule is no job (and never reaches the blob service: a 20,000-character name is its 431).
JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class JobNotFound(Exception):
    code = "JobNotFound"


class _Changed(Exception):
    """The record moved on since it was read (another worker claimed it, or its owner beat)."""


class JobStore:
    def __init__(
        self,
        blobs: JsonBlobs,
        prefix: str = "jobs/",
        *,
        heartbeat_s: float = HEARTBEAT_SECONDS,
        stale_after_s: float = STALE_AFTER_SECONDS,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.blobs = blobs
        self.prefix = prefix
        self.heartbeat_s = heartbeat_s
        self.stale_after_s = stale_after_s
        self.sleep = sleep

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
        return self._update(job_id, lambda job: {**job, **changes})

    def _update(self, job_id: str, change: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
        self.get(job_id)

        def apply(job: dict[str, Any] | None) -> dict[str, Any]:
            if job is None:
                raise JobNotFound(f"no job with id {job_id!r}")
            return {**change(dict(job)), "updatedAt": iso()}

        return dict(self.blobs.update(self._path(job_id), apply))

    def start(self, job_id: str) -> dict[str, Any]:
        return self.update(job_id, status="running", startedAt=iso(), heartbeatAt=iso())

    def succeed(self, job_id: str, result: Any) -> dict[str, Any]:
        return self.update(job_id, status="succeeded", result=result, finishedAt=iso())

    def fail(self, job_id: str, code: str, message: str, *, details: Any = None) -> dict[str, Any]:
        error: dict[str, Any] = {"code": code, "message": message, **({"details": details} if details else {})}
        return self.update(job_id, status="failed", error=error, finishedAt=iso())

    # ------------------------------------------------------------------ ownership
    def heartbeat_age(self, job: dict[str, Any]) -> float | None:
        """Seconds since a running job's worker last beat (None when the job is not running)."""
        if job.get("status") != "running":
            return None
        beat = parse(job.get("heartbeatAt") or job.get("startedAt") or job.get("updatedAt"))
        return None if beat is None else max(0.0, (utcnow() - beat).total_seconds())

    def is_stale(self, job: dict[str, Any]) -> bool:
        """Running, and its worker has not beaten for `stale_after_s`: the worker is gone."""
        age = self.heartbeat_age(job)
        return age is not None and age >= self.stale_after_s

    def claim(self, job_id: str, owner: str) -> dict[str, Any] | None:
        """Make `owner` the job's worker: a queued job starts; a running one whose heartbeat goes stale is
        taken over (waiting at most `stale_after_s` to tell a live owner from a dead one: a live owner
        beats meanwhile). None when the job is finished or its owner is alive (a duplicate delivery)."""
        seen: Any = None
        while True:
            job = self.get(job_id)
            if job["status"] in FINISHED:
                return None
            if job["status"] == "running" and not self.is_stale(job):
                if seen is not None and job.get("heartbeatAt") != seen:
                    return None  # its owner beat while we watched: alive
                seen = job.get("heartbeatAt")
                self.sleep(min(self.heartbeat_s, self.stale_after_s - (self.heartbeat_age(job) or 0.0)) + 0.2)
                continue
            try:
                return self._take(job_id, owner, job)
            except _Changed:
                seen = None

    def _take(self, job_id: str, owner: str, expected: dict[str, Any]) -> dict[str, Any]:
        def take(job: dict[str, Any]) -> dict[str, Any]:
            if (job.get("status"), job.get("heartbeatAt"), job.get("owner")) != (
                expected.get("status"),
                expected.get("heartbeatAt"),
                expected.get("owner"),
            ):
                raise _Changed(job_id)
            now = iso()
            taken: dict[str, Any] = {"status": "running", "owner": owner, "heartbeatAt": now}
            taken["attempts"] = int(job.get("attempts") or 0) + 1
            taken["startedAt"] = job.get("startedAt") or now
            if job.get("status") == "running":
                taken["takenOverAt"] = now
                taken["lostHeartbeatAt"] = job.get("heartbeatAt")
                log.warning("job=%s taken over: its worker's last heartbeat was at %s", job_id, job.get("heartbeatAt"))
            return {**job, **taken}

        return self._update(job_id, take)

    def beat(self, job_id: str, owner: str) -> bool:
        """Refresh the heartbeat; False (nothing written) once the job is finished or another owner took it."""
        try:
            self._update(job_id, lambda job: {**job, "heartbeatAt": iso()} if _owned(job, owner) else _raise(job_id))
        except _Changed:
            return False
        return True

    @contextlib.contextmanager
    def heartbeat(self, job_id: str, owner: str) -> Iterator[None]:
        """Beat every `heartbeat_s` seconds in the background while the block runs."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(self.heartbeat_s):
                try:
                    if not self.beat(job_id, owner):
                        log.warning("job=%s: no longer ours (finished or taken over); heartbeat stops", job_id)
                        return
                except Exception as exc:  # noqa: BLE001 - a missed beat is retried at the next one
                    log.warning("job=%s: heartbeat failed: %s", job_id, type(exc).__name__)

        thread = threading.Thread(target=loop, name=f"heartbeat-{job_id[:12]}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=5)

    def release(self, job_id: str, owner: str, progress: Any = None) -> dict[str, Any] | None:
        """Give a running job back (running -> queued, with its `progress`) for another delivery to go on
        with; None when it is no longer `owner`'s (finished, or taken over meanwhile)."""
        try:
            return self._update(
                job_id,
                lambda job: {**job, "status": "queued", "owner": None, "progress": progress}
                if _owned(job, owner)
                else _raise(job_id),
            )
        except _Changed:
            return None

    def abandon(self, job_id: str, message: str, *, force: bool = False) -> dict[str, Any] | None:
        """End a running job whose worker is gone (any unfinished job with `force`: the host gave up on its
        message) `failed` with code `WorkerLost`; None when it is live, queued or finished."""
        job = self.get(job_id)
        if job["status"] in FINISHED or not (force or self.is_stale(job)):
            return None

        def end(current: dict[str, Any]) -> dict[str, Any]:
            if current.get("heartbeatAt") != job.get("heartbeatAt") or current.get("status") != job["status"]:
                raise _Changed(job_id)
            error = {"code": "WorkerLost", "message": message}
            return {**current, "status": "failed", "error": error, "finishedAt": iso()}

        try:
            return self._update(job_id, end)
        except _Changed:
            return None


def _owned(job: dict[str, Any], owner: str) -> bool:
    return job.get("status") == "running" and job.get("owner") == owner


def _raise(job_id: str) -> dict[str, Any]:
    raise _Changed(job_id)
