"""Job ownership (connectors/jobs.py) on the in-memory container: claims are compare-and-set, a live owner
keeps its job, a stale one loses it, and `abandon` ends only what is really abandoned."""

from __future__ import annotations

import datetime as dt
import threading

from connectors.blobs import JsonBlobs
from connectors.clock import iso, utcnow
from connectors.jobs import JobStore
from tests.unit.fakes import FakeContainer


def _store(**kw: float) -> JobStore:
    return JobStore(JsonBlobs(FakeContainer()), **kw)  # type: ignore[arg-type]


def test_two_deliveries_racing_for_one_queued_job_never_both_run_it() -> None:
    jobs = _store(heartbeat_s=0.2, stale_after_s=5)  # timestamps are to the second: thresholds of seconds
    job = jobs.create("train")
    won: list[object] = []
    barrier = threading.Barrier(4)

    def deliver(owner: str) -> None:
        barrier.wait()
        won.append(jobs.claim(job["id"], owner))
        if won[-1] is not None:
            with jobs.heartbeat(job["id"], owner):
                threading.Event().wait(1.5)  # keeps beating while the others watch
            jobs.succeed(job["id"], {"by": owner})

    threads = [threading.Thread(target=deliver, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(w is not None for w in won) == 1
    assert jobs.get(job["id"])["attempts"] == 1


def test_a_stale_job_is_taken_over_and_abandon_spares_live_and_queued_jobs() -> None:
    jobs = _store(stale_after_s=10)
    old = iso(utcnow() - dt.timedelta(seconds=30))
    stale = jobs.create("sync")
    jobs.update(stale["id"], status="running", heartbeatAt=old, owner="dead")
    taken = jobs.claim(stale["id"], "new")
    assert taken is not None and taken["owner"] == "new" and taken["lostHeartbeatAt"] == old
    assert not jobs.beat(stale["id"], "dead") and jobs.beat(stale["id"], "new")
    assert jobs.abandon(stale["id"], "gone") is None  # it beats again: live
    queued = jobs.create("sync")
    assert jobs.abandon(queued["id"], "gone") is None
    assert jobs.abandon(queued["id"], "gone", force=True)["error"]["code"] == "WorkerLost"
    jobs.update(stale["id"], heartbeatAt=old)
    assert jobs.abandon(stale["id"], "gone")["status"] == "failed"
    assert jobs.claim(stale["id"], "late") is None  # finished: a late delivery does nothing
