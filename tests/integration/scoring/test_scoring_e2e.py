"""Scoring runs against the real parts: Azurite (the lake's Delta tables and run documents, the scoring
queue) and the mock Dataverse over HTTPS (sync, $batch upserts, faults, simulate), with a model trained by
the real pipeline.

The org is synced and a model trained once per module (containers of its own); each test resets the
mock (score rows gone, seeded data back) and the lake's scoring state."""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import math
import uuid
from collections.abc import Iterator
from typing import Any

import azure.functions as func
import pandas as pd
import pytest
from azure.functions.queue import QueueMessage  # the concrete class (takes dequeue_count), as the host

from connectors.queues import queue_client
from functions.app_context import AppContext, set_context
from functions.services import scoring
from functions.services.jobs import get_job
from functions.services.scoring import batch, inputs, layout, scores, writeback
from functions.settings import load_settings
from local_runner import stack
from local_runner.runner import settle
from modeling.scoring_rules import TREND_TOLERANCE
from tests.conftest import mock_call, registry

pytestmark = pytest.mark.integration
log = logging.getLogger(__name__)
MODEL = "Default"
SCORE_COLUMNS = [
    "msdyn_entityid",
    "msdyn_entitytype",
    "msdyn_score",
    "msdyn_grade",
    "msdyn_scoretrend",
    "msdyn_scoredon",
    "msdyn_scorereasons",
    "msdyn_name",
]


def _settings(azurite: Any, mock_info: dict[str, Any], **extra: str) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:10]
    return stack.app_settings(
        azurite,
        mock_info,
        LAKE_CONTAINER=f"lake-sc-{suffix}",
        MODEL_CONTAINER=f"models-sc-{suffix}",
        SCORING_QUEUE=f"scoring-{suffix}",
        TRAINING_QUEUE=f"training-{suffix}",
        **extra,
    )


def _sync(ctx: AppContext) -> dict[str, Any]:
    from functions.services.sync import run_sync

    return run_sync(ctx.lake, ctx.dataverse, full=False)


@pytest.fixture(scope="module")
def trained(azurite: Any, mock_info: dict[str, Any]) -> dict[str, str]:
    """Sync the seeded org into a lake and publish a model trained on it; returns the settings."""
    from functions.services.training import train
    from modeling.config import ModelConfig

    mock_call(mock_info, "POST", "/_mock/reset")
    values = _settings(azurite, mock_info)
    ctx = AppContext(load_settings(values))
    _sync(ctx)
    ctx.model_store.create_config(MODEL, ModelConfig(name=MODEL).to_json())
    train(ctx, MODEL, reason="test", actor="test")
    ctx.model_store.publish(MODEL)
    return values


@pytest.fixture
def ctx(trained: dict[str, str], mock_info: dict[str, Any]) -> Iterator[AppContext]:
    mock_call(mock_info, "POST", "/_mock/reset")
    c = AppContext(load_settings(trained))
    _wipe_scoring_state(c)
    scoring.clear_model_cache()
    set_context(c)
    try:
        yield c
    finally:
        set_context(None)
        mock_call(mock_info, "POST", "/_mock/faults", {})


def _wipe_scoring_state(c: AppContext) -> None:
    for prefix in ("scoring/", "scores/"):
        c.lake.delete_prefix(prefix)
    q = queue_client(c.settings.storage_connection, c.settings.scoring_queue)
    q.clear_messages()


def drain(c: AppContext, *, max_dequeue: int = 5, stop_after: int | None = None) -> int:
    """Run the queue like the Functions host (`local_runner.runner.settle`): each message through
    `score_worker`, retried on failure and moved to <queue>-poison after max_dequeue attempts. Returns the
    number of messages handled."""
    q = queue_client(c.settings.storage_connection, c.settings.scoring_queue)
    poison = queue_client(c.settings.storage_connection, c.settings.scoring_queue + "-poison")
    worker = registry()["score_worker"].get_user_function()
    handled = 0
    while True:
        msgs = list(q.receive_messages(max_messages=8, visibility_timeout=60))
        if not msgs:
            return handled
        for k, m in enumerate(msgs):
            if stop_after is not None and handled >= stop_after:
                for rest in msgs[k:]:  # received but not handled: visible again at once
                    q.update_message(rest, visibility_timeout=0)
                return handled
            failure = settle(q, poison, m, worker, max_dequeue=max_dequeue, retry_after=0)
            if failure is not None:
                log.warning("score_worker failed (dequeue %d): %r", m.dequeue_count, failure)
            else:
                handled += 1


