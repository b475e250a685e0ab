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


def test_work_that_stops_early_resends_its_message_and_gives_the_job_back() -> None:
    from functions.services.jobs import Unfinished, execute

    jobs = _store()
    job = jobs.create("backtest")
    sent: list[str] = []
    left = [3]

    def work() -> object:
        left[0] -= 1
        return {"done": True} if left[0] == 0 else Unfinished(lambda: sent.append("again"), {"left": left[0]})

    first = execute(jobs, job["id"], work, what="backtest")
    assert first["status"] == "queued" and first["progress"] == {"left": 2} and first["owner"] is None
    assert sent == ["again"]
    assert not jobs.beat(job["id"], "anyone")  # given back: nobody owns it
    execute(jobs, job["id"], work, what="backtest")
    done = execute(jobs, job["id"], work, what="backtest")
    assert done["status"] == "succeeded" and done["result"] == {"done": True}
    assert done["attempts"] == 3 and sent == ["again", "again"]
    assert jobs.release(job["id"], "anyone") is None  # finished: nothing to give back
