"""Scoring runs on the real lake (Delta tables in a temp directory) with a fake Dataverse, queue and scorer:
model choice, batches, change detection, trend, quota, idempotent redelivery and crashes, poison, resume,
supersede, pruning and the write-request bound. The real Azurite, mock Dataverse and ONNX models run in
tests/integration/scoring."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from connectors.clock import utcnow
from connectors.lake import Lake
from functions.http import status_of
from functions.services import scoring
from functions.services.jobs import get_job
from functions.services.scoring import batch, layout, scores
from functions.services.scoring.common import RUN_RETENTION_DAYS
from functions.services.scoring.inputs import EVENT_COLUMNS
from tests.unit.functions.services.scoring.fakes import FakeContext, requests_bound


def _ids(n: int, seed: int = 0) -> list[str]:
    return [str(uuid.UUID(int=(seed << 64) + i + 1)) for i in range(n)]


def _opps(n: int, *, channel: list[str] | None = None) -> pd.DataFrame:
    ids = _ids(n)
    return pd.DataFrame(
        {
            "opportunityid": ids,
            "name": [f"Deal {i}" for i in range(n)],
            "statecode": [0 if i % 10 else 1 for i in range(n)],  # every 10th is closed
            "points": [float(10 + (i * 7) % 80) for i in range(n)],
            "new_channel": channel or ["Direct" if i % 2 else "Partner" for i in range(n)],
        }
    )


def _config(name: str, filter_values: list[str] | None = None, bpf: str | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "filterColumn": "new_channel" if filter_values else None,
        "filterValues": filter_values or [],
        "businessProcessFlow": bpf,
        "gradeRanges": [75, 50, 25],
    }


def _ctx(tmp_path: Path, n: int = 2500, **kw: Any) -> FakeContext:
    kw.setdefault("configs", [_config("All")])
    kw.setdefault("published", {"All": 1})
    opportunities = kw.pop("opportunities", None)
    return FakeContext(tmp_path, opportunities=_opps(n) if opportunities is None else opportunities, **kw)


def _drain(ctx: FakeContext) -> list[dict[str, Any]]:
    """Every queued message through the worker, in order."""
    results = []
    while ctx.messages:
        results.append(scoring.handle_message(ctx, json.dumps(ctx.messages.pop(0)).encode()))
    return results


def _host(ctx: FakeContext, *, max_dequeue: int = 3) -> list[dict[str, Any]]:
    """Like the Functions host: a message that keeps failing is retried, then goes to the poison trigger."""
    poisoned = []
    while ctx.messages:
        msg = ctx.messages.pop(0)
        for attempt in range(1, max_dequeue + 1):
            try:
                scoring.handle_message(ctx, json.dumps(msg))
                break
            except Exception:  # noqa: BLE001 - the host's behaviour
                if attempt == max_dequeue:
                    poisoned.append(msg)
                    scoring.record_poisoned(ctx, json.dumps(msg).encode())
    return poisoned


def _job(ctx: FakeContext, run_id: str) -> dict[str, Any]:
    return get_job(ctx, run_id)


def _history(ctx: FakeContext) -> pd.DataFrame:
    return scores.history(ctx.lake)


def _results(ctx: FakeContext, run_id: str) -> list[dict[str, Any]]:
    return list(layout.load(ctx.lake, run_id).results.values())


def test_full_run_writes_every_eligible_row_once_within_the_request_bound(tmp_path: Path, patched: Any) -> None:
    ctx = _ctx(tmp_path)
    plan = scoring.plan_run(ctx, actor="test", batch_size=700)
    assert plan["eligible"] == 2250 and plan["batches"] == 4 and len(ctx.messages) == 4
    _drain(ctx)
    assert ctx.dataverse.requests == [700, 700, 700, 150], "one request per batch of <= 1,000 changed rows"
    assert len(ctx.dataverse.rows) == 2250 and ctx.dataverse.written == 2250
    closed = set(_opps(2500).query("statecode != 0")["opportunityid"])
    assert not closed & set(ctx.dataverse.rows)
    row = ctx.dataverse.rows[_ids(2)[1]]
    assert row["msdyn_entitytype"] == "opportunity" and row["msdyn_scoretrend"] == 3
    assert row["msdyn_score"] == 17 and row["msdyn_grade"] == 3 and row["msdyn_name"] == "Deal 1"
    assert row["msdyn_scoredon"] == plan["scoredOn"]
    assert len(row["msdyn_scorereasons"]) <= 10_000 and json.loads(row["msdyn_scorereasons"])["model"] == "All"
    job = _job(ctx, plan["runId"])
    assert job["status"] == "succeeded" and job["params"]["actor"] == "test" and job["error"] is None
    result = job["result"]
    assert result["written"] == 2250 and result["unchanged"] == 0 and result["changed"] == 2250
    assert result["writeRequests"] == 4 == requests_bound(_results(ctx, plan["runId"]))
    assert result["failures"] == [] and result["batchesDone"] == 4 and result["status"] == "succeeded"
    hist = _history(ctx)
    assert len(hist) == 2250 and hist["opportunityid"].is_unique and set(hist["run"]) == {plan["runId"]}
    assert len(scores.state(ctx.lake)) == 2250


def test_a_batch_with_more_than_1000_changed_rows_takes_ceil_requests(tmp_path: Path, patched: Any) -> None:
    ctx = _ctx(tmp_path)
    plan = scoring.plan_run(ctx, batch_size=5000)
    assert plan["batches"] == 1
    _drain(ctx)
    assert ctx.dataverse.requests == [1000, 1000, 250]
    assert _job(ctx, plan["runId"])["result"]["writeRequests"] == 3


def test_sparse_changes_send_one_request_per_batch_that_changed(tmp_path: Path, patched: Any) -> None:
    opps = _opps(2000)
    ctx = _ctx(tmp_path, opportunities=opps)
    scoring.plan_run(ctx, batch_size=100)
    _drain(ctx)
    before = len(ctx.dataverse.requests)
    moved = opps.index[opps["statecode"] == 0][::250]  # a change in a few batches only
    opps.loc[moved, "points"] += 20
    ctx.sync(opportunity=opps)
    plan = scoring.plan_run(ctx, batch_size=100)
    _drain(ctx)
    results = _results(ctx, plan["runId"])
    assert len(ctx.dataverse.requests) - before == requests_bound(results) == len(moved)
    assert sum(ctx.dataverse.requests[before:]) == len(moved)
    assert _job(ctx, plan["runId"])["result"]["writeRequests"] == len(moved)


def test_rerun_without_change_writes_nothing_and_changed_scores_get_a_trend(tmp_path: Path, patched: Any) -> None:
    opps = _opps(300)
    ctx = _ctx(tmp_path, opportunities=opps)
    scoring.plan_run(ctx)
    _drain(ctx)
    calls = len(ctx.dataverse.calls)
    second = scoring.plan_run(ctx)
    _drain(ctx)
    assert len(ctx.dataverse.calls) == calls, "a rerun with no change must not send any write request"
    assert _job(ctx, second["runId"])["result"]["unchanged"] == second["eligible"]
    ids = opps["opportunityid"]
    opps.loc[ids == ids[1], "points"] += 20  # improving
    opps.loc[ids == ids[2], "points"] -= 10  # declining
    opps.loc[ids == ids[3], "points"] += 2  # within the tolerance: steady
    ctx.sync(opportunity=opps)
    scoring.plan_run(ctx)
    _drain(ctx)
    assert len(ctx.dataverse.calls) == calls + 1 and len(ctx.dataverse.calls[-1]) == 3
    assert ctx.dataverse.rows[ids[1]]["msdyn_scoretrend"] == 0
    assert ctx.dataverse.rows[ids[2]]["msdyn_scoretrend"] == 2
    assert ctx.dataverse.rows[ids[3]]["msdyn_scoretrend"] == 1
    hist = _history(ctx)  # every write: the first run's rows and the three changed ones
    assert len(hist) == second["eligible"] + 3
    last = hist[hist["opportunityid"] == ids[1]].iloc[-1]
    assert last["score"] == opps.loc[1, "points"] and last["previous_score"] == opps.loc[1, "points"] - 20
    state = scores.state(ctx.lake).set_index("opportunityid")
    assert state.loc[ids[1], "score"] == opps.loc[1, "points"] and state.loc[ids[1], "trend"] == 0


def test_two_matching_models_choose_the_most_specific_then_newest(tmp_path: Path, patched: Any) -> None:
    ctx = _ctx(
        tmp_path,
        n=100,
        configs=[_config("Broad"), _config("Direct", ["Direct"]), _config("Direct2", ["Direct"])],
        published={"Broad": 1, "Direct": 2, "Direct2": 1},
    )
    plan = scoring.plan_run(ctx)
    _drain(ctx)
    by_model = {m["name"]: (m["eligible"], m["matchedByHigherPriority"]) for m in plan["models"]}
    # Direct2 was published after Direct (fake publishedAt follows insertion order) -> it wins ties
    assert by_model == {"Direct2": (50, 0), "Direct": (0, 50), "Broad": (40, 50)}
    assert plan["batchModels"] == ["Direct2@1", "Broad@1"], "a batch never mixes models"
    models = {json.loads(r["msdyn_scorereasons"])["model"] for r in ctx.dataverse.rows.values()}
    assert models == {"Direct2", "Broad"} and len(ctx.dataverse.rows) == 90


def test_a_redelivered_batch_writes_nothing_twice(tmp_path: Path, patched: Any) -> None:
    ctx = _ctx(tmp_path)
    plan = scoring.plan_run(ctx, batch_size=1000)
    first = ctx.messages[0]
    done = scoring.handle_message(ctx, json.dumps(first))
    calls, hist = len(ctx.dataverse.calls), len(_history(ctx))
    again = scoring.handle_message(ctx, json.dumps(first))
    assert again["alreadyDone"] is True and again["written"] == done["written"] == 1000
    assert len(ctx.dataverse.calls) == calls and len(_history(ctx)) == hist == 1000
    _drain(ctx)
    for m in list(_results(ctx, plan["runId"])):  # every message delivered again after the run finished
        assert scoring.handle_message(ctx, {"runId": plan["runId"], "batch": m["batch"]})["alreadyDone"]
    assert ctx.dataverse.written == plan["eligible"] and len(_history(ctx)) == plan["eligible"]


class Killed(BaseException):
    """The process dies: not an Exception, so nothing in the worker catches it."""


@pytest.mark.parametrize("where", ["before_history", "before_state", "before_result"])
def test_a_batch_killed_at_any_step_is_redone_exactly(
    tmp_path: Path, patched: Any, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    clean_ctx = _ctx(tmp_path / "clean", n=1200)
    scoring.plan_run(clean_ctx, batch_size=600)
    _drain(clean_ctx)
    ctx = _ctx(tmp_path / "killed", n=1200)
    plan = scoring.plan_run(ctx, batch_size=600)
    msg = ctx.messages.pop(0)
    target = {
        "before_history": (scores, "append_history"),  # after its upserts
        "before_state": (scores, "merge_state"),  # after its history commit
        "before_result": (ctx.lake.json, "create"),  # after its state MERGE
    }[where]
    real = getattr(*target)

    def dying(*args: Any, **kw: Any) -> Any:
        raise Killed(where)

    monkeypatch.setattr(*target, dying)
    with pytest.raises(Killed):
        scoring.handle_message(ctx, json.dumps(msg))
    monkeypatch.setattr(*target, real)
    sent = ctx.dataverse.written
    assert sent == 600, "the upserts went out before the kill"
    result = scoring.handle_message(ctx, json.dumps(msg))  # redelivered
    _drain(ctx)
    resent = 600 if where == "before_history" else 0  # only upserts not yet in the history are sent again
    assert ctx.dataverse.written == clean_ctx.dataverse.written + resent
    assert ctx.dataverse.rows == clean_ctx.dataverse.rows, "0 lost, 0 duplicated in Dataverse"
    hist = _history(ctx)
    assert len(hist) == len(_history(clean_ctx)) and hist["opportunityid"].is_unique, "0 duplicated in the lake"
    state = scores.state(ctx.lake).sort_values("opportunityid").reset_index(drop=True)
    clean_state = scores.state(clean_ctx.lake).sort_values("opportunityid").reset_index(drop=True)
    cols = ["opportunityid", "score", "grade", "trend", "reasons_sha"]
    pd.testing.assert_frame_equal(state[cols], clean_state[cols])
    assert result["written"] == 600 and result["unchanged"] == 0, "the report counts what the batch wrote"
    report = _job(ctx, plan["runId"])["result"]
    assert report["status"] == "succeeded" and report["written"] == plan["eligible"] == 1080


def test_a_failing_write_raises_for_the_host_and_keeps_its_reason(tmp_path: Path, patched: Any) -> None:
    ctx = _ctx(tmp_path, n=50)
    plan = scoring.plan_run(ctx)
    msg = ctx.messages.pop(0)
    ctx.dataverse.fail = lambda op: 500 if op.body["msdyn_entityid"].endswith("5") else 204
    with pytest.raises(scoring.BatchWriteFailed):
        scoring.handle_message(ctx, json.dumps(msg))
    error = ctx.lake.read_json(layout.error_path(plan["runId"], 0))
    assert error["attempts"] == 1 and "BatchWriteFailed" in error["lastError"] and "500" in error["lastError"]
    assert error["code"] == "BatchWriteFailed"
    assert not len(_history(ctx)), "nothing reaches the lake before every upsert succeeded"
    ctx.dataverse.fail = None
    result = scoring.handle_message(ctx, json.dumps(msg))  # the host's retry
    assert result["written"] == 45 and len(ctx.dataverse.rows) == 45 and len(_history(ctx)) == 45


def test_write_requests_stay_within_the_bound_plus_retries(tmp_path: Path, patched: Any) -> None:
    ctx = _ctx(tmp_path, n=5000)
    plan = scoring.plan_run(ctx, batch_size=1500)

    seen: set[str] = set()

    def first_time_503(op: Any) -> int:  # the first attempt of every batch has one failed upsert
        first = ctx.dataverse.calls[-1][0]
        if op is not first or len(ctx.dataverse.calls[-1]) < 1000 or op.body["msdyn_entityid"] in seen:
            return 204
        seen.add(op.body["msdyn_entityid"])
        return 503

    ctx.dataverse.fail = first_time_503
    assert _host(ctx) == []
    results = _results(ctx, plan["runId"])
    bound = requests_bound(results)
    assert bound == sum(-(-int(r["written"]) // 1000) for r in results) == 6  # 3 batches of 1,500
    retries = bound  # every batch failed once and was sent again in full
    assert len(ctx.dataverse.requests) == bound + retries
    assert _job(ctx, plan["runId"])["result"]["writeRequests"] == bound
    assert len(ctx.dataverse.rows) == plan["eligible"] == len(_history(ctx))


def test_a_poisoned_batch_fails_the_run_listing_it_and_resume_sends_only_it(
    tmp_path: Path, patched: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = _ctx(tmp_path)
    plan = scoring.plan_run(ctx, batch_size=1000)
    real = batch.decide_rows

    def broken(scored: Any, *args: Any, **kw: Any) -> Any:
        if _ids(2)[1] in set(scored["opportunityid"]):
            raise ValueError("bad batch")
        return real(scored, *args, **kw)

    monkeypatch.setattr(batch, "decide_rows", broken)
    assert _host(ctx) == [{"runId": plan["runId"], "batch": 0}]
    job = _job(ctx, plan["runId"])
    assert job["status"] == "failed" and job["error"]["code"] == "BatchesFailed"
    assert f'"resume": "{plan["runId"]}"' in job["error"]["message"]
    failure = job["result"]["failures"][0]
    assert failure["batch"] == 0 and failure["attempts"] == 3 and failure["model"] == "All@1"
    assert "ValueError: bad batch" in failure["reason"]
    assert job["result"]["batchesDone"] == 2 and len(ctx.dataverse.rows) == 1250
    monkeypatch.setattr(batch, "decide_rows", real)
    resumed = scoring.resume(ctx, plan["runId"])
    assert resumed["reenqueued"] == [0] and ctx.messages == [{"runId": plan["runId"], "batch": 0}]
    assert _job(ctx, plan["runId"])["status"] == "running", "the poison marker is gone"
    _drain(ctx)
    job = _job(ctx, plan["runId"])
    assert job["status"] == "succeeded" and job["result"]["failures"] == [] and len(ctx.dataverse.rows) == 2250
    assert ctx.dataverse.written == 2250


def test_resume_sends_again_only_the_batches_without_a_result(tmp_path: Path, patched: Any) -> None:
    ctx = _ctx(tmp_path)
    plan = scoring.plan_run(ctx, batch_size=1000)
    scoring.handle_message(ctx, json.dumps(ctx.messages.pop(0)))
    ctx.messages.clear()  # "killed": the other messages are lost
    assert _job(ctx, plan["runId"])["status"] == "running"
    resumed = scoring.resume(ctx, plan["runId"])
    assert resumed["reenqueued"] == [1, 2] and [m["batch"] for m in ctx.messages] == [1, 2]
    _drain(ctx)
    assert ctx.dataverse.written == plan["eligible"] == len(ctx.dataverse.rows)
    assert _job(ctx, plan["runId"])["status"] == "succeeded"
    assert scoring.resume(ctx, plan["runId"]) == {"runId": plan["runId"], "reenqueued": [], "state": "complete"}
    with pytest.raises(scoring.RunNotFound) as err:
        scoring.resume(ctx, "nosuchrun")
    assert status_of(err.value) == 404 and err.value.code == "RunNotFound"
    with pytest.raises(scoring.ScoringError) as err:
        scoring.resume(ctx, "../etc")
    assert err.value.code == "InvalidRunId"


def test_poisoned_messages_that_are_not_ours_or_late_are_dropped(tmp_path: Path, patched: Any) -> None:
    ctx = _ctx(tmp_path, n=20)
    assert scoring.record_poisoned(ctx, b"garbage") is None
    assert scoring.record_poisoned(ctx, json.dumps({"runId": "nope", "batch": 0})) is None
    plan = scoring.plan_run(ctx)
    _drain(ctx)
    assert scoring.record_poisoned(ctx, json.dumps({"runId": plan["runId"], "batch": 0})) is None
    assert _job(ctx, plan["runId"])["status"] == "succeeded"


def test_the_timer_supersedes_unfinished_runs_whose_batches_drop_themselves(tmp_path: Path, patched: Any) -> None:
    ctx = _ctx(tmp_path)
    old = scoring.plan_run(ctx, batch_size=1000)
    scoring.handle_message(ctx, json.dumps(ctx.messages.pop(0)))
    leftover = list(ctx.messages)
    ctx.messages.clear()
    new = scoring.scheduled_run(ctx)
    assert new["superseded"] == [old["runId"]] and new["pruned"] == []
    job = _job(ctx, old["runId"])
    assert job["status"] == "failed" and job["error"]["code"] == "Superseded"
    assert new["runId"] in job["error"]["message"] and job["result"]["status"] == "superseded"
    calls = len(ctx.dataverse.calls)
    for m in leftover:  # the old run's messages still in the queue do nothing
        assert scoring.handle_message(ctx, json.dumps(m)) == {"superseded": True}
    assert len(ctx.dataverse.calls) == calls
    assert len(layout.load(ctx.lake, old["runId"]).results) == 1, "dropped batches leave no result"
    _drain(ctx)
    assert _job(ctx, new["runId"])["status"] == "succeeded" and len(ctx.dataverse.rows) == 2250
    assert _job(ctx, new["runId"])["result"]["written"] == 2250 - 1000, "the old run's rows were kept"
    with pytest.raises(scoring.RunSuperseded) as err:
        scoring.resume(ctx, old["runId"])
    assert err.value.code == "Superseded" and status_of(err.value) == 409
    again = scoring.scheduled_run(ctx)
    assert again["superseded"] == [], "finished and superseded runs are not superseded again"


def test_a_run_killed_while_planning_is_superseded_too(tmp_path: Path, patched: Any) -> None:
    ctx = _ctx(tmp_path, n=30)
    ctx.jobs.create("scoring", {}, job_id="deadrun")
    ctx.jobs.start("deadrun")
    ctx.lake_container.upload_blob("scoring/runs/deadrun/batches/00000.parquet", b"partial")
    assert _job(ctx, "deadrun")["status"] == "running"
    new = scoring.scheduled_run(ctx)
    assert new["superseded"] == ["deadrun"]
    assert _job(ctx, "deadrun")["error"]["code"] == "Superseded"
    _drain(ctx)
    assert _job(ctx, new["runId"])["status"] == "succeeded"
    assert scoring.scheduled_run(ctx)["superseded"] == [], "nothing left unfinished"


def test_the_timer_deletes_runs_older_than_the_retention(tmp_path: Path, patched: Any) -> None:
    ctx = _ctx(tmp_path, n=100)
    now = utcnow()
    days = RUN_RETENTION_DAYS
    old = scoring.plan_run(ctx, now=now - dt.timedelta(days=days + 1))
    _drain(ctx)
    recent = scoring.plan_run(ctx, now=now - dt.timedelta(days=days - 1))
    _drain(ctx)
    stale_id = "20200101T000000Zdeadbeef00"  # killed while planning, long ago
    ctx.lake_container.upload_blob(f"scoring/runs/{stale_id}/batches/00000.parquet", b"partial")
    assert ctx.lake.list(layout.prefix(old["runId"]))
    new = scoring.scheduled_run(ctx, now=now)
    assert sorted(new["pruned"]) == sorted([old["runId"], stale_id])
    assert not ctx.lake.list(layout.prefix(old["runId"])) and not ctx.lake.list(layout.prefix(stale_id))
    assert ctx.lake.list(layout.prefix(recent["runId"])), "younger runs stay"
    job = _job(ctx, old["runId"])  # the job record keeps the final report
    assert job["status"] == "succeeded" and job["result"]["written"] == old["eligible"] and job["runDeleted"]
    assert len(_history(ctx)) == old["eligible"], "the score history stays"
    _drain(ctx)
    runs = layout.list_runs(ctx.lake)
    assert set(runs) == {recent["runId"], new["runId"]}


def test_quota_counts_distinct_records_per_month_and_stops_with_a_report(
    tmp_path: Path, patched: Any, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = _ctx(tmp_path, n=3000, quota=1500)
    plan = scoring.plan_run(ctx)
    _drain(ctx)
    report = _job(ctx, plan["runId"])["result"]
    assert report["scored"] == 1500 and report["quotaStopped"] == plan["eligible"] - 1500
    assert report["quotaReached"] and "quota" in report["message"]
    assert any("quota" in r.getMessage() for r in caplog.records)
    assert len(ctx.dataverse.rows) == 1500
    again = scoring.plan_run(ctx)  # the same records may be rescored; no new ones
    _drain(ctx)
    rep2 = _job(ctx, again["runId"])["result"]
    assert rep2["scored"] == 1500 and rep2["written"] == 0 and len(ctx.dataverse.rows) == 1500
    assert scoring.quota_usage(ctx, plan["month"])["used"] == 1500


def test_records_the_model_cannot_score_are_skipped_with_a_reason(tmp_path: Path, patched: Any) -> None:
    opps = _opps(20)
    opps.loc[3, "points"] = None
    ctx = _ctx(tmp_path, opportunities=opps)
    plan = scoring.plan_run(ctx)
    _drain(ctx)
    report = _job(ctx, plan["runId"])["result"]
    assert report["skipped"] == 1 and report["skipReasons"] == {"points missing": 1}
    assert report["written"] == plan["eligible"] - 1


def test_no_published_model_finishes_an_empty_run(tmp_path: Path, patched: Any) -> None:
    ctx = _ctx(tmp_path, n=20, configs=[_config("Draft")], published={})
    plan = scoring.plan_run(ctx)
    assert plan["eligible"] == 0 and not ctx.messages
    assert _job(ctx, plan["runId"])["status"] == "succeeded"


def test_score_now_answers_a_handful_reading_only_those_opportunities(
    tmp_path: Path, patched: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from functions.services import training

    opps = _opps(30)
    ctx = _ctx(tmp_path, opportunities=opps)

    def no_full_read(*args: Any, **kw: Any) -> Any:
        raise AssertionError("the whole lake was read")

    monkeypatch.setattr(training, "load_tables", no_full_read)
    reads: list[tuple[str, Any, Any]] = []
    real_read = ctx.lake.tables.read

    def spy(path: str, columns: Any = None, **kw: Any) -> Any:
        reads.append((path, columns, kw.get("filters")))
        return real_read(path, columns, **kw)

    monkeypatch.setattr(ctx.lake.tables, "read", spy)
    ids = list(opps["opportunityid"][:3]) + [str(uuid.uuid4())]
    status, body = scoring.score_now(ctx, [i.upper() for i in ids])
    assert status == 200 and not ctx.messages and len(ctx.dataverse.rows) == 2
    assert [s["opportunityId"] for s in body["scores"]] == sorted(ids[1:3])
    first = body["scores"][0]
    assert first["grade"] in "ABCD" and first["trend"] == "Not enough info" and first["written"] is True
    assert first["model"] == "All@1" and first["reasons"]["model"] == "All"
    reasons = {n["opportunityId"]: n["reason"] for n in body["notScored"]}
    assert reasons[ids[0]] == "not open" and "not in the lake" in reasons[ids[3]]
    whole = [(p, c) for p, c, f in reads if f is None]  # unfiltered: only the outcome and "as of" columns
    assert whole and all(set(c or ["*"]) <= set(EVENT_COLUMNS) | {"statecode"} for p, c in whole), whole
    assert {p for p, _ in whole} == {Lake.current_path("opportunity"), Lake.current_path("opportunitysalesprocess")}
    assert len(_history(ctx)) == 2 and len(scores.state(ctx.lake)) == 2
    status, again = scoring.score_now(ctx, ids[1:3])
    assert status == 200 and len(ctx.dataverse.calls) == 1, "unchanged: nothing written the second time"
    assert [s["written"] for s in again["scores"]] == [False, False]
    status, body = scoring.score_now(ctx, list(opps["opportunityid"][:25]))
    assert status == 202 and body["job"]["kind"] == "scoring" and ctx.messages
    assert body["run"]["eligible"] == 22


def test_validate_ids_names_the_bad_ones() -> None:
    with pytest.raises(scoring.ScoringError) as err:
        scoring.validate_ids(["not-a-guid", str(uuid.uuid4()), 7])
    assert "not-a-guid" in str(err.value) and "7" in str(err.value) and status_of(err.value) == 400
    with pytest.raises(scoring.ScoringError):
        scoring.validate_ids([])


def test_bad_messages_are_rejected_clearly() -> None:
    for body in (
        b"not json",
        b"[]",
        b'{"runId": "../x", "batch": 1}',
        b'{"runId": "a", "batch": -1}',
        b'{"runId": "a", "chunk": 1}',
        b'{"runId": "a", "batch": 1, "round": 0, "chunk": 1}',
        b'{"runId": "a", "batch": true}',
    ):
        with pytest.raises(scoring.ScoringError) as err:
            scoring.parse_message(body)
        assert err.value.code == "BadMessage"
    assert scoring.parse_message(b'{"runId": "a", "batch": 2}') == ("a", 2)


def test_a_message_of_an_unknown_run_or_batch_is_dropped(tmp_path: Path, patched: Any) -> None:
    ctx = _ctx(tmp_path, n=20)
    assert scoring.handle_message(ctx, b'{"runId": "gone", "batch": 0}') == {"dropped": True}
    plan = scoring.plan_run(ctx)
    assert scoring.handle_message(ctx, {"runId": plan["runId"], "batch": 7}) == {"dropped": True}


def test_decode_row_for_the_widget() -> None:
    row = {
        "msdyn_score": 62,
        "msdyn_grade": 1,
        "msdyn_scoretrend": 0,
        "msdyn_scoredon": "2026-11-26",
        "msdyn_scorereasons": json.dumps({"model": "M", "version": 3, "positive": [], "negative": []}),
    }
    out = scoring.decode_dataverse_row("x", row)
    assert out["grade"] == "B" and out["trend"] == "Improving" and out["model"] == "M@3"
    assert out["scoredOn"] == "2026-11-26" and out["reasons"]["positive"] == []
    assert scoring.decode_dataverse_row("x", {"msdyn_scorereasons": "not json"})["reasons"] == {"raw": "not json"}