def rows(c: AppContext) -> pd.DataFrame:
    out = []
    for page in c.dataverse.iter_pages("msdyn_predictivescores", select=SCORE_COLUMNS):
        out.extend(page.rows)
    frame = pd.DataFrame(out, columns=SCORE_COLUMNS)
    return frame.sort_values("msdyn_entityid").reset_index(drop=True)


def clean_rows_then_reset(c: AppContext, mock_info: dict[str, Any]) -> pd.DataFrame:
    """A clean run's rows; then the mock and the lake's scoring state are back to their start."""
    scoring.plan_run(c, actor="clean", batch_size=100)
    drain(c)
    clean = rows(c)
    mock_call(mock_info, "POST", "/_mock/reset")
    _wipe_scoring_state(c)
    return clean


def expected_eligible(mock_server: Any, as_of: dt.datetime) -> set[str]:
    """Open and created within 2 years of the snapshot: the default model has no filter and no BPF."""
    out = set()
    for r in mock_server.org.rows("opportunity"):
        created = dt.datetime.fromisoformat(str(r["createdon"]).replace("Z", "+00:00"))
        if r["statecode"] == 0 and as_of - dt.timedelta(days=730) <= created <= as_of:
            out.add(str(r["opportunityid"]).lower())
    return out


def test_run_writes_one_correct_row_per_eligible_opportunity_and_a_rerun_writes_nothing(
    ctx: AppContext, mock_server: Any, mock_info: dict[str, Any]
) -> None:
    mock_call(mock_info, "POST", "/_mock/stats/reset")
    plan = scoring.plan_run(ctx, actor="test", batch_size=100)
    assert plan["batches"] >= 2
    assert drain(ctx) == plan["batches"], "one message per batch"
    stats = mock_call(mock_info, "GET", "/_mock/stats")
    sizes = [min(100, plan["eligible"] - s) for s in range(0, plan["eligible"], 100)]
    bound = sum(math.ceil(n / 1000) for n in sizes)
    assert stats["bulk_requests"] == bound, "UpsertMultiple requests = sum over batches of ceil(changed / 1,000)"
    assert stats["batch_requests"] == 0, "the org lists UpsertMultiple: no $batch"
    got = rows(ctx)
    eligible = expected_eligible(mock_server, dt.datetime.fromisoformat(plan["asOf"]))
    assert len(got) == got["msdyn_entityid"].nunique(), "exactly one row per opportunity"
    assert set(got["msdyn_entityid"]) == eligible
    assert (got["msdyn_entitytype"] == "opportunity").all()
    assert got["msdyn_score"].between(0, 100).all() and (got["msdyn_scoretrend"] == 3).all()
    assert (got["msdyn_scoredon"].astype(str).str[:10] == plan["scoredOn"]).all()
    ranges = plan["models"][0]["gradeRanges"]
    for _, r in got.iterrows():
        want = next((i for i, lo in enumerate(ranges) if r["msdyn_score"] >= lo), 3)
        assert r["msdyn_grade"] == want
        reasons = json.loads(r["msdyn_scorereasons"])
        assert reasons["model"] == MODEL and len(r["msdyn_scorereasons"]) <= 10_000
        assert len(reasons["positive"]) <= 5 and len(reasons["negative"]) <= 5
    report = get_job(ctx, plan["runId"])
    assert report["status"] == "succeeded" and report["result"]["written"] == len(eligible)
    assert report["result"]["writeRequests"] == bound
    assert len(scores.history(ctx.lake)) == len(eligible) == len(scores.state(ctx.lake))

    mock_call(mock_info, "POST", "/_mock/stats/reset")
    again = scoring.plan_run(ctx, actor="test", batch_size=100)
    drain(ctx)
    stats = mock_call(mock_info, "GET", "/_mock/stats")
    assert stats["writes"] == 0 and stats["batch_requests"] == stats["bulk_requests"] == 0, stats
    assert get_job(ctx, again["runId"])["result"]["unchanged"] == len(eligible)


def test_an_org_without_upsert_multiple_gets_the_same_rows_through_batch(
    ctx: AppContext, mock_info: dict[str, Any]
) -> None:
    bulk = clean_rows_then_reset(ctx, mock_info)
    mock_call(mock_info, "POST", "/_mock/messages", {"disable": ["msdyn_predictivescore/UpsertMultiple"]})
    ctx.dataverse.message_cache.clear()  # as a new worker process would, it reads the capability again
    mock_call(mock_info, "POST", "/_mock/stats/reset")
    plan = scoring.plan_run(ctx, actor="batch", batch_size=100)
    drain(ctx)
    stats = mock_call(mock_info, "GET", "/_mock/stats")
    assert stats["bulk_requests"] == 0 and stats["batch_requests"] == plan["batches"]
    assert stats["by_table"]["sdkmessagefilters"]["GET"] == 1, "read once, cached"
    pd.testing.assert_frame_equal(rows(ctx), bulk)


