"""Unit tests of the pure modeling domain on deterministic synthetic lake frames."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from functions.http import status_of
from modeling import train as train_module
from modeling.config import ModelConfig, apply_edit, ensure_deletable, find_overlaps, validate_with_metadata
from modeling.dataset import build_scoring_frame, build_training_frame
from modeling.errors import ConfigError, ConflictError, InsufficientDataError
from modeling.evaluation import evaluate, f1_threshold
from modeling.features import MISSING, OTHER, build_spec, prepare_with_report
from modeling.scoring import Scorer, grade_for, reasons_json, trend
from modeling.train import train_model
from tests.unit.modeling import synth

MD = synth.metadata()


def _validate(payload, existing=()):
    return validate_with_metadata(payload, MD, now=synth.NOW, existing=list(existing))


@pytest.fixture(scope="module")
def tables():
    return synth.make_tables(n=1500, n_open=200)


@pytest.fixture(scope="module")
def trained(tables):
    cfg = _validate({})
    data = build_training_frame(tables, MD, cfg, synth.NOW)
    return cfg, data, train_model(data, cfg)


# ---------------------------------------------------------------- config


def test_defaults():
    cfg = _validate({})
    assert cfg.name == "OpportunityScoring_202506011200"
    assert (cfg.won_values, cfg.lost_values, cfg.training_period, cfg.per_stage) == ((1,), (2,), "2y", False)
    assert cfg.grade_ranges == (75, 50, 25)


@pytest.mark.parametrize(
    "payload,field",
    [
        ({"name": "bad name!"}, "name"),
        ({"trainingPeriod": "5y"}, "trainingPeriod"),
        ({"perStage": True}, "businessProcessFlow"),
        ({"businessProcessFlow": "nope"}, "businessProcessFlow"),
        ({"wonValues": ["Won"], "lostValues": ["Won"]}, "lostValues"),
        ({"wonValues": ["Maybe"]}, "wonValues"),
        ({"filterColumn": "budgetstatus"}, "filterValues"),
        ({"filterColumn": "nope", "filterValues": [1]}, "filterColumn"),
        ({"attributes": ["createdon"]}, "attributes"),
        ({"attributes": ["statecode"]}, "attributes"),
        ({"attributes": ["_ownerid_value"]}, "attributes"),
        ({"gradeRanges": [50, 60, 10]}, "gradeRanges"),
        (
            {
                "gradeRanges": {
                    "A": {"min": 70, "max": 100},
                    "B": {"min": 50, "max": 68},
                    "C": {"min": 20, "max": 49},
                    "D": {"min": 0, "max": 19},
                }
            },
            "gradeRanges",
        ),
        ({"stageAttributes": {"Qualify": ["budgetstatus"]}}, "stageAttributes"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_invalid_fields_name_field_and_rule(payload, field):
    with pytest.raises(ConfigError) as e:
        _validate(payload)
    assert status_of(e.value) == 400 and e.value.code == "InvalidConfiguration"
    assert e.value.field == field and e.value.rule


def test_overlap_limit_and_force():
    a = _validate({"name": "A", "filterColumn": "budgetstatus", "filterValues": ["Can Buy", 3]})
    assert a.filter_values == ("2", "3")
    disjoint = _validate({"name": "B", "filterColumn": "budgetstatus", "filterValues": [0]}, [a])
    assert find_overlaps(disjoint, [a]) == []
    with pytest.raises(ConflictError) as e:
        _validate({"name": "C", "filterColumn": "budgetstatus", "filterValues": [3]}, [a])
    assert status_of(e.value) == 409 and e.value.detail["models"] == ["A"]
    assert _validate({"name": "C", "filterColumn": "budgetstatus", "filterValues": [3], "force": True}, [a])
    with pytest.raises(ConflictError):
        _validate({"name": "D"}, [a])  # no filter overlaps everything on the same BPF
    ten = [ModelConfig(name=f"M{i}", filter_column="need", filter_values=(str(i),)) for i in range(10)]
    with pytest.raises(ConflictError) as e:
        _validate({"name": "E", "force": True}, ten)
    assert e.value.code == "ModelLimitReached"
    with pytest.raises(ConflictError):
        _validate({"name": "a", "force": True}, [a])  # names are unique case-insensitively


def test_edit_rules():
    cfg = _validate({"name": "X"})
    with pytest.raises(ConfigError) as e:
        apply_edit(cfg, {"attributes": ["budgetstatus"]}, attributes=MD["attributes"])
    assert e.value.field == "attributes" and "autoRetrain" in e.value.rule
    edited = apply_edit(cfg, {"attributes": ["budgetstatus"], "autoRetrain": False}, attributes=MD["attributes"])
    assert edited.attributes == ("budgetstatus",) and not edited.auto_retrain
    with pytest.raises(ConfigError) as e:
        apply_edit(cfg, {"perStage": True})
    assert e.value.field == "perStage"
    g = apply_edit(cfg, {"gradeRanges": {"A": 51, "B": 30, "C": 10}})
    assert g.to_json()["gradeRanges"]["B"] == {"min": 30, "max": 50}
    with pytest.raises(ConflictError):
        ensure_deletable(cfg)
    ensure_deletable(edited)
    assert ModelConfig.from_json(json.loads(json.dumps(edited.to_json()))) == edited


# ---------------------------------------------------------------- dataset


def test_insufficient_data_gives_counts(tables):
    small = dict(tables, opportunity=tables["opportunity"].iloc[:45])
    with pytest.raises(InsufficientDataError) as e:
        build_training_frame(small, MD, _validate({}), synth.NOW)
    assert status_of(e.value) == 422 and e.value.needed == {"won": 40, "lost": 40}
    assert e.value.found["won"] + e.value.found["lost"] <= 45
    per_stage = _validate({"perStage": True, "businessProcessFlow": synth.BPF_ID})
    with pytest.raises(InsufficientDataError) as e:
        build_training_frame(small, MD, per_stage, synth.NOW)
    assert e.value.needed == {"closedInLastStage": 40}


def test_training_frame_rules(tables):
    cfg = _validate({"filterColumn": "new_channel", "filterValues": ["Direct", "Partner"], "force": True})
    data = build_training_frame(tables, MD, cfg, synth.NOW)
    opp = tables["opportunity"].set_index("opportunityid")
    ids = data.frame["opportunityid"]
    assert set(opp.loc[ids, "statecode"]) <= {1, 2}
    assert set(opp.loc[ids, "new_channel"]) <= {100000000, 100000001}
    cols = set(data.frame.columns)
    assert not cols & {
        "createdon",
        "modifiedon",
        "actualclosedate",
        "estimatedclosedate",
        "statecode",
        "statuscode",
        "versionnumber",
        "_ownerid_value",
        "stepname",
    }
    assert {"account.industrycode", "new_channel", "new_contractnumber", "d_account_win_rate"} <= cols


def test_past_win_rate_never_uses_own_outcome(tables):
    """A deal that is the only closed deal of its account gets the prior known at its time (no history of
    its own), whatever its outcome."""
    rates = []
    for state, status in ((1, 3), (2, 5)):
        t = {k: v.copy() for k, v in tables.items()}
        opp = t["opportunity"]
        solo = opp.index[opp["statecode"] != 0][0]
        opp.loc[solo, ["_parentaccountid_value", "statecode", "statuscode"]] = ["acc-solo", state, status]
        data = build_training_frame(t, MD, _validate({}), synth.NOW)
        row = data.frame[data.frame["opportunityid"] == opp.loc[solo, "opportunityid"]]
        assert row["d_account_closed"].iloc[0] == 0
        rates.append(float(row["d_account_win_rate"].iloc[0]))
    assert rates[0] == pytest.approx(rates[1]) and 0.05 < rates[0] < 0.95


def test_per_stage_rows_and_scoring_eligibility(tables):
    cfg = _validate({"perStage": True, "businessProcessFlow": "opportunitysalesprocess"})
    data = build_training_frame(tables, MD, cfg, synth.NOW)
    assert set(data.frame["__stage__"]) <= set(synth.STAGES)
    assert data.counts["closed_in_last_stage"] >= 40
    assert len(data.frame) > data.counts["closed"]  # one row per closed deal and stage reached
    t = {k: v.copy() for k, v in tables.items()}
    opp = t["opportunity"]
    old = opp.index[opp["statecode"] == 0][0]
    opp.loc[old, "createdon"] = pd.Timestamp(synth.NOW) - pd.Timedelta(days=800)
    sd = build_scoring_frame(
        t,
        MD,
        cfg,
        synth.NOW,
        data.stats,
        opportunity_ids=[opp.loc[old, "opportunityid"], "opp-00000", "missing"],
    )
    assert len(sd.frame) == 0
    assert [s["reason"].split(" ")[0] for s in sd.skipped] == ["not", "not", "not"]


# ---------------------------------------------------------------- features


def test_prepare_bad_values_never_crash():
    feats = [
        {
            "name": "budgetstatus",
            "kind": "category",
            "label": "Budget",
            "options": MD["optionsets"]["opportunity"]["budgetstatus"],
        },
        {"name": "estimatedvalue", "kind": "number", "label": "Value"},
        {"name": "city", "kind": "category", "label": "City", "options": None},
    ]
    train = pd.DataFrame(
        {
            "budgetstatus": [0, 1, 2, 3] * 5,
            "estimatedvalue": np.linspace(10, 1000, 20),
            "city": ["Oslo"] * 10 + ["Rome"] * 10,
        }
    )
    spec = build_spec(train, feats)
    bad = pd.DataFrame(
        {
            "budgetstatus": [99, "x", None, 2],
            "estimatedvalue": ["abc", 1e15, -5, 500.0],
            "city": [{"a": 1}, None, "Paris", "Oslo"],
        }
    )
    feed, report = prepare_with_report(bad, spec)
    assert list(feed["budgetstatus"].ravel()) == [MISSING, MISSING, MISSING, "Can Buy"]
    v = feed["estimatedvalue"].ravel()
    assert np.isnan(v[:3]).all() and v[3] == pytest.approx(500.0) and v.dtype == np.float32
    assert list(feed["city"].ravel()) == [MISSING, MISSING, OTHER, "Oslo"]
    assert report == {"budgetstatus": 2, "estimatedvalue": 3, "city": 1}
    feed2, report2 = prepare_with_report(pd.DataFrame({"x": [1]}), spec)  # every column absent
    assert report2 == {"budgetstatus": 1, "estimatedvalue": 1, "city": 1}
    assert feed2["budgetstatus"][0, 0] == MISSING


# ---------------------------------------------------------------- training, leakage, export


def test_leakage_guard_catches_trap_and_actual_value(trained):
    _, _, model = trained
    excluded = model.meta["excluded_attributes"]
    assert "new_contractnumber" in excluded and "actualvalue" in excluded
    assert model.meta["leakage"]["new_contractnumber"]["reasons"]
    assert not model.meta["leakage"]["budgetstatus"]["excluded"]
    assert all(f["name"] not in excluded for f in model.meta["spec"]["features"])


def test_leakage_seen_through_history_needs_no_open_records():
    """Issue 16: an attribute that gets its final value only in the last days before close is excluded from
    the history alone (no open records to compare with); one that was known early, or changed late on only a
    few deals, is kept."""
    tables = synth.make_tables(n=1200, n_open=0, seed=5)
    opp = tables["opportunity"]
    closed = opp[opp["statecode"] != 0]
    early = closed.assign(modifiedon=closed["createdon"] + pd.Timedelta(days=1), need=None)
    few = np.arange(len(early)) % 10 == 0  # a tenth of the deals had another close probability early on
    early["closeprobability"] = np.where(few, 99, early["closeprobability"])
    history = pd.concat([early, opp], ignore_index=True)
    tables = {**tables, "opportunity_history": history.assign(_synced_at=history["modifiedon"], _deleted=False)}
    cfg = _validate({})
    data = build_training_frame(tables, MD, cfg, synth.NOW)
    assert len(data.open_frame) == 0
    need = data.late["need"]
    assert need["deals"] > 500 and need["late"] >= 0.8 * need["deals"]  # closed within 7 days excluded
    model = train_model(data, cfg)
    leak = model.meta["leakage"]
    assert leak["need"]["excluded"] and "last 7 days before close" in leak["need"]["reasons"][-1]
    for kept in ("closeprobability", "budgetstatus", "new_competitorcount"):
        assert not leak[kept]["excluded"], (kept, leak[kept]["reasons"])


def test_training_metrics_export_and_insights(trained):
    cfg, data, model = trained
    m = model.meta
    json.dumps(m)  # JSON-serialisable
    assert model.onnx_bytes[:2] != b"\x80\x04"  # not a pickle
    assert m["onnx_parity_max_diff"] <= 1e-4
    met = m["metrics"]
    assert met["auc"] > 0.75 and met["readiness"] == "Ready"
    assert {
        "accuracy",
        "precision",
        "recall",
        "f1",
        "conversion_rate",
        "confusion_matrix",
        "brier",
        "ece",
        "calibration",
        "roc",
        "threshold",
    } <= set(met)
    roc = met["roc"]
    assert (roc[0]["tpr"], roc[0]["fpr"]) == (1.0, 1.0) and roc[-1]["threshold"] == 100
    assert all(a["tpr"] >= b["tpr"] and a["fpr"] >= b["fpr"] for a, b in zip(roc, roc[1:], strict=False))
    cm = met["confusion_matrix"]
    assert sum(cm.values()) == met["test_rows"] == m["counts"]["test_rows"]
    assert m["counts"]["test_rows"] == int(np.ceil(len(data.frame) * 0.2))
    top = m["insights"]["top_fields"]
    assert len(top) == 5 and "budgetstatus" in top
    rates = m["value_rates"]["budgetstatus"]
    assert rates["values"]["Will Buy"]["rate"] > rates["global_rate"] > rates["values"]["No Committed Budget"]["rate"]
    assert "were won; overall " in rates["values"]["Will Buy"]["text"]


def test_threshold_is_chosen_before_the_test_set_is_seen(trained):
    _, _, model = trained
    met = model.meta["metrics"]
    assert met["threshold_chosen_on"] == "validation"
    cm = met["confusion_matrix"]
    precision = cm["tp"] / (cm["tp"] + cm["fp"])
    assert met["precision"] == round(precision, 4)


def test_evaluate_uses_the_given_threshold_not_the_best_one_on_these_records():
    y = np.array([0, 0, 0, 1, 1, 1, 0, 1])
    p = np.array([0.1, 0.2, 0.3, 0.35, 0.6, 0.7, 0.8, 0.9])
    assert f1_threshold(p, y) == 0.3  # everything above 0.3 predicted won: tp 4, fp 1
    best = evaluate(p, y)
    given = evaluate(p, y, threshold=0.65)  # won above 0.65: 0.7 and 0.9 right, 0.8 wrong
    assert best["threshold"] == 30 and best["threshold_chosen_on"] == "these records"
    assert given["threshold"] == 65 and given["threshold_chosen_on"] == "validation"
    assert given["confusion_matrix"] == {"tp": 2, "fp": 1, "tn": 3, "fn": 2}
    assert given["f1"] < best["f1"]


def test_training_threads_are_capped(tables, monkeypatch):
    from threadpoolctl import threadpool_info

    seen = {}

    def fake_train(*args, **kwargs):
        seen["pools"] = threadpool_info()

    monkeypatch.setattr(train_module, "_train_model", fake_train)
    train_model(None, None, threads=1)
    openmp = [p for p in seen["pools"] if p["user_api"] == "openmp"]
    assert openmp and all(p["num_threads"] == 1 for p in openmp)


def test_readiness_cutoffs_are_configurable(tables):
    cfg = _validate({})
    data = build_training_frame(tables, MD, cfg, synth.NOW)
    m = train_model(data, cfg, readiness=(0.99, 0.98), candidates=["logistic_regression"]).meta
    assert m["readiness"] == "Not ready" and m["algorithm"] == "logistic_regression"


def test_scorer_scores_grades_and_reasons(tables, trained):
    cfg, data, model = trained
    sd = build_scoring_frame(tables, MD, cfg, synth.NOW, model.meta["stats"])
    assert len(sd.frame) == 200
    out = Scorer(model.onnx_bytes, model.meta).score(sd.frame)
    assert out["score"].between(0, 100).all() and out["score"].nunique() > 10
    assert (out["grade"] == [grade_for(s, cfg.grade_ranges) for s in out["score"]]).all()
    assert sum(bool(r["positive"] or r["negative"]) for r in out["reasons"]) >= 0.8 * len(out)
    r = next(r for r in out["reasons"] if r["positive"] and r["negative"])
    assert len(r["positive"]) <= 5 and len(r["negative"]) <= 5
    assert all(x["points"] >= 1 for x in r["positive"]) and all(x["points"] <= -1 for x in r["negative"])
    doc = json.loads(reasons_json(cfg.name, 3, r, history=[{"date": "2026-11-30", "score": 40, "grade": "C"}]))
    assert doc["format"] == 2 and doc["version"] == 3 and doc["history"][0]["score"] == 40
    assert doc["score"] == r["score"] and isinstance(doc["baseline"], float)
    assert set(doc["positive"][0]) == {"attribute", "label", "value", "points", "logOdds", "headline", "insight"}
    # bad data in a record is scored with the value treated as missing
    broken = sd.frame.copy()
    broken.loc[0, "budgetstatus"] = 12345
    broken.loc[1, "estimatedvalue"] = 1e15
    broken = broken.drop(columns=["need"])
    res = Scorer(model.onnx_bytes, model.meta).score(broken, with_reasons=False)
    assert len(res) == len(broken)
    assert res.attrs["bad_values"]["budgetstatus"] == 1 and res.attrs["bad_values"]["need"] == len(broken)


def test_per_stage_training_influence_per_stage(tables):
    cfg = _validate(
        {
            "perStage": True,
            "businessProcessFlow": synth.BPF_ID,
            "autoRetrain": False,
            "stageAttributes": {"Qualify": ["budgetstatus", "need"]},
        }
    )
    data = build_training_frame(tables, MD, cfg, synth.NOW)
    m = train_model(data, cfg).meta
    per_stage = m["insights"]["per_stage"]
    assert set(per_stage) == set(synth.STAGES)
    levels = {r["level"] for rows in per_stage.values() for r in rows}
    assert levels <= {"very low", "low", "medium", "high", "very high"} and "very high" in levels
    qualify = {r["attribute"]: r["influence"] for r in per_stage["Qualify"]}
    assert qualify["new_competitorcount"] == 0.0  # not applicable to Qualify: never influences it


# ---------------------------------------------------------------- scoring math


def test_trend_and_grades():
    assert trend(None, 50) == 3
    assert trend(50, 53) == 1 and trend(50, 47) == 1
    assert trend(50, 54) == 0 and trend(50, 46) == 2
    assert [grade_for(s, (75, 50, 25)) for s in (100, 75, 74, 50, 49, 25, 24, 0)] == [0, 0, 1, 1, 2, 2, 3, 3]


def test_reasons_json_is_bounded():
    long = {"attribute": "x", "label": "L" * 5000, "value": "v" * 5000, "points": 1.0, "headline": "h" * 5000}
    history = [{"date": f"2026-{m:02d}-01", "score": m, "grade": "D"} for m in range(1, 13)] * 50
    s = reasons_json("M", 1, {"positive": [long] * 5, "negative": [long] * 5}, history=history)
    assert len(s) <= 10_000
    doc = json.loads(s)
    assert doc["model"] == "M" and len(doc["positive"]) + len(doc["negative"]) >= 6 and len(doc["history"]) == 12
    assert all(len(r["label"]) <= 300 for r in doc["positive"])


def test_reasons_json_drops_the_weakest_reason_first():
    def reason(points):
        return {"attribute": "a", "label": "L" * 290, "value": "v" * 290, "points": points,
                "headline": "h" * 280, "insight": "i" * 290}  # fmt: skip

    history = [{"date": f"2026-{m:02d}-01", "score": m, "grade": "D"} for m in range(1, 13)]
    positive, negative = [reason(p) for p in (9.0, 7.0, 5.0, 3.0, 2.5)], [reason(-p) for p in (8.0, 6.0, 4.0, 2.0, 1.5)]
    text = reasons_json("M", 1, {"positive": positive, "negative": negative}, history=history)
    doc = json.loads(text)
    kept = [r["points"] for r in doc["positive"] + doc["negative"]]
    assert len(text) <= 10_000 and 5 <= len(kept) < 10 and len(doc["history"]) == 12
    dropped = sorted({9.0, 7.0, 5.0, 3.0, 2.5, -8.0, -6.0, -4.0, -2.0, -1.5} - set(kept), key=abs)
    assert max(map(abs, dropped)) <= min(map(abs, kept))  # the weakest went first


def test_with_history_equals_the_full_serialiser():
    from modeling.scoring import with_history

    r = {
        "score": 40,
        "baseline": 30.5,
        "positive": [{"attribute": "a", "points": 2.0, "headline": "A is b"}],
        "negative": [],
    }
    history = [{"date": "2026-11-30", "score": 38, "grade": "C"}, {"date": "2026-12-01", "score": 40, "grade": "C"}]
    assert with_history(reasons_json("M", 2, r), history) == reasons_json("M", 2, r, history=history)
    assert with_history(reasons_json("M", 2, r, history=history), history) is None


def test_training_keeps_the_drift_profile_and_the_test_records(trained):
    from sklearn.metrics import roc_auc_score

    from modeling import drift

    _, data, model = trained
    meta = model.meta
    profile, test = meta["drift"], meta["test"]
    assert set(profile["attributes"]) == {f["name"] for f in meta["spec"]["features"]}
    assert profile["rows"] == meta["counts"]["training_rows"] and profile["openRows"] == len(data.open_frame)
    for found in profile["attributes"].values():
        assert sum(found.values()) == pytest.approx(1.0, abs=1e-2)
    # the kept test records are the calibrated test scores: their AUC is the reported one
    assert len(test["p"]) == len(test["won"]) == len(test["stages"]) == test["rows"]
    assert roc_auc_score(test["won"], test["p"]) == pytest.approx(meta["metrics"]["auc"], abs=2e-3)
    assert profile["scores"] == drift.shares(drift.score_keys(np.asarray(test["p"])))
