"""The real training pipeline on Azurite: lake (Parquet via the Lake API) -> modeling -> ONNX registry,
through function_app's functions with real HttpRequests and real queue messages read back from Azurite."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from typing import Any

import azure.functions as func
import pytest
from azure.functions.timer import TimerRequest

from connectors.queues import queue_client
from functions.app_context import AppContext, set_context
from model_store.errors import IntegrityError
from tests.conftest import registry
from tests.integration.models.lake_data import seed_lake
from tests.unit.fakes import unit_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def ctx(azurite) -> Iterator[AppContext]:
    suffix = uuid.uuid4().hex[:10]
    context = AppContext(  # Dataverse is not used: training reads only the lake
        unit_settings(
            AzureWebJobsStorage=azurite.connection_string,
            LAKE_CONTAINER=f"lake-{suffix}",
            MODEL_CONTAINER=f"models-{suffix}",
            TRAINING_QUEUE=f"training-{suffix}",
        )
    )
    seed_lake(context.lake)
    set_context(context)
    try:
        yield context
    finally:
        set_context(None)


def call(
    name: str, method: str = "GET", *, route: dict | None = None, body: Any = None, params: dict | None = None
) -> tuple[int, Any]:
    req = func.HttpRequest(
        method,
        "http://localhost/api/models",
        headers={"x-ms-client-principal-name": "ops", "Content-Type": "application/json"},
        params=params or {},
        route_params=route or {},
        body=b"" if body is None else json.dumps(body).encode(),
    )
    resp = registry()[name].get_user_function()(req)
    return resp.status_code, json.loads(resp.get_body())


def drain(ctx: AppContext) -> list[dict]:
    """Receive the training queue's messages from Azurite and run each through train_worker."""
    client = queue_client(ctx.settings.storage_connection, ctx.settings.training_queue)
    jobs = []
    for msg in client.receive_messages(max_messages=32, visibility_timeout=300):
        body = json.loads(msg.content)
        registry()["train_worker"].get_user_function()(func.QueueMessage(id=msg.id, body=msg.content))
        client.delete_message(msg)
        jobs.append(ctx.jobs.get(body["jobId"]))
    return jobs


def test_create_train_inspect_publish_and_auto_retrain(ctx):
    status, body = call("create_model", "POST", body={"name": "Deals"})
    assert status == 202, body
    assert body["counts"]["won"] >= 40 and body["counts"]["lost"] >= 40
    [job] = drain(ctx)
    assert job["status"] == "succeeded", job
    assert job["result"]["version"] == 1 and 0.6 < job["result"]["auc"] <= 1.0

    store = ctx.model_store
    loaded = store.load_version("Deals", 1)  # sha256 checked
    assert loaded.onnx[:2] and loaded.meta["sha256"] and "spec" in loaded.meta
    names = store.blobs.list("versions/Deals/")
    assert sorted(n.rsplit("/", 1)[1] for n in names) == ["meta.json", "model.onnx"]

    status, perf = call("model_performance", route={"name": "Deals"}, params={"version": "1"})
    assert status == 200 and perf["readiness"] in ("Ready", "OK", "Not ready")
    for key in ("accuracy", "precision", "recall", "f1", "auc", "brier"):
        assert key in perf["metrics"], key
    status, ins = call("model_insights", route={"name": "Deals"})
    assert status == 200 and "budgetstatus" in ins["insights"]["top_fields"]

    assert call("publish_model", "POST", route={"name": "Deals"})[1]["published"] == 1
    old = (dt.datetime.now(dt.UTC) - dt.timedelta(days=16)).isoformat(timespec="seconds")
    store.set_status("Deals", lastTrainedAt=old)
    registry()["retrain_timer"].get_user_function()(TimerRequest(past_due=False))
    [job] = drain(ctx)
    assert job["status"] == "succeeded", job
    decision = job["result"]["autoPublish"]
    entries = [
        e for e in store.audit_log("Deals") if e["action"] == "publish" and e["actor"].startswith("system")
    ]
    same_records_auc = entries[0]["detail"]["currentAucSameRecords"]
    assert (
        same_records_auc is not None and 0.5 < same_records_auc <= 1.0
    )  # the real Scorer ran on v2's test set
    # same data, same seed: the retrain is as good as the current version on the same records
    assert decision["publish"] is True and store.get_alias("Deals")["published"] == 2

    store.container.upload_blob("versions/Deals/0002/model.onnx", b"tampered", overwrite=True)
    with pytest.raises(IntegrityError):
        store.load_published("Deals")


def test_insufficient_data_is_422_before_anything_is_queued(ctx):
    status, body = call("create_model", "POST", body={"name": "Recent", "trainingPeriod": "3m"})
    assert status == 422, body
    found, needed = body["error"]["details"]["found"], body["error"]["details"]["needed"]
    assert needed == {"won": 40, "lost": 40} and (found["won"] < 40 or found["lost"] < 40)
    assert ctx.model_store.list_configs() == [] and drain(ctx) == []


def test_validation_uses_the_lake_metadata(ctx):
    status, body = call(
        "create_model", "POST", body={"filterColumn": "new_region", "filterValues": ["Nowhere"]}
    )
    assert status == 400 and body["error"]["field"] == "filterValues"
    status, body = call(
        "create_model",
        "POST",
        body={"name": "North", "filterColumn": "new_region", "filterValues": ["North", "South"]},
    )
    assert status == 202, body
    assert ctx.model_store.get_config("North")["filterValues"] == ["1", "2"]
