"""Scoring state that gets stuck or spreads: a run whose planner died, one broken model among several,
two runs at once, and a tampered model behind the process cache (fakes for storage, Dataverse and queue;
the real modeling Scorer where the model bytes matter). The kill -9 versions run in
tests/integration/foundation/test_crash_recovery.py."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from connectors.clock import iso, utcnow
from functions.http import status_of
from functions.services import scoring
from functions.services.jobs import get_job
from functions.services.scoring import inputs
from functions.services.scoring.active import ScoringInProgress
from model_store.errors import IntegrityError
from tests.unit.functions.services.scoring.test_service import _config, _ctx, _drain


def _dead_planner(ctx: Any, run_id: str, *, seconds_ago: float) -> None:
    """What a kill -9 during `POST /api/score` leaves: the job running, no plan, a heartbeat that stopped."""
    then = iso(utcnow() - dt.timedelta(seconds=seconds_ago))
    ctx.jobs.create("scoring", {"actor": "admin", "ids": 0, "opportunityIds": None}, job_id=run_id)
    ctx.jobs.update(run_id, status="running", startedAt=then, heartbeatAt=then, owner="dead")
    ctx.lake.json.write("scoring/active.json", {"runId": run_id, "at": then})


def test_a_run_whose_planner_died_reads_failed_and_resume_plans_it(tmp_path: Path, patched: Any) -> None:
    ctx = _ctx(tmp_path, n=50)
    ctx.jobs.stale_after_s = 1.0
    _dead_planner(ctx, "20261201T000000Zdeadbeef00", seconds_ago=5)
    job = get_job(ctx, "20261201T000000Zdeadbeef00")
    assert job["status"] == "failed" and job["error"]["code"] == "PlanningInterrupted", job
    assert "resume" in job["error"]["message"]
    resumed = scoring.resume(ctx, "20261201T000000Zdeadbeef00")  # was 404 RunNotFound
    assert resumed["state"] == "replanned" and resumed["reenqueued"] == [0]
    _drain(ctx)
    done = get_job(ctx, "20261201T000000Zdeadbeef00")
    assert done["status"] == "succeeded" and done["result"]["written"] == 45, done


def test_a_run_still_planning_is_not_replanned(tmp_path: Path, patched: Any) -> None:
    ctx = _ctx(tmp_path, n=20)
    _dead_planner(ctx, "livelyrun", seconds_ago=0)  # its heartbeat is fresh: the planner may be alive
    assert get_job(ctx, "livelyrun")["status"] == "running"
    with pytest.raises(Exception) as err:
        scoring.resume(ctx, "livelyrun")
    assert getattr(err.value, "code", None) == "PlanningInProgress" and status_of(err.value) == 409


def test_one_broken_model_is_reported_and_the_others_still_score(
    tmp_path: Path, patched: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = _ctx(
        tmp_path,
        n=200,
        configs=[_config("Direct", ["Direct"]), _config("Partner", ["Partner"])],
        published={"Direct": 1, "Partner": 1},
    )
    healthy = inputs.load_model

    def load(c: Any, name: str, version: int) -> Any:
        if name == "Direct":
            raise IntegrityError(f"model {name}@{version} failed its integrity check", model=name, version=version)
        return healthy(c, name, version)

    monkeypatch.setattr(inputs, "load_model", load)
    plan = scoring.plan_run(ctx)  # was: the integrity error failed the whole run
    assert [m["key"] for m in plan["models"]] == ["Partner@1"] and plan["eligible"] == 80
    assert [(b["model"], b["code"]) for b in plan["brokenModels"]] == [("Direct", "ModelIntegrityError")]
    _drain(ctx)
    assert get_job(ctx, plan["runId"])["status"] == "succeeded" and len(ctx.dataverse.rows) == 80
    health = ctx.lake.read_json(inputs.MODEL_HEALTH)
    assert [b["model"] for b in health["broken"]] == ["Direct"] and health["runId"] == plan["runId"]


def test_a_second_run_is_refused_while_the_first_is_unfinished(tmp_path: Path, patched: Any) -> None:
    ctx = _ctx(tmp_path, n=300)
    first = scoring.plan_run(ctx, batch_size=100)
    with pytest.raises(ScoringInProgress) as err:
        scoring.plan_run(ctx, batch_size=100)  # was: a second plan, every changed row written twice
    assert status_of(err.value) == 409 and err.value.detail["runId"] == first["runId"]
    assert len(ctx.messages) == first["batches"], "the refused run sent nothing"
    _drain(ctx)
    assert ctx.dataverse.written == first["eligible"]
    second = scoring.plan_run(ctx, batch_size=100)  # the first is finished: a new run may start
    _drain(ctx)
    assert get_job(ctx, second["runId"])["status"] == "succeeded"
    assert ctx.dataverse.written == first["eligible"], "same snapshot: nothing written again"


def test_a_run_whose_planner_died_stops_holding_the_org_once_its_heartbeat_is_stale(
    tmp_path: Path, patched: Any
) -> None:
    ctx = _ctx(tmp_path, n=30)
    ctx.jobs.stale_after_s = 1.0
    _dead_planner(ctx, "deadplanner", seconds_ago=0)
    with pytest.raises(ScoringInProgress):
        scoring.plan_run(ctx)
    _dead_planner(ctx, "deadplanner2", seconds_ago=5)
    plan = scoring.plan_run(ctx)
    _drain(ctx)
    assert get_job(ctx, plan["runId"])["status"] == "succeeded"


def test_the_timer_runs_even_while_a_run_holds_the_org(tmp_path: Path, patched: Any) -> None:
    ctx = _ctx(tmp_path, n=300)
    old = scoring.plan_run(ctx, batch_size=100)
    new = scoring.scheduled_run(ctx)
    assert new["superseded"] == [old["runId"]]
    with pytest.raises(ScoringInProgress) as err:
        scoring.plan_run(ctx)
    assert err.value.detail["runId"] == new["runId"]


def test_a_tampered_model_is_refused_even_after_it_was_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real ModelStore on a fake container: a cached model whose stored bytes change is loaded again
    and refused (sha256); with its checksum rewritten too, onnxruntime's failure becomes the same clear
    IntegrityError instead of an opaque error."""
    from model_store.store import ModelStore, sha256_hex
    from modeling.scoring import Scorer
    from tests.unit.fakes import FakeContainer

    ctx = _ctx(tmp_path, n=10)
    container = FakeContainer()
    store = ModelStore(container)  # type: ignore[arg-type]
    store.create_config("M", {"name": "M"})
    onnx = _tiny_onnx()
    store.save_version("M", onnx, {"stats": {}})
    ctx.model_store = store  # type: ignore[assignment]
    scoring.clear_model_cache()
    monkeypatch.setattr(Scorer, "__init__", _fake_init)
    assert inputs.load_model(ctx, "M", 1)[1]["version"] == 1
    path = "versions/M/0001/model.onnx"
    container.upload_blob(path, b"tampered", overwrite=True)
    with pytest.raises(IntegrityError, match="integrity check"):
        inputs.load_model(ctx, "M", 1)  # was: served from the cache until a restart
    meta_path = "versions/M/0001/meta.json"
    meta = json.loads(container.blobs[meta_path][0])
    container.upload_blob(meta_path, json.dumps({**meta, "sha256": sha256_hex(b"tampered")}).encode(), overwrite=True)
    with pytest.raises(IntegrityError, match="cannot be loaded") as err:
        inputs.load_model(ctx, "M", 1)  # checksum rewritten too: onnxruntime's error, made clear
    assert err.value.code == "ModelIntegrityError" and status_of(err.value) == 500
    scoring.clear_model_cache()


