"""POST / GET /api/models/{name}/backtest through function_app's real functions on the in-memory fakes (see
conftest), the worker running a real two-month backtest on the unit synthetic tables."""

from __future__ import annotations

import datetime as dt
import re

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from functions.services import backtest
from modeling.config import ModelConfig
from tests.unit.functions.services.models.conftest import call, work
from tests.unit.modeling import synth

ADMIN = {"x-ms-client-principal-name": "admin@contoso.test"}
NAME = "BT"


@pytest.fixture
def model(ctx, monkeypatch):
    ctx.model_store.create_config(NAME, ModelConfig(name=NAME, training_period="1y").to_json())
    tables = synth.make_tables(n=900, n_open=150)
    monkeypatch.setattr(backtest, "load_tables", lambda lake, history_columns=None: tables)
    monkeypatch.setattr(backtest, "load_metadata", lambda lake: synth.metadata())
    return tables


def start(body=None):
    return call("start_backtest", "POST", route={"name": NAME}, body=body, headers=ADMIN)


@pytest.mark.parametrize(
    ("body", "field"),
    [({"months": 13}, "months"), ({"from": "2025-01-02"}, "from"), ({"to": "2999-01-01"}, "to"), ({"x": 1}, "x")],
)
def test_a_bad_range_is_400_naming_the_field_and_queues_nothing(ctx, model, body, field):
    status, payload, _ = start(body)
    assert status == 400 and payload["error"]["field"] == field, payload
    assert payload["error"]["message"].startswith(field + ":")
    assert ctx.sent == []
    refused = [e for e in ctx.model_store.audit_log(NAME) if e["action"] == "backtest-requested"]
    assert refused and refused[0]["outcome"] == "refused"


def test_an_unknown_model_is_404(ctx):
    status, payload, _ = call("start_backtest", "POST", route={"name": "Nope"}, headers=ADMIN)
    assert status == 404 and payload["error"]["code"] == "ModelNotFound"
    status, payload, _ = call("get_backtest", route={"name": "Nope"})
    assert status == 404 and payload["error"]["code"] == "ModelNotFound"


def test_start_run_and_read_the_report(ctx, model):
    status, payload, _ = call("get_backtest", route={"name": NAME})
    assert status == 404 and payload["error"]["code"] == "BacktestNotFound" and "POST" in payload["error"]["message"]
    status, accepted, resp = start({"from": "2025-02-01", "to": "2025-03-01"})
    assert status == 202, accepted
    job_id = accepted["job"]["id"]
    assert resp.headers["Location"] == f"/api/jobs/{job_id}" and accepted["cutDates"] == ["2025-02-01", "2025-03-01"]
    assert ctx.sent[-1] == {
        "jobId": job_id, "model": NAME, "task": "backtest", "cutDates": ["2025-02-01", "2025-03-01"],
        "actor": "admin@contoso.test",
    }
    status, payload, _ = start({})  # one at a time per model
    assert status == 409 and payload["error"]["code"] == "BacktestInProgress" and job_id in payload["error"]["message"]
    status, payload, _ = call("get_backtest", route={"name": NAME})
    assert status == 404 and f"job {job_id} is queued" in payload["error"]["message"]

    [job] = work(ctx)
    assert job["status"] == "succeeded", job
    result = job["result"]
    camel = re.compile(r"^[a-z][A-Za-z0-9]*$")
    for month in result["months"]:
        assert all(camel.match(k) for k in month), month
    assert [m["cutDate"] for m in result["months"]] == ["2025-02-01", "2025-03-01"]
    assert all(m["status"] == "evaluated" for m in result["months"])
    status, report, _ = call("get_backtest", route={"name": NAME})
    assert status == 200 and report["running"] is None
    assert {k: v for k, v in report.items() if k != "running"} == result
    assert report["summary"]["evaluated"] == 2 and report["opportunities"] == len(model["opportunity"])

    scores = ctx.model_store.backtests.scores(NAME)
    for month in report["months"]:  # the figures are those of the stored scores
        kept = scores["months"][month["cutDate"]]
        y = np.array([np.nan if o is None else o for o in kept["outcomes"]], dtype=float)
        done = ~np.isnan(y)
        assert month["scoredRows"] == len(kept["ids"]) and month["closedSince"] == int(done.sum())
        assert month["auc"] == round(roc_auc_score(y[done], np.array(kept["probabilities"])[done]), 4)
    assert [e["action"] for e in ctx.model_store.audit_log(NAME)][:2] == ["backtest", "backtest-requested"]
    assert start({"months": 1})[0] == 202  # the last one ended: a new one may start


def test_a_failed_backtest_ends_its_job_failed_and_keeps_no_report(ctx, model, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("lake unreadable")

    monkeypatch.setattr(backtest, "load_tables", broken)
    assert start({"months": 1})[0] == 202
    [job] = work(ctx)
    assert job["status"] == "failed" and job["error"]["code"] == "RuntimeError"
    assert call("get_backtest", route={"name": NAME})[0] == 404
    assert ctx.model_store.get_config(NAME).get("status") != "failed"  # the model itself is untouched


def test_deleting_the_model_deletes_its_backtest(ctx, model):
    start({"months": 1})
    work(ctx)
    assert ctx.model_store.backtests.report(NAME) is not None
    ctx.model_store.delete_model(NAME)
    assert ctx.model_store.blobs.list(f"backtests/{NAME}/") == []


def test_the_default_range_ends_at_the_last_full_month(ctx, model):
    status, accepted, _ = start()
    assert status == 202
    today = dt.datetime.now(dt.UTC).date().replace(day=1)
    last = (today - dt.timedelta(days=1)).replace(day=1)
    assert len(accepted["cutDates"]) == 12 and accepted["cutDates"][-1] == last.isoformat()
