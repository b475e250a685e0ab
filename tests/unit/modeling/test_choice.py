"""Model choice: plain candidates beside the product's, and the one-standard-error rule on the validation fold."""

from __future__ import annotations

import numpy as np
import pytest

from modeling import choice
from modeling.config import validate_with_metadata
from modeling.dataset import build_scoring_frame, build_training_frame
from modeling.features import STAGE_COLUMN
from modeling.scoring import Scorer
from modeling.train import train_model
from tests.unit.modeling import synth

MD = synth.metadata()


def _scores(rng: np.random.Generator, y: np.ndarray, signal: float) -> np.ndarray:
    return signal * y + rng.normal(0, 1, len(y))


def test_a_lead_within_the_noise_keeps_the_simpler_candidate() -> None:
    rng = np.random.default_rng(3)
    y = (rng.random(400) < 0.4).astype(int)
    base = _scores(rng, y, 1.0)
    close = base + rng.normal(0, 0.15, len(y))  # nearly the same ranking: a lead far inside the noise
    chosen, trace = choice.choose({"simple": base, "complex": close}, y)
    lead = trace["simple"]["behind_best"]
    assert chosen == "simple" and lead <= trace["simple"]["se"]
    assert trace["complex"]["se"] == 0.0 or trace["complex"]["behind_best"] == 0.0


def test_a_clear_lead_chooses_the_better_candidate() -> None:
    rng = np.random.default_rng(4)
    y = (rng.random(2000) < 0.4).astype(int)
    chosen, trace = choice.choose({"simple": _scores(rng, y, 0.3), "complex": _scores(rng, y, 2.0)}, y)
    assert chosen == "complex"
    assert trace["simple"]["behind_best"] > 3 * trace["simple"]["se"] > 0


def test_paired_se_shrinks_with_more_records() -> None:
    rng = np.random.default_rng(5)
    ses = []
    for n in (200, 3200):
        y = (rng.random(n) < 0.5).astype(int)
        ses.append(choice.paired_se(y, _scores(rng, y, 1.0), _scores(rng, y, 0.8)))
    assert ses[1] < ses[0] / 2


def test_attribute_candidates_drop_derived_features_but_not_the_stage() -> None:
    spec = {
        "features": [
            {"name": "budgetstatus", "input": "budgetstatus"},
            {"name": "d_owner_win_rate", "input": "d_owner_win_rate", "derived": True},
            {"name": STAGE_COLUMN, "input": "stage", "derived": True},
        ]
    }
    plain = choice.candidate_spec(spec, "logistic_regression:attributes")
    assert [f["name"] for f in plain["features"]] == ["budgetstatus", STAGE_COLUMN]
    assert choice.candidate_spec(spec, "logistic_regression") == spec
    only_attributes = {"features": [spec["features"][0]]}
    assert choice.distinct_candidates(only_attributes, choice.CANDIDATES) == [
        "logistic_regression:attributes",
        "hist_gradient_boosting:attributes",
    ]


def test_logistic_regression_gets_the_past_rates_but_not_the_past_counts() -> None:
    spec = {
        "features": [
            {"name": "budgetstatus", "input": "budgetstatus"},
            {"name": "d_owner_win_rate", "input": "d_owner_win_rate", "derived": True},
            {"name": "d_owner_closed", "input": "d_owner_closed", "derived": True},
            {"name": "d_similar_closed", "input": "d_similar_closed", "derived": True},
        ]
    }
    linear = choice.candidate_spec(spec, "logistic_regression")
    assert [f["name"] for f in linear["features"]] == ["budgetstatus", "d_owner_win_rate"]
    assert choice.candidate_spec(spec, "hist_gradient_boosting") == spec  # trees weigh a rate by its count
    assert len(spec["features"]) == 4  # the spec given is not changed
    # an org whose only derived features are counts: the linear candidate with them is the plain one
    counts_only = {"features": [spec["features"][0], spec["features"][2]]}
    assert choice.distinct_candidates(counts_only, choice.CANDIDATES) == [
        "logistic_regression:attributes",
        "hist_gradient_boosting:attributes",
        "hist_gradient_boosting",
    ]


@pytest.fixture(scope="module")
def trained():
    tables = synth.make_tables(n=1200, n_open=150, seed=9)
    cfg = validate_with_metadata({}, MD, now=synth.NOW)
    data = build_training_frame(tables, MD, cfg, synth.NOW)
    return tables, cfg, train_model(data, cfg, candidates=["logistic_regression:attributes", "logistic_regression"])


def test_the_version_records_every_candidate_and_uses_only_the_chosen_features(trained) -> None:
    tables, cfg, model = trained
    meta = model.meta
    assert set(meta["candidates"]) == {"logistic_regression:attributes", "logistic_regression"}
    assert meta["candidate"] in meta["candidates"] and meta["algorithm"] == "logistic_regression"
    assert all({"validation_auc", "behind_best", "se"} <= set(c) for c in meta["candidates"].values())
    derived = [f["name"] for f in meta["spec"]["features"] if f.get("derived")]
    assert (derived == []) == (meta["candidate"] == "logistic_regression:attributes")
    frame = build_scoring_frame(tables, MD, cfg, synth.NOW, meta["stats"]).frame
    out = Scorer(model.onnx_bytes, meta).score(frame)
    assert len(out) == len(frame) and out["score"].between(0, 100).all()


def test_an_attributes_only_version_scores_and_explains(trained) -> None:
    tables, cfg, _ = trained
    data = build_training_frame(tables, MD, cfg, synth.NOW)
    model = train_model(data, cfg, candidates=["logistic_regression:attributes"])
    assert model.meta["candidate"] == "logistic_regression:attributes"
    assert not [f for f in model.meta["spec"]["features"] if f.get("derived")]
    frame = build_scoring_frame(tables, MD, cfg, synth.NOW, model.meta["stats"]).frame
    out = Scorer(model.onnx_bytes, model.meta).score(frame)
    reasons = [r for rs in out["reasons"] for side in ("positive", "negative") for r in rs[side]]
    assert reasons and all(not r["attribute"].startswith("d_") for r in reasons)
