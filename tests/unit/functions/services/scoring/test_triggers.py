"""The scoring triggers through function_app (real azure.functions requests), on the fake context."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from azure.functions.timer import TimerRequest

from functions.app_context import set_context
from functions.services import scoring
from tests.conftest import registry
from tests.unit.functions.services.scoring.fakes import FakeContext
from tests.unit.functions.services.scoring.test_service import _config, _opps


@pytest.fixture
def ctx(patched: Any, tmp_path: Path) -> Iterator[FakeContext]:
    c = FakeContext(tmp_path, opportunities=_opps(60), configs=[_config("All")], published={"All": 1})
    set_context(c)  # type: ignore[arg-type]
    try:
        yield c
    finally:
        set_context(None)


def _post(body: bytes) -> func.HttpResponse:
    headers = {"Content-Type": "application/json"}
    req = func.HttpRequest("POST", "http://localhost/api/score", headers=headers, params={}, route_params={}, body=body)
    return registry()["start_scoring"].get_user_function()(req)


def _get(opp_id: str) -> func.HttpResponse:
    req = func.HttpRequest(
        "GET",
        f"http://localhost/api/opportunities/{opp_id}/score",
        headers={},
        params={},
        route_params={"id": opp_id},
        body=b"",
    )
    return registry()["get_opportunity_score"].get_user_function()(req)


def _json(resp: func.HttpResponse) -> Any:
    return json.loads(resp.get_body())


def test_bindings() -> None:
    timer = json.loads(registry()["scoring_timer"].get_function_json())["bindings"][0]
    assert timer["type"] == "timerTrigger" and timer["schedule"] == "%SCORING_SCHEDULE%"
    queue = json.loads(registry()["score_worker"].get_function_json())["bindings"][0]
    assert queue["type"] == "queueTrigger" and queue["queueName"] == "%SCORING_QUEUE%"
    poison = json.loads(registry()["score_poison"].get_function_json())["bindings"][0]
    assert poison["type"] == "queueTrigger" and poison["queueName"] == "%SCORING_QUEUE%-poison"


def test_bad_requests_get_400_naming_the_problem(ctx: FakeContext) -> None:
    for body, code in (
        (b"{nope", "MalformedJson"),
        (b"[1]", "MalformedJson"),
        (b'{"ids": []}', "UnknownField"),
        (b'{"opportunityIds": "x"}', "InvalidOpportunityIds"),
        (b'{"opportunityIds": []}', "InvalidOpportunityIds"),
        (b'{"resume": "../etc"}', "InvalidRunId"),
    ):
        resp = _post(body)
        assert resp.status_code == 400, body
        assert _json(resp)["error"]["code"] == code
    resp = _post(json.dumps({"opportunityIds": [str(uuid.uuid4()), "abc", "1'; drop"]}).encode())
    assert resp.status_code == 400 and "abc" in _json(resp)["error"]["message"]
    assert "drop" in _json(resp)["error"]["message"]
    assert _get("not-a-guid").status_code == 400


def test_score_all_is_202_with_a_job_and_the_worker_writes(ctx: FakeContext) -> None:
    resp = _post(b"")
    assert resp.status_code == 202
    job = _json(resp)["job"]
    assert job["kind"] == "scoring" and ctx.messages
    worker = registry()["score_worker"].get_user_function()
    while ctx.messages:  # one message per scoring batch
        worker(func.QueueMessage(body=json.dumps(ctx.messages.pop(0)).encode()))
    assert _json(_get_job(job["id"]))["status"] == "succeeded"
    opp = next(iter(ctx.dataverse.rows))
    resp = _get(opp.upper())
    assert resp.status_code == 200
    body = _json(resp)
    assert body["opportunityId"] == opp and body["grade"] in "ABCD" and body["model"] == "All@1"
    assert _get(str(uuid.uuid4())).status_code == 404


def test_a_handful_of_ids_are_answered_with_scores(ctx: FakeContext) -> None:
    ids = list(_opps(60)["opportunityid"][1:4])
    resp = _post(json.dumps({"opportunityIds": ids}).encode())
    assert resp.status_code == 200
    assert sorted(s["opportunityId"] for s in _json(resp)["scores"]) == sorted(ids)


def test_a_poisoned_message_raises_for_the_host(ctx: FakeContext) -> None:
    worker = registry()["score_worker"].get_user_function()
    with pytest.raises(scoring.ScoringError):
        worker(func.QueueMessage(body=b"garbage"))


def test_timer_plans_a_run_and_supersedes_an_unfinished_one(ctx: FakeContext) -> None:
    old = scoring.plan_run(ctx)
    ctx.messages.clear()
    registry()["scoring_timer"].get_user_function()(TimerRequest(past_due=False))
    assert ctx.messages and ctx.messages[0]["batch"] == 0 and ctx.messages[0]["runId"] != old["runId"]
    assert _json(_get_job(old["runId"]))["error"]["code"] == "Superseded"


def test_the_poison_trigger_fails_the_run_with_the_reason(ctx: FakeContext) -> None:
    resp = _post(b"")
    job_id = _json(resp)["job"]["id"]
    worker = registry()["score_worker"].get_user_function()
    msg = ctx.messages.pop(0)
    ctx.dataverse.fail = lambda op: 429
    for _ in range(3):
        with pytest.raises(scoring.BatchWriteFailed):
            worker(func.QueueMessage(body=json.dumps(msg).encode()))
    assert _json(_get_job(job_id))["status"] == "running", "retried, not yet poisoned"
    registry()["score_poison"].get_user_function()(func.QueueMessage(body=json.dumps(msg).encode()))
    registry()["score_poison"].get_user_function()(func.QueueMessage(body=b"not ours"))  # dropped, no raise
    job = _json(_get_job(job_id))
    assert job["status"] == "failed" and job["error"]["code"] == "BatchesFailed"
    failure = job["result"]["failures"][0]
    assert "429" in failure["reason"] and failure["attempts"] == 3 and failure["batch"] == 0
    ctx.dataverse.fail = None
    resp = _post(json.dumps({"resume": job_id}).encode())
    assert resp.status_code == 202 and resp.headers["Location"] == f"/api/jobs/{job_id}"
    assert _json(resp)["resume"]["reenqueued"] == [0] and _json(resp)["job"]["status"] == "running"
    worker(func.QueueMessage(body=json.dumps(ctx.messages.pop(0)).encode()))
    assert _json(_get_job(job_id))["status"] == "succeeded"
    assert _post(json.dumps({"resume": "nosuchrun"}).encode()).status_code == 404


def _get_job(job_id: str) -> func.HttpResponse:
    req = func.HttpRequest(
        "GET", f"http://localhost/api/jobs/{job_id}", headers={}, params={}, route_params={"id": job_id}, body=b""
    )
    return registry()["get_job"].get_user_function()(req)
