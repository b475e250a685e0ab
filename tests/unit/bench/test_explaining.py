"""The benchmark's explanation figures: additivity error and deletion gaps, named per side and model."""

from __future__ import annotations

from bench.explaining import explanation_figures
from modeling.config import validate_with_metadata
from modeling.dataset import build_scoring_frame, build_training_frame
from modeling.scoring import Scorer
from modeling.train import train_model
from tests.unit.modeling import synth


def test_explanation_figures():
    md = synth.metadata()
    tables = synth.make_tables(n=900, n_open=150, seed=5)
    cfg = validate_with_metadata({}, md, now=synth.NOW)
    model = train_model(build_training_frame(tables, md, cfg, synth.NOW), cfg, candidates=["logistic_regression"])
    frame = build_scoring_frame(tables, md, cfg, synth.NOW, model.meta["stats"]).frame
    figures = {f["metric"]: f for f in explanation_figures("lr", Scorer(model.onnx_bytes, model.meta), frame)}
    assert figures["additivity_error_points_lr"]["value"] < 0.1
    gaps = [k for k in figures if k.startswith("deletion_gap_points_")]
    assert gaps and all(figures[k]["value"] >= 0 and "median over" in figures[k]["note"] for k in gaps)