def _tiny_onnx() -> bytes:
    return b"a valid model stands in here"


def _fake_init(self: Any, onnx: bytes, meta: Any, **kw: Any) -> None:
    """Scorer.__init__ that accepts the stand-in bytes and rejects anything else as onnxruntime does."""
    if onnx != _tiny_onnx():
        from onnxruntime.capi.onnxruntime_pybind11_state import InvalidProtobuf

        raise InvalidProtobuf("[ONNXRuntimeError] : 7 : INVALID_PROTOBUF : Load model from memory failed")


def test_health_raises_a_published_model_that_cannot_be_loaded(
    tmp_path: Path, patched: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    import azure.functions as func

    from functions.app_context import set_context
    from tests.conftest import registry

    ctx = _ctx(tmp_path, n=20)
    ctx.lake_container.get_container_properties = lambda: SimpleNamespace(name="lake")  # type: ignore[attr-defined]
    ctx.dataverse.who_am_i = lambda: {"UserId": "u"}  # type: ignore[attr-defined]
    health = registry()["health"].get_user_function()
    set_context(ctx)  # type: ignore[arg-type]
    try:
        scoring.plan_run(ctx)
        body = json.loads(health(func.HttpRequest("GET", "http://localhost/api/health", body=b"")).get_body())
        assert body["status"] == "ok" and body["models"]["broken"] == [], body
        _drain(ctx)
        ctx.model_store.configs.append(_config("Broken"))
        ctx.model_store.aliases["Broken"] = {"published": 2, "publishedAt": "2026-01-09T00:00:00+00:00"}
        healthy = inputs.load_model

        def load(c: Any, name: str, version: int) -> Any:
            if name == "Broken":
                raise IntegrityError("model Broken@2 failed its integrity check", model=name, version=version)
            return healthy(c, name, version)

        monkeypatch.setattr(inputs, "load_model", load)
        scoring.plan_run(ctx)
        body = json.loads(health(func.HttpRequest("GET", "http://localhost/api/health", body=b"")).get_body())
        assert body["status"] == "degraded" and [b["model"] for b in body["models"]["broken"]] == ["Broken"]
    finally:
        set_context(None)
