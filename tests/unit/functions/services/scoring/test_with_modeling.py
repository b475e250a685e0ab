"""The scoring run with the REAL modeling code (dataset, features, ONNX Scorer, reasons) on synthetic
lake-shaped tables; only storage and Dataverse are fakes here (the real ones run in integration)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from functions.services import scoring
from modeling.config import validate_with_metadata
from modeling.dataset import build_training_frame
from modeling.train import train_model
from tests.unit.functions.services.scoring.fakes import FakeContext
from tests.unit.modeling import synth


@pytest.fixture(scope="module")
def org() -> dict[str, Any]:
    tables = synth.make_tables(n=1200, n_open=300)
    md = synth.metadata()
    cfg = validate_with_metadata({"name": "Synth"}, md, now=synth.NOW)
    trained = train_model(build_training_frame(tables, md, cfg, synth.NOW), cfg)
    return {"tables": tables, "metadata": md, "config": cfg.to_json(), "model": trained}


def _ctx(org: dict[str, Any], root: Path) -> FakeContext:
    scoring.clear_model_cache()
    ctx = FakeContext(
        root, configs=[org["config"]], published={"Synth": 1}, tables=org["tables"], metadata=org["metadata"]
    )
    ctx.model_store.artifacts["Synth@1"] = (org["model"].onnx_bytes, org["model"].meta)
    return ctx


def _drain(ctx: FakeContext) -> None:
    while ctx.messages:
        scoring.handle_message(ctx, json.dumps(ctx.messages.pop(0)))


def test_every_open_recent_opportunity_gets_one_row_with_reasons(org: dict[str, Any], tmp_path: Path) -> None:
    ctx = _ctx(org, tmp_path)
    plan = scoring.plan_run(ctx, batch_size=100)
    _drain(ctx)
    opp = org["tables"]["opportunity"]
    open_ids = set(opp.loc[opp["statecode"] == 0, "opportunityid"].astype(str).str.lower())
    assert plan["eligible"] > 0 and set(ctx.dataverse.rows) <= open_ids
    assert len(ctx.dataverse.rows) == plan["eligible"]
    for row in list(ctx.dataverse.rows.values())[:50]:
        assert 0 <= row["msdyn_score"] <= 100 and row["msdyn_grade"] in (0, 1, 2, 3)
        reasons = json.loads(row["msdyn_scorereasons"])
        assert reasons["model"] == "Synth" and reasons["version"] == 1
        assert len(reasons["positive"]) <= 5 and len(reasons["negative"]) <= 5
        assert len(row["msdyn_scorereasons"]) <= 10_000
        assert all(r["headline"] and r["insight"] for r in reasons["positive"] + reasons["negative"])
    calls = len(ctx.dataverse.calls)
    scoring.plan_run(ctx, batch_size=100)
    _drain(ctx)
    assert len(ctx.dataverse.calls) == calls, "same snapshot, same model: the rerun writes nothing"


def test_bad_values_in_records_never_stop_the_run(org: dict[str, Any], tmp_path: Path) -> None:
    tables = {k: v.copy() for k, v in org["tables"].items()}
    opp = tables["opportunity"]
    open_idx = opp.index[opp["statecode"] == 0][:4]
    opp["estimatedvalue"] = opp["estimatedvalue"].astype(object)
    opp.loc[open_idx[0], "estimatedvalue"] = 1e15  # absurd amount
    opp.loc[open_idx[1], "estimatedvalue"] = "lots"  # wrong type
    opp["budgetstatus"] = opp["budgetstatus"].astype(object)
    opp.loc[open_idx[2], "budgetstatus"] = 42  # unknown option value
    opp.loc[open_idx[3], "need"] = None  # missing
    ctx = _ctx({**org, "tables": tables}, tmp_path)
    plan = scoring.plan_run(ctx, batch_size=100)
    _drain(ctx)
    report = scoring.report(ctx, plan["runId"])
    assert report["batchesDone"] == plan["batches"] and report["written"] + report["skipped"] == plan["eligible"]
    bad_ids = set(opp.loc[open_idx, "opportunityid"].astype(str).str.lower())
    assert bad_ids <= set(ctx.dataverse.rows)


def test_listed_ids_read_with_filters_score_exactly_as_the_full_run(org: dict[str, Any], tmp_path: Path) -> None:
    """The few-ids path reads only those opportunities and the deals of their accounts and owners: the
    features (past win rates of the account and owner included), scores and reasons equal the full run's."""
    full = _ctx(org, tmp_path / "full")
    plan = scoring.plan_run(full, batch_size=100)
    _drain(full)
    ids = sorted(full.dataverse.rows)[::37][:8]
    listed = _ctx(org, tmp_path / "listed")
    small = scoring.plan_run(listed, opportunity_ids=ids)
    assert small["eligible"] == len(ids) and small["asOf"] == plan["asOf"]
    _drain(listed)
    assert set(listed.dataverse.rows) == set(ids)
    for i in ids:
        assert listed.dataverse.rows[i] == full.dataverse.rows[i], i
