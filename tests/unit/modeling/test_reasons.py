"""Reasons: one sentence per underlying fact, no empty-information reasons without a real impact, and the
fast impact path (features prepared once, only the model's trees rerun) equal to the plain one."""

from __future__ import annotations

import re

import numpy as np
import pytest

from modeling.config import validate_config, validate_with_metadata
from modeling.dataset import build_scoring_frame, build_training_frame
from modeling.scoring import FACT_GROUPS, NO_INFO_MIN_IMPACT, Scorer, against_note
from modeling.train import train_model
from tests.unit.modeling import synth

MD = synth.metadata()


@pytest.fixture(scope="module")
def scored():
    tables = synth.make_tables(n=1500, n_open=400, seed=13)
    cfg = validate_with_metadata({}, MD, now=synth.NOW)
    data = build_training_frame(tables, MD, cfg, synth.NOW)
    model = train_model(data, cfg, candidates=["hist_gradient_boosting"])
    frame = build_scoring_frame(tables, MD, cfg, synth.NOW, model.meta["stats"]).frame
    scorer = Scorer(model.onnx_bytes, model.meta)
    return model, frame, scorer, scorer.score(frame)


def _all(rs):
    return [r for side in ("positive", "negative") for r in rs[side]]


def test_one_sentence_per_fact(scored):
    _, _, _, out = scored
    members = {m: g for g in FACT_GROUPS for m in g}
    for rs in out["reasons"]:
        texts = [r["text"] for r in _all(rs)]
        assert len(texts) == len(set(texts)), texts  # never twice, never on both sides
        facts = [members.get(r["attribute"], (r["attribute"],)) for r in _all(rs)]
        assert len(facts) == len(set(facts)), facts  # a rate and its count make one reason


def test_fact_impact_is_the_joint_change(scored):
    model, frame, scorer, out = scored
    feats = {f["name"]: f for f in model.meta["spec"]["features"]}
    group = [m for m in ("d_owner_win_rate", "d_owner_closed") if m in feats]
    assert group, "the owner's past win rate is a model input on this org"
    p, _ = scorer.probabilities(frame)
    at_base = frame.copy()
    for m in group:
        at_base[m] = feats[m]["baseline"]
    pb, _ = scorer.probabilities(at_base)
    expected = np.round((p - pb) * 100, 2)
    checked = 0
    for i, rs in enumerate(out["reasons"]):
        got = [r["impact"] for r in _all(rs) if r["attribute"] == group[0]]
        if got:
            assert got[0] == pytest.approx(expected[i], abs=0.011)
            checked += 1
    assert checked > 10


def test_past_win_rates_are_measured_against_no_history(scored):
    model, frame, scorer, out = scored
    feats = {f["name"]: f for f in model.meta["spec"]["features"]}
    prior = model.meta["stats"]["prior_win_rate"]
    for rate, count in (("d_owner_win_rate", "d_owner_closed"), ("d_account_win_rate", "d_account_closed")):
        if count in feats:
            assert feats[count]["baseline"] == 0.0
        if rate in feats:
            assert feats[rate]["baseline"] == pytest.approx(prior, abs=1e-6)
    new = frame.iloc[:30].copy()  # accounts nothing is known about yet
    new["d_account_closed"], new["d_account_won"], new["d_account_win_rate"] = 0.0, 0.0, prior
    for rs in scorer.score(new)["reasons"]:
        assert not [r for r in _all(rs) if r["attribute"].startswith("d_account_")], rs
    old = out["reasons"].iloc[:30]
    assert any(r["attribute"].startswith("d_account_") for rs in old for r in _all(rs))


def test_empty_information_needs_a_real_impact(scored):
    _, _, _, out = scored
    seen = 0
    for rs in out["reasons"]:
        for r in _all(rs):
            if r["value"] == "(empty)" or r["text"].startswith("No "):
                assert abs(r["impact"]) >= NO_INFO_MIN_IMPACT * 100, r
                seen += 1
    assert all(len(rs["positive"]) <= 5 and len(rs["negative"]) <= 5 for rs in out["reasons"])


def test_fast_impacts_equal_the_plain_path(scored):
    model, frame, scorer, _ = scored
    assert scorer.fast, "the model's feature part and trees could not be split"
    plain = Scorer(model.onnx_bytes, model.meta, fast=False)
    assert not plain.fast
    a = scorer.score(frame.iloc[:150])
    b = plain.score(frame.iloc[:150])
    assert np.allclose(a["probability"], b["probability"], atol=1e-7)
    for ra, rb in zip(a["reasons"], b["reasons"], strict=True):
        assert [(r["attribute"], r["text"]) for r in _all(ra)] == [(r["attribute"], r["text"]) for r in _all(rb)]
        assert np.allclose([r["impact"] for r in _all(ra)], [r["impact"] for r in _all(rb)], atol=0.011)


def test_fast_path_with_a_linear_model(scored):
    _, frame, _, _ = scored
    tables = synth.make_tables(n=800, n_open=100, seed=2)
    cfg = validate_config(
        {}, existing=[], processes=[], attributes=MD["attributes"], optionsets=MD["optionsets"], now=synth.NOW
    )
    data = build_training_frame(tables, MD, cfg, synth.NOW)
    model = train_model(data, cfg, candidates=["logistic_regression"])
    sf = build_scoring_frame(tables, MD, cfg, synth.NOW, model.meta["stats"]).frame
    fast, plain = Scorer(model.onnx_bytes, model.meta), Scorer(model.onnx_bytes, model.meta, fast=False)
    assert fast.fast
    a, b = fast.score(sf), plain.score(sf)
    for ra, rb in zip(a["reasons"], b["reasons"], strict=True):
        assert np.allclose([r["impact"] for r in _all(ra)], [r["impact"] for r in _all(rb)], atol=0.011)


_RATE = re.compile(r"(?:(\d[\d,]*) of (\d[\d,]*) [^:;]*? were won|(\d+)% of [^;]*? were won) \(all: (\d+)%\)")


def test_a_reason_never_reads_against_its_impact(scored):
    """A sentence whose rate is below the overall rate on the positive side (or above it on the negative
    side) says that, with the deal's other values, it still raises (lowers) the score, with the points."""
    _, _, _, out = scored
    checked = noted = 0
    for rs in out["reasons"]:
        for r in _all(rs):
            m = _RATE.search(r["text"])
            if not m:
                continue
            won, closed, pct, overall = m.groups()
            rate = int(won.replace(",", "")) / int(closed.replace(",", "")) if won else int(pct) / 100
            against = (rate - int(overall) / 100) * r["impact"] < 0 and abs(rate - int(overall) / 100) >= 0.035
            checked += 1
            if against:
                noted += 1
                verb = "raises" if r["impact"] > 0 else "lowers"
                assert f"with this deal's other values it {verb} the score by" in r["text"], r
    assert checked > 100


def test_against_note():
    assert against_note(0.12, 0.29, 4.2) == "; with this deal's other values it raises the score by 4 points"
    assert against_note(0.5, 0.29, -0.6) == "; with this deal's other values it lowers the score by 1 point"
    assert against_note(0.5, 0.29, -0.2) == "; with this deal's other values it lowers the score by less than 1 point"
    assert against_note(0.31, 0.29, -3.0) == ""  # within 3 points of the overall rate: about average
    assert against_note(0.5, 0.29, 3.0) == ""  # same direction
    assert against_note(0.295, 0.29, -3.0) == ""  # no real difference
    assert against_note(None, 0.29, 3.0) == ""
