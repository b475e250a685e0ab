"""The scoring run's orchestration on fakes: model choice, batches, checkpoints, change detection, trend,
quota, resume and the report. The real lake, mock Dataverse and ONNX models run in tests/integration."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pandas as pd
import pytest

from connectors.blobs import JsonBlobs
from functions.services import scoring
from tests.unit.scoring.fakes import FakeContext


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


def _drain(ctx: FakeContext) -> list[dict[str, Any]]:
    """Every queued message through the worker (scoring batches, then the write chunks they fan out)."""
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


def _checkpoint(ctx: FakeContext, path: str) -> dict[str, Any]:
    return dict(json.loads(ctx.lake_container.download_blob(path).readall()))


def test_full_run_writes_every_eligible_row_once_in_chunks_of_exactly_1000(patched: Any) -> None:
    ctx = FakeContext(opportunities=_opps(2500), configs=[_config("All")], published={"All": 1})
    plan = scoring.plan_run(ctx, actor="test", batch_size=700)
    assert plan["eligible"] == 2250 and plan["batches"] == 4 and len(ctx.messages) == 4
    _drain(ctx)
    assert [len(call) for call in ctx.dataverse.calls] == [1000, 1000, 250], "ceil(2250/1000) requests"
    assert len(ctx.dataverse.rows) == 2250
    closed = set(_opps(2500).query("statecode != 0")["opportunityid"])
    assert not closed & set(ctx.dataverse.rows)
    row = ctx.dataverse.rows[_ids(2)[1]]
    assert row["msdyn_entitytype"] == "opportunity" and row["msdyn_scoretrend"] == 3
    assert row["msdyn_score"] == 17 and row["msdyn_grade"] == 3 and row["msdyn_name"] == "Deal 1"
    assert len(row["msdyn_scorereasons"]) <= 10_000 and json.loads(row["msdyn_scorereasons"])["model"] == "All"
    job = ctx.jobs.get(plan["runId"])
    assert job["status"] == "succeeded"
    result = job["result"]
    assert result["written"] == 2250 and result["unchanged"] == 0 and result["changed"] == 2250
    assert result["writeRequests"] == 3 and result["writeChunks"] == 3 and result["failures"] == []


def test_sparse_changes_over_many_batches_are_written_in_one_request(patched: Any) -> None:
    opps = _opps(2000)
    ctx = FakeContext(opportunities=opps, configs=[_config("All")], published={"All": 1})
    scoring.plan_run(ctx, batch_size=100)
    _drain(ctx)
    calls = len(ctx.dataverse.calls)
    assert calls == 2
    moved = opps.index[opps["statecode"] == 0][::60]  # one change in every few batches
    opps.loc[moved, "points"] += 20
    plan = scoring.plan_run(ctx, batch_size=100)
    assert plan["batches"] == 18
    _drain(ctx)
    assert len(ctx.dataverse.calls) == calls + 1, "ceil(changed / 1000) = 1 request"
    assert len(ctx.dataverse.calls[-1]) == len(moved)
    assert ctx.jobs.get(plan["runId"])["result"]["writeRequests"] == 1


def test_rerun_without_change_writes_nothing_and_changed_scores_get_a_trend(patched: Any) -> None:
    opps = _opps(300)
    ctx = FakeContext(opportunities=opps, configs=[_config("All")], published={"All": 1})
    scoring.plan_run(ctx)
    _drain(ctx)
    calls = len(ctx.dataverse.calls)
    second = scoring.plan_run(ctx)
    _drain(ctx)
    assert len(ctx.dataverse.calls) == calls, "a rerun with no change must not send any write request"
    assert ctx.jobs.get(second["runId"])["result"]["unchanged"] == second["eligible"]
    ids = opps["opportunityid"]
    opps.loc[ids == ids[1], "points"] += 20  # improving
    opps.loc[ids == ids[2], "points"] -= 10  # declining
    opps.loc[ids == ids[3], "points"] += 2  # within the tolerance: steady
    scoring.plan_run(ctx)
    _drain(ctx)
    assert len(ctx.dataverse.calls) == calls + 1 and len(ctx.dataverse.calls[-1]) == 3
    assert ctx.dataverse.rows[ids[1]]["msdyn_scoretrend"] == 0
    assert ctx.dataverse.rows[ids[2]]["msdyn_scoretrend"] == 2
    assert ctx.dataverse.rows[ids[3]]["msdyn_scoretrend"] == 1
    # history keeps every write: the first run's and the changed rows
    hist = scoring.load_previous(ctx, fold=False)
    assert hist.set_index("opportunityid").loc[ids[1], "score"] == opps.loc[1, "points"]


def test_compacted_score_snapshots_keep_two_generations(patched: Any) -> None:
    opps = _opps(200)
    ctx = FakeContext(opportunities=opps, configs=[_config("All")], published={"All": 1})
    manifests = []
    for k in range(5):
        opps.loc[opps.index[1 + k], "points"] += 30  # one change per run, so every run writes
        scoring.plan_run(ctx)  # folds the runs finished so far
        _drain(ctx)
        manifests.append(JsonBlobs(ctx.lake_container).read("scoring/state/manifest.json"))
    assert manifests[0] is None and all(manifests[1:]), "the first plan has no finished run to fold"
    snapshots = ctx.lake_container.list_blob_names("scoring/state/scores-")
    last = manifests[-1]
    assert sorted(snapshots) == sorted([last["snapshot"], last["previous"]])
    assert last["previous"] == manifests[-2]["snapshot"]
    state = scoring.load_previous(ctx, fold=False).set_index("opportunityid")
    assert state.loc[opps.loc[5, "opportunityid"], "score"] == opps.loc[5, "points"]


def test_two_matching_models_choose_the_most_specific_then_newest(patched: Any) -> None:
    ctx = FakeContext(
        opportunities=_opps(100),
        configs=[_config("Broad"), _config("Direct", ["Direct"]), _config("Direct2", ["Direct"])],
        published={"Broad": 1, "Direct": 2, "Direct2": 1},
    )
    plan = scoring.plan_run(ctx)
    _drain(ctx)
    by_model = {m["name"]: m["eligible"] for m in plan["models"]}
    # Direct2 was published after Direct (fake publishedAt follows insertion order) -> it wins ties
    assert by_model == {"Direct2": 50, "Direct": 0, "Broad": 40}
    models = {json.loads(r["msdyn_scorereasons"])["model"] for r in ctx.dataverse.rows.values()}
    assert models == {"Direct2", "Broad"} and len(ctx.dataverse.rows) == 90
    assert len(ctx.dataverse.calls) == 1, "rows of both models share one $batch"
    key = scoring.model_priority
    a, b = (scoring.PublishedModel(n, 1, _cfg(n), t) for n, t in (("a", "2026-01-01"), ("b", "2026-01-01")))
    assert sorted([b, a], key=key)[0].name == "a", "same filter and time: by name"


def _cfg(name: str) -> Any:
    from modeling.config import ModelConfig

    return ModelConfig.from_json(_config(name))


def test_redelivered_and_resumed_items_never_write_twice(patched: Any) -> None:
    ctx = FakeContext(opportunities=_opps(2500), configs=[_config("All")], published={"All": 1})
    plan = scoring.plan_run(ctx, batch_size=1000)
    first = ctx.messages[0]
    scoring.handle_message(ctx, json.dumps(first))
    again = scoring.handle_message(ctx, json.dumps(first))  # redelivered
    assert again["alreadyDone"] is True and not ctx.dataverse.calls, "nothing is written while scoring"
    ctx.messages.clear()  # "killed": the other messages are lost
    resumed = scoring.resume_run(ctx, plan["runId"])
    assert resumed["reenqueued"] == [1, 2]
    scoring.handle_message(ctx, json.dumps(ctx.messages.pop(0)))
    scoring.handle_message(ctx, json.dumps(ctx.messages.pop(0)))  # the last batch fans out 3 chunks
    chunk = ctx.messages[0]
    scoring.handle_message(ctx, json.dumps(chunk))
    assert scoring.handle_message(ctx, json.dumps(chunk))["alreadyDone"] is True
    ctx.messages.clear()  # killed again, during the write phase
    assert scoring.resume_run(ctx, plan["runId"])["chunks"] == [[0, 1], [0, 2]]
    _drain(ctx)
    assert [len(c) for c in ctx.dataverse.calls] == [1000, 1000, 250]
    assert len(ctx.dataverse.rows) == plan["eligible"]
    assert ctx.jobs.get(plan["runId"])["status"] == "succeeded"


def test_a_final_run_drops_its_working_data_and_late_redeliveries_stay_harmless(patched: Any) -> None:
    ctx = FakeContext(opportunities=_opps(2500), configs=[_config("All")], published={"All": 1})
    plan = scoring.plan_run(ctx, batch_size=1000)
    prefix = f"scoring/runs/{plan['runId']}/"
    messages = []
    while ctx.messages:
        messages.append(ctx.messages.pop(0))
        scoring.handle_message(ctx, json.dumps(messages[-1]))
    assert len(messages) == 3 + 3, "3 scoring batches, 3 write chunks"
    left = ctx.lake_container.list_blob_names(prefix)
    assert not [p for p in left if p.endswith(".parquet")], "batch frames and staged rows are deleted"
    assert f"{prefix}plan.json" in left and f"{prefix}report.json" in left
    report = ctx.jobs.get(plan["runId"])["result"]
    assert report["scratchDeleted"] == 3 + 3  # 3 batch frames + 3 staged parts
    assert ctx.lake_container.list_blob_names(f"scoring/history/{plan['runId']}/"), "the history stays"
    calls = len(ctx.dataverse.calls)
    for m in messages:  # every message delivered again after the run finished
        assert scoring.handle_message(ctx, json.dumps(m))["alreadyDone"] is True
    assert len(ctx.dataverse.calls) == calls


def test_a_chunk_killed_after_its_write_is_redone_with_the_same_rows(
    patched: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = FakeContext(opportunities=_opps(500), configs=[_config("All")], published={"All": 1})
    plan = scoring.plan_run(ctx)
    scoring.handle_message(ctx, json.dumps(ctx.messages.pop(0)))
    chunk = ctx.messages.pop(0)
    real = ctx.lake.write_parquet

    def dying(path: str, table: Any) -> None:
        if path.startswith("scoring/history/"):
            raise OSError("killed")
        real(path, table)

    monkeypatch.setattr(ctx.lake, "write_parquet", dying)
    with pytest.raises(OSError):
        scoring.handle_message(ctx, json.dumps(chunk))
    monkeypatch.setattr(ctx.lake, "write_parquet", real)
    first = dict(ctx.dataverse.rows)
    scoring.handle_message(ctx, json.dumps(chunk))  # the host's retry
    assert ctx.dataverse.rows == first and len(ctx.dataverse.calls) == 2
    assert ctx.jobs.get(plan["runId"])["status"] == "succeeded"
    assert len(scoring.load_previous(ctx, fold=False)) == plan["eligible"]


def test_a_failing_write_raises_for_the_host_and_keeps_its_reason(patched: Any) -> None:
    ctx = FakeContext(opportunities=_opps(50), configs=[_config("All")], published={"All": 1})
    plan = scoring.plan_run(ctx)
    scoring.handle_message(ctx, json.dumps(ctx.messages.pop(0)))
    msg = ctx.messages.pop(0)
    ctx.dataverse.fail = lambda op: 500 if op.body["msdyn_entityid"].endswith("5") else 204
    with pytest.raises(scoring.BatchFailed):
        scoring.handle_message(ctx, json.dumps(msg))
    checkpoint = _checkpoint(ctx, f"scoring/runs/{plan['runId']}/chunks/000-00000.json")
    assert checkpoint["status"] == "pending" and "BatchFailed" in checkpoint["lastError"]
    ctx.dataverse.fail = None
    result = scoring.handle_message(ctx, json.dumps(msg))  # the host's retry
    assert result["written"] == 45 and len(ctx.dataverse.rows) == 45


def test_a_poisoned_chunk_fails_the_run_with_its_reason_and_resume_completes_it(patched: Any) -> None:
    ctx = FakeContext(opportunities=_opps(2500), configs=[_config("All")], published={"All": 1})
    plan = scoring.plan_run(ctx)
    ctx.dataverse.fail = lambda op: 503 if op.body["msdyn_entityid"] == _ids(2)[1] else 204
    poisoned = _host(ctx)
    assert poisoned == [{"runId": plan["runId"], "round": 0, "chunk": 0}]
    job = ctx.jobs.get(plan["runId"])
    assert job["status"] == "failed" and job["error"]["code"] == "BatchesFailed"
    failure = job["result"]["failures"][0]
    assert failure["phase"] == "write" and failure["chunk"] == 0 and failure["attempts"] == 3
    assert "BatchFailed" in failure["reason"] and "503" in failure["reason"]
    assert job["result"]["chunksDone"] == 2 and job["result"]["written"] == 1250
    assert plan["runId"] in scoring.unfinished_runs(ctx)
    ctx.dataverse.fail = None
    assert scoring.resume_run(ctx, plan["runId"])["chunks"] == [[0, 0]]
    _drain(ctx)
    job = ctx.jobs.get(plan["runId"])
    assert job["status"] == "succeeded" and job["result"]["failures"] == [] and job["result"]["written"] == 2250
    assert not scoring.unfinished_runs(ctx)


def test_a_poisoned_scoring_batch_is_listed_and_the_other_batches_are_written(
    patched: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = FakeContext(opportunities=_opps(2500), configs=[_config("All")], published={"All": 1})
    plan = scoring.plan_run(ctx, batch_size=1000)
    real = scoring.decide_rows

    def broken(frame: Any, *args: Any) -> Any:
        if _ids(2)[1] in set(frame["opportunityid"]):
            raise ValueError("bad batch")
        return real(frame, *args)

    monkeypatch.setattr(scoring, "decide_rows", broken)
    assert _host(ctx) == [{"runId": plan["runId"], "batch": 0}]
    job = ctx.jobs.get(plan["runId"])
    assert job["status"] == "failed" and job["result"]["failures"][0]["batch"] == 0
    assert "ValueError: bad batch" in job["result"]["failures"][0]["reason"]
    assert job["result"]["batchesDone"] == 2 and len(ctx.dataverse.rows) == 1250
    assert [len(c) for c in ctx.dataverse.calls] == [1000, 250]
    monkeypatch.setattr(scoring, "decide_rows", real)
    scoring.resume_run(ctx, plan["runId"])
    _drain(ctx)  # the resumed batch's rows go out in a second write round
    assert ctx.jobs.get(plan["runId"])["status"] == "succeeded" and len(ctx.dataverse.rows) == 2250
    assert ctx.jobs.get(plan["runId"])["result"]["writeRounds"] == 2


def test_a_poisoned_message_that_is_not_ours_is_dropped(patched: Any) -> None:
    ctx = FakeContext(opportunities=_opps(20), configs=[_config("All")], published={"All": 1})
    assert scoring.record_poisoned(ctx, b"garbage") is None
    assert scoring.record_poisoned(ctx, json.dumps({"runId": "nope", "batch": 0})) is None


def test_the_timer_supersedes_unfinished_runs(patched: Any) -> None:
    ctx = FakeContext(opportunities=_opps(2500), configs=[_config("All")], published={"All": 1})
    old = scoring.plan_run(ctx, batch_size=1000)
    scoring.handle_message(ctx, json.dumps(ctx.messages.pop(0)))
    leftover = list(ctx.messages)
    ctx.messages.clear()
    new = scoring.scheduled_run(ctx)
    assert new["superseded"] == [old["runId"]]
    job = ctx.jobs.get(old["runId"])
    assert job["status"] == "failed" and job["error"]["code"] == "Superseded"
    assert new["runId"] in job["error"]["message"]
    for m in leftover:  # the old run's messages still in the queue do nothing
        assert scoring.handle_message(ctx, json.dumps(m)) == {"superseded": True}
    _drain(ctx)
    assert ctx.jobs.get(new["runId"])["status"] == "succeeded" and len(ctx.dataverse.rows) == 2250
    assert not scoring.unfinished_runs(ctx)
    with pytest.raises(scoring.ScoringError) as err:
        scoring.resume_run(ctx, old["runId"])
    assert err.value.code == "Superseded"


def test_quota_counts_distinct_records_per_month_and_stops_with_a_report(
    patched: Any, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = FakeContext(opportunities=_opps(3000), configs=[_config("All")], published={"All": 1}, quota=1500)
    plan = scoring.plan_run(ctx)
    _drain(ctx)
    report = ctx.jobs.get(plan["runId"])["result"]
    assert report["scored"] == 1500 and report["quotaStopped"] == plan["eligible"] - 1500
    assert report["quotaReached"] and "quota" in report["message"]
    assert any("quota" in r.getMessage() for r in caplog.records)
    assert len(ctx.dataverse.rows) == 1500
    again = scoring.plan_run(ctx)  # the same records may be rescored this month; no new ones
    _drain(ctx)
    rep2 = ctx.jobs.get(again["runId"])["result"]
    assert rep2["scored"] == 1500 and rep2["written"] == 0 and len(ctx.dataverse.rows) == 1500
    assert scoring.quota_usage(ctx, plan["month"])["used"] == 1500


def test_records_the_model_cannot_score_are_skipped_with_a_reason(patched: Any) -> None:
    opps = _opps(20)
    opps.loc[3, "points"] = None
    ctx = FakeContext(opportunities=opps, configs=[_config("All")], published={"All": 1})
    plan = scoring.plan_run(ctx)
    _drain(ctx)
    report = ctx.jobs.get(plan["runId"])["result"]
    assert report["skipped"] == 1 and report["skipReasons"] == {"points missing": 1}
    assert report["written"] == plan["eligible"] - 1


def test_no_published_model_finishes_an_empty_run(patched: Any) -> None:
    ctx = FakeContext(opportunities=_opps(20), configs=[_config("Draft")], published={})
    plan = scoring.plan_run(ctx)
    assert plan["eligible"] == 0 and not ctx.messages
    assert ctx.jobs.get(plan["runId"])["status"] == "succeeded"


def test_score_now_answers_a_handful_synchronously(patched: Any) -> None:
    opps = _opps(30)
    ctx = FakeContext(opportunities=opps, configs=[_config("All")], published={"All": 1})
    ids = list(opps["opportunityid"][:3]) + [str(uuid.uuid4())]
    status, body = scoring.score_now(ctx, [i.upper() for i in ids])
    assert status == 200 and not ctx.messages and len(ctx.dataverse.rows) == 2
    assert [s["opportunityId"] for s in body["scores"]] == sorted(ids[1:3])
    assert {s["grade"] for s in body["scores"]} <= set("ABCD") and body["scores"][0]["trend"] == "Not enough info"
    reasons = {n["opportunityId"]: n["reason"] for n in body["notScored"]}
    assert reasons[ids[0]] == "not open" and "not in the lake" in reasons[ids[3]]
    status, body = scoring.score_now(ctx, list(opps["opportunityid"][:25]))
    assert status == 202 and body["job"]["kind"] == "scoring" and ctx.messages


def test_validate_ids_names_the_bad_ones() -> None:
    from functions.http import BadRequest

    with pytest.raises(BadRequest) as err:
        scoring.validate_ids(["not-a-guid", str(uuid.uuid4()), 7])
    assert "not-a-guid" in str(err.value) and "7" in str(err.value)
    with pytest.raises(BadRequest):
        scoring.validate_ids([])


def test_decide_trend_rules() -> None:
    assert scoring.decide_trend(None, None, 50, 3) == 3
    assert scoring.decide_trend(50.0, 3, 50, 3) == 3, "unchanged score keeps the written trend"
    assert scoring.decide_trend(50.0, 3, 54, 3) == 0
    assert scoring.decide_trend(50.0, 0, 47, 3) == 1
    assert scoring.decide_trend(50.0, 1, 46, 3) == 2


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
        with pytest.raises(scoring.ScoringError):
            scoring.parse_message(body)


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


def test_a_run_killed_while_planning_is_superseded_too(patched: Any) -> None:
    ctx = FakeContext(opportunities=_opps(30), configs=[_config("All")], published={"All": 1})
    ctx.jobs.create("scoring", {}, job_id="deadrun")
    ctx.jobs.start("deadrun")
    ctx.lake_container.upload_blob("scoring/runs/deadrun/batches/00000.parquet", b"partial")
    new = scoring.scheduled_run(ctx)
    assert new["superseded"] == ["deadrun"]
    assert ctx.jobs.get("deadrun")["error"]["code"] == "Superseded"
    _drain(ctx)
    assert not scoring.unfinished_runs(ctx)