def test_bulk_write_back_under_every_throttle_and_dropped_connections_gives_the_clean_rows(
    ctx: AppContext, mock_info: dict[str, Any]
) -> None:
    clean = clean_rows_then_reset(ctx, mock_info)
    throttles = {"rate_429": 0.07, "rate_429_time": 0.07, "rate_429_concurrency": 0.06}  # 20% of requests
    faults = {**throttles, "rate_drop": 0.05, "retry_after": 1, "seed": 5}
    mock_call(mock_info, "POST", "/_mock/faults", faults)
    run = scoring.plan_run(ctx, actor="faults", batch_size=10)  # many requests: every kind of fault lands
    drain(ctx)
    stats = mock_call(mock_info, "GET", "/_mock/stats")
    mock_call(mock_info, "POST", "/_mock/faults", {})
    assert {"429", "429_time", "429_concurrency", "drop"} <= set(stats["faults_injected"]), stats
    assert stats["bulk_requests"] >= run["batches"] and stats["batch_requests"] == 0
    pd.testing.assert_frame_equal(rows(ctx), clean)
    report = get_job(ctx, run["runId"])
    assert report["status"] == "succeeded" and report["result"]["written"] == len(clean)


def test_one_refused_row_is_reported_and_does_not_stop_the_others(
    ctx: AppContext, mock_info: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = scoring.plan_run(ctx, actor="refused", batch_size=1000)
    inputs_frame = ctx.lake.read_parquet(layout.input_path(plan["runId"], 0)).to_pandas()
    bad = str(inputs_frame["opportunityid"].iloc[7])
    real = writeback.score_body

    def body(r: Any) -> dict[str, Any]:
        return {**real(r), "msdyn_grade": 9} if r["opportunityid"] == bad else real(r)

    monkeypatch.setattr(writeback, "score_body", body)
    mock_call(mock_info, "POST", "/_mock/stats/reset")
    drain(ctx)
    result = ctx.lake.read_json(layout.result_path(plan["runId"], 0))
    assert result["writeFailed"] == 1 and result["written"] == plan["eligible"] - 1
    failure = result["writeFailures"][0]
    assert failure["opportunityId"] == bad and failure["status"] == 400 and failure["code"] == "0x8004431A"
    assert "msdyn_grade" in failure["reason"]
    run_report = get_job(ctx, plan["runId"])["result"]
    assert run_report["writeFailed"] == 1 and run_report["writeFailures"] == [failure]
    written = set(rows(ctx)["msdyn_entityid"])
    assert bad not in written and len(written) == plan["eligible"] - 1
    requests = mock_call(mock_info, "GET", "/_mock/stats")["requests"]["POST"]
    assert requests <= 1 + 2 * math.ceil(math.log2(plan["eligible"])), "found by bisection"
    monkeypatch.setattr(writeback, "score_body", real)
    scoring.plan_run(ctx, actor="again", batch_size=1000)
    drain(ctx)
    assert bad in set(rows(ctx)["msdyn_entityid"]), "the refused row is sent again by the next run"


def test_faults_and_a_killed_run_give_exactly_the_clean_rows(
    ctx: AppContext, mock_info: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    clean = clean_rows_then_reset(ctx, mock_info)

    # faults: 20% 429/503 and dropped connections while scoring
    mock_call(
        mock_info,
        "POST",
        "/_mock/faults",
        {"rate_429": 0.1, "rate_503": 0.1, "rate_drop": 0.05, "retry_after": 1, "seed": 3},
    )
    faulty = scoring.plan_run(ctx, actor="faults", batch_size=100)
    drain(ctx)
    mock_call(mock_info, "POST", "/_mock/faults", {})
    pd.testing.assert_frame_equal(rows(ctx), clean)
    assert get_job(ctx, faulty["runId"])["status"] == "succeeded"

    # killed midway: two batches done, then one dies after its $batch upserts but before its history
    # commit, and the rest of the queue is lost with the process; the run is resumed
    mock_call(mock_info, "POST", "/_mock/reset")
    _wipe_scoring_state(ctx)
    killed = scoring.plan_run(ctx, actor="killed", batch_size=100)
    drain(ctx, stop_after=2)
    real_append = scores.append_history

    def dying(*args: Any, **kw: Any) -> Any:
        raise KeyboardInterrupt("killed")  # not an Exception: nothing may catch it

    monkeypatch.setattr(scores, "append_history", dying)
    with pytest.raises(KeyboardInterrupt):
        drain(ctx, stop_after=1)
    monkeypatch.setattr(scores, "append_history", real_append)
    queue_client(ctx.settings.storage_connection, ctx.settings.scoring_queue).clear_messages()
    assert get_job(ctx, killed["runId"])["status"] == "running"
    assert len(rows(ctx)) == 300, "the dead batch's rows reached Dataverse"
    resumed = scoring.resume(ctx, killed["runId"])
    assert len(resumed["reenqueued"]) == killed["batches"] - 2
    drain(ctx)
    pd.testing.assert_frame_equal(rows(ctx), clean)
    report = get_job(ctx, killed["runId"])
    assert report["status"] == "succeeded" and report["result"]["batchesDone"] == killed["batches"]
    assert report["result"]["written"] == len(clean)
    hist = scores.history(ctx.lake)
    assert len(hist) == len(clean) and hist["opportunityid"].is_unique, "no row twice in the history"
    assert len(scores.state(ctx.lake)) == len(clean)


def drain_poison(c: AppContext) -> int:
    """The poison trigger over the real `<queue>-poison` queue."""
    poison = queue_client(c.settings.storage_connection, c.settings.scoring_queue + "-poison")
    handler = registry()["score_poison"].get_user_function()
    n = 0
    for m in poison.receive_messages(max_messages=32, visibility_timeout=60):
        body = m.content if isinstance(m.content, bytes) else base64.b64decode(m.content)
        handler(QueueMessage(id=m.id, body=body, dequeue_count=m.dequeue_count))
        poison.delete_message(m)
        n += 1
    return n


def test_a_batch_that_keeps_failing_is_poisoned_and_its_reason_shows_in_the_job(
    ctx: AppContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = scoring.plan_run(ctx, actor="poison", batch_size=100)
    real = batch.execute

    def broken(c: Any, spec: Any, frame: Any) -> Any:
        if spec.batch == 1:
            raise ValueError("the input of batch 1 is unreadable")
        return real(c, spec, frame)

    monkeypatch.setattr(batch, "execute", broken)
    drain(ctx, max_dequeue=2)
    assert get_job(ctx, plan["runId"])["status"] == "running", "poisoned, not yet recorded"
    assert drain_poison(ctx) == 1
    http_get_job = registry()["get_job"].get_user_function()
    req = func.HttpRequest("GET", "http://x", headers={}, params={}, route_params={"id": plan["runId"]}, body=b"")
    job = json.loads(http_get_job(req).get_body())
    assert job["status"] == "failed" and job["error"]["code"] == "BatchesFailed"
    failure = job["result"]["failures"][0]
    assert failure["batch"] == 1 and failure["attempts"] == 2
    assert "the input of batch 1 is unreadable" in failure["reason"]
    assert job["result"]["written"] == plan["eligible"] - 100  # the other batches were written
    monkeypatch.setattr(batch, "execute", real)
    assert scoring.resume(ctx, plan["runId"])["reenqueued"] == [1]
    assert drain(ctx) == 1
    job = json.loads(http_get_job(req).get_body())
    assert job["status"] == "succeeded" and job["result"]["written"] == plan["eligible"]
    assert job["result"]["failures"] == []


def test_after_simulate_changed_scores_show_the_right_trend(
    azurite: Any, mock_info: dict[str, Any], trained: dict[str, str]
) -> None:
    mock_call(mock_info, "POST", "/_mock/reset")
    values = dict(trained, LAKE_CONTAINER=f"lake-sim-{uuid.uuid4().hex[:8]}")
    c = AppContext(load_settings(values))
    set_context(c)
    try:
        _sync(c)
        scoring.plan_run(c, actor="day0")
        drain(c)
        before = rows(c).set_index("msdyn_entityid")
        mock_call(mock_info, "POST", "/_mock/simulate", {"days": 10, "seed": 1})
        _sync(c)
        second = scoring.plan_run(c, actor="day10")
        drain(c)
        after = rows(c).set_index("msdyn_entityid")
        report = get_job(c, second["runId"])["result"]
        assert report["written"] > 0
        both = after.index.intersection(before.index)
        changed = [i for i in both if after.loc[i, "msdyn_score"] != before.loc[i, "msdyn_score"]]
        assert changed, "ten simulated days move some scores"
        for i in changed:
            delta = after.loc[i, "msdyn_score"] - before.loc[i, "msdyn_score"]
            want = 0 if delta > TREND_TOLERANCE else 2 if delta < -TREND_TOLERANCE else 1
            assert after.loc[i, "msdyn_scoretrend"] == want, (i, delta)
        for i in both.difference(changed):
            assert after.loc[i, "msdyn_scoretrend"] == before.loc[i, "msdyn_scoretrend"]
        new = after.index.difference(before.index)
        assert (after.loc[new, "msdyn_scoretrend"] == 3).all()
        moved = [
            i for i in changed if abs(after.loc[i, "msdyn_score"] - before.loc[i, "msdyn_score"]) > TREND_TOLERANCE
        ]
        assert moved, "some scores move by more than the trend tolerance"
        for i in moved[:5]:  # why did my score change: the facts that moved it, with old and new values
            card = scoring.get_score(c, i)
            assert [h["score"] for h in card["history"]] == [before.loc[i, "msdyn_score"], after.loc[i, "msdyn_score"]]
            change = card["lastChange"]
            assert change["from"] == before.loc[i, "msdyn_score"] and change["to"] == after.loc[i, "msdyn_score"]
            assert change["facts"], card
            assert any(f["from"] != f["to"] and f["from"] and f["to"] for f in change["facts"]), json.dumps(change)
            assert all(f["text"].startswith(f["label"]) and "point" in f["text"] for f in change["facts"])
            chart = json.loads(after.loc[i, "msdyn_scorereasons"])["history"]
            assert [p["score"] for p in chart] == [before.loc[i, "msdyn_score"], after.loc[i, "msdyn_score"]]
        state = scores.state(c.lake)
        assert set(state["opportunityid"]) == set(after.index)
        assert len(scores.history(c.lake)) == len(before) + report["written"]
    finally:
        set_context(None)
        mock_call(mock_info, "POST", "/_mock/reset")


def test_enterprise_quota_stops_new_records_and_says_so(
    azurite: Any, mock_info: dict[str, Any], trained: dict[str, str]
) -> None:
    mock_call(mock_info, "POST", "/_mock/reset")
    values = dict(
        trained,
        LICENSE_TIER="enterprise",
        MONTHLY_SCORING_QUOTA="120",
        LAKE_CONTAINER=f"lake-q-{uuid.uuid4().hex[:8]}",
    )
    c = AppContext(load_settings(values))
    set_context(c)
    try:
        _sync(c)
        plan = scoring.plan_run(c, actor="quota", batch_size=50)
        drain(c)
        report = get_job(c, plan["runId"])["result"]
        assert report["scored"] == 120 and report["quotaReached"]
        assert report["quotaStopped"] == plan["eligible"] - 120 and "quota" in report["message"]
        assert len(rows(c)) == 120
        assert scoring.quota_usage(c, plan["month"])["used"] == 120
    finally:
        set_context(None)


def test_http_score_and_widget_row(ctx: AppContext) -> None:
    opp = inputs.read_all(ctx).tables["opportunity"]
    open_ids = list(opp.loc[opp["statecode"] == 0, "opportunityid"].astype(str)[:3])
    req = func.HttpRequest(
        "POST",
        "http://localhost/api/score",
        headers={"Content-Type": "application/json"},
        params={},
        route_params={},
        body=json.dumps({"opportunityIds": open_ids}).encode(),
    )
    resp = registry()["start_scoring"].get_user_function()(req)
    assert resp.status_code == 200, resp.get_body()
    scores = {s["opportunityId"]: s for s in json.loads(resp.get_body())["scores"]}
    get = registry()["get_opportunity_score"].get_user_function()
    for i in open_ids:
        if i.lower() not in scores:
            continue
        r = get(func.HttpRequest("GET", "http://x", headers={}, params={}, route_params={"id": i}, body=b""))
        assert r.status_code == 200
        widget = json.loads(r.get_body())
        assert widget["score"] == scores[i.lower()]["score"] and widget["model"] == f"{MODEL}@1"
        assert widget["trend"] == "Not enough info" and isinstance(widget["reasons"]["positive"], list)
    missing = get(
        func.HttpRequest("GET", "http://x", headers={}, params={}, route_params={"id": str(uuid.uuid4())}, body=b"")
    )
    assert missing.status_code == 404
