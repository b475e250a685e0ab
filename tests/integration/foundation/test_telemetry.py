"""Spans and metrics of a sync, a training and a publish against Azurite and the mock (the SDK's in-memory
exporter and metric reader): run spans with their ids, one client span per Dataverse call, rows synced per
table, the training's duration and the published version's AUC."""

from __future__ import annotations

import pytest

from functions.services import models as admin
from functions.services import sync as sync_jobs
from functions.services import training

pytestmark = pytest.mark.integration


def test_sync_training_and_publish_are_traced_and_measured(app_context, mock, otel):
    report = sync_jobs.run_checked(app_context, full=True, job_id="job-sync-1")
    [run] = otel.spans("sync.run")
    assert run.attributes["sync.full"] is True and run.attributes["job.id"] == "job-sync-1"
    assert run.attributes["sync.id"] == report["runId"]
    calls = otel.spans()
    dataverse = [s for s in calls if s.name.startswith("dataverse ")]
    assert {s.attributes["dataverse.table"] for s in dataverse} >= {"opportunities", "accounts"}
    assert all(s.attributes["http.response.status_code"] < 400 for s in dataverse)
    assert all(s.parent is not None and s.context.trace_id == run.context.trace_id for s in dataverse
               if s.start_time >= run.start_time and s.end_time <= run.end_time)
    fetched = report["tables"]["opportunity"]["fetched"]
    assert fetched >= 1500 and otel.counted("sync.rows", **{"dataverse.table": "opportunity"}) == fetched

    created = admin.create_model(app_context, {"name": "Traced", "autoRetrain": False}, actor="test")
    job = training.run_training_job(
        app_context, {"jobId": created["job"]["id"], "model": "Traced", "reason": "manual", "actor": "test"}
    )
    assert job["status"] == "succeeded", job
    [trained] = otel.spans("training.run")
    assert trained.attributes["model"] == "Traced" and trained.attributes["model.version"] == 1
    assert trained.attributes["job.id"] == created["job"]["id"]
    assert otel.counted("training.duration", model="Traced") > 0

    admin.publish(app_context, "Traced", None, actor="test")
    auc = job["result"]["auc"]
    assert otel.gauge("model.auc", model="Traced", **{"model.version": 1}) == [pytest.approx(auc)]
