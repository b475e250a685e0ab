"""Reasons a seller can trust: contributions that add up to the score (exactly, against brute-force
Shapley values), reasons on the side of their sign and worth at least a point, deletion of the stated
facts moving the score by what they state, and sentences in a seller's words."""

from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pytest

from modeling import phrases
from modeling.config import validate_with_metadata
from modeling.dataset import build_scoring_frame, build_training_frame
from modeling.features import prepare_with_report
from modeling.reasons import MIN_POINTS
from modeling.scoring import FACT_GROUPS, Scorer, calibrate, raw_probabilities
from modeling.train import train_model
from tests.unit.modeling import synth

MD = synth.metadata()
KINDS = ("logistic_regression", "hist_gradient_boosting")


@pytest.fixture(scope="module", params=KINDS)
def scored(request):
    tables = synth.make_tables(n=1500, n_open=400, seed=13)
    cfg = validate_with_metadata({}, MD, now=synth.NOW)
    data = build_training_frame(tables, MD, cfg, synth.NOW)
    model = train_model(data, cfg, candidates=[request.param])
    frame = build_scoring_frame(tables, MD, cfg, synth.NOW, model.meta["stats"]).frame
    scorer = Scorer(model.onnx_bytes, model.meta)
    return model, frame, scorer, scorer.score(frame)


def _all(rs):
    return [r for side in ("positive", "negative") for r in rs[side]]


def test_contributions_plus_baseline_are_the_score(scored):
    _, _, scorer, out = scored
    assert scorer.explains
    for score, p, rs, facts in zip(out["score"], out["probability"], out["reasons"], out["facts"], strict=True):
        total = rs["baseline"] + float(facts.points.sum())
        assert abs(total - 100 * p) < 0.1 and abs(total - score) <= 1.0, (score, total)


def test_contributions_are_exact_shapley_values(scored):
    """Brute force over every coalition of the facts that differ from the baseline (at most 9 kept per
    record, the others set to the baseline), in the model's margin."""
    _, frame, scorer, _ = scored
    feed, _ = prepare_with_report(frame.iloc[:6], scorer.spec)
    split = scorer.split
    x = split.features.run([split.x_name], dict(feed))[0]
    groups = scorer.column_group
    n_facts = len(scorer.groups)
    for i in range(len(x)):
        differ = [g for g in range(n_facts) if np.any(x[i, groups == g] != split.base[groups == g])]
        for g in differ[9:]:
            x[i, groups == g] = split.base[groups == g]
    from modeling.contributions import contributions

    phi, _, _ = contributions(split.part, x, split.base, groups, n_facts)

    def margin(z):
        p = split.model.run(["probabilities"], {split.x_name: z.astype(np.float32)})[0][:, 1].astype(float)
        return np.log(p / (1 - p))

    for i in range(len(x)):
        differ = [g for g in range(n_facts) if np.any(x[i, groups == g] != split.base[groups == g])][:9]
        k = len(differ)
        coalitions = list(itertools.product((0, 1), repeat=k))
        z = np.repeat(split.base[None, :], len(coalitions), axis=0)
        for c, members in enumerate(coalitions):
            for g, on in zip(differ, members, strict=True):
                if on:
                    z[c, groups == g] = x[i, groups == g]
        value = dict(zip(coalitions, margin(z), strict=True))
        for pos, g in enumerate(differ):
            shapley = 0.0
            for c in coalitions:
                if c[pos] == 0:
                    size = sum(c)
                    weight = math.factorial(size) * math.factorial(k - size - 1) / math.factorial(k)
                    shapley += weight * (value[c[:pos] + (1,) + c[pos + 1 :]] - value[c])
            assert phi[i, g] == pytest.approx(shapley, abs=2e-4)


def test_shown_reasons_follow_their_sign_and_size(scored):
    _, _, _, out = scored
    members = {m: g for g in FACT_GROUPS for m in g}
    shown = 0
    for rs in out["reasons"]:
        assert len(rs["positive"]) <= 5 and len(rs["negative"]) <= 5
        assert all(r["points"] >= MIN_POINTS for r in rs["positive"])
        assert all(r["points"] <= -MIN_POINTS for r in rs["negative"])
        for side in ("positive", "negative"):
            pts = [abs(r["points"]) for r in rs[side]]
            assert pts == sorted(pts, reverse=True)  # strongest first
        facts = [members.get(r["attribute"], (r["attribute"],)) for r in _all(rs)]
        assert len(facts) == len(set(facts)), facts  # a rate and its count make one reason
        shown += len(_all(rs))
    assert shown > 2 * len(out)


def test_reasons_state_the_facts_contribution(scored):
    _, _, _, out = scored
    for rs, facts in zip(out["reasons"], out["facts"], strict=True):
        points = dict(zip((name for name, _, _ in facts.batch.items), facts.points.tolist(), strict=True))
        for r in _all(rs):
            assert r["points"] == pytest.approx(points[r["attribute"]], abs=0.051)


def test_deleting_facts_moves_the_log_odds_by_what_they_state(scored):
    """Linear model: setting a record's top three facts of a side to their baselines moves its calibrated
    log-odds by exactly their stated logOdds (contributions are additive there). The same deletion in
    points is measured, not asserted, by bench/bench_scoring_math.py (the logistic curve saturates)."""
    model, frame, scorer, out = scored
    if model.meta["algorithm"] != "logistic_regression" or model.meta["calibration"]["method"] not in ("none", "platt"):
        pytest.skip("exact only for a linear model with a logistic calibration")
    feed, _ = prepare_with_report(frame, scorer.spec)
    p = calibrate(raw_probabilities(scorer.sess, feed), scorer.calibration)
    for side in ("positive", "negative"):
        changed, rows, stated = {k: v.copy() for k, v in feed.items()}, [], []
        for i, rs in enumerate(out["reasons"]):
            if len(rs[side]) >= 3:
                rows.append(i)
                stated.append(sum(r["logOdds"] for r in rs[side][:3]))
                for r in rs[side][:3]:
                    g = next(g for g in scorer.groups if scorer.spec["features"][g[0]]["name"] == r["attribute"])
                    for j in g:
                        f = scorer.spec["features"][j]
                        changed[f["input"]][i, 0] = f["baseline"]
        q = calibrate(raw_probabilities(scorer.sess, changed), scorer.calibration)
        moved = np.log(p[rows] / (1 - p[rows])) - np.log(q[rows] / (1 - q[rows]))
        assert len(rows) >= 30
        assert np.abs(moved - np.array(stated)).max() < 0.01


_NUMBER = re.compile(r"(?<![\w.])-?\d[\d,]*(?:\.\d+)?")


def _significant_digits(token: str) -> int:
    digits = token.replace(",", "").replace("-", "").replace(".", "").lstrip("0")
    return len(digits.rstrip("0")) if "." not in token else len(digits)


def test_sentences_speak_like_people(scored):
    _, _, _, out = scored
    for rs in out["reasons"]:
        for r in _all(rs):
            for text in (r["headline"], r["insight"], r["value"]):
                for token in _NUMBER.findall(text):
                    assert _significant_digits(token) <= 3, (token, text)
                assert not re.search(r"\d\.\d+ days?\b", text), text  # whole days only


def test_a_headline_never_contradicts_its_sign_or_insight(scored):
    _, _, _, out = scored
    combined = 0
    for rs in out["reasons"]:
        for r in rs["positive"]:
            assert "less often" not in r["headline"] and "lowers" not in r["insight"], r
        for r in rs["negative"]:
            assert "more often" not in r["headline"] and "raises" not in r["insight"], r
        for r in _all(rs):
            m = re.search(r"(\d+)% of [^;]*? were won; overall (\d+)%", r["insight"])
            if not m:
                continue
            rate, overall = int(m.group(1)) / 100, int(m.group(2)) / 100
            if phrases.direction(rate, overall) * r["points"] <= 0 and abs(rate - overall) >= 0.035:
                verb = "raises" if r["points"] > 0 else "lowers"
                assert f"together with this deal's other values it {verb} the score by" in r["insight"], r
                combined += 1
    assert combined >= 0


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
    for facts in scorer.score(new)["facts"]:
        assert facts.as_dict().get("d_account_win_rate", [0.0])[0] == 0.0  # kept at 0 points: no history


def test_insights_name_what_impacts_scores(scored):
    model, _, _, _ = scored
    top = model.meta["insights"]["top_attributes"]
    assert top and [t["meanPoints"] for t in top] == sorted((t["meanPoints"] for t in top), reverse=True)
    assert all(t["sentence"].startswith(t["label"] + " moves a score by") for t in top)


def test_spoken_numbers():
    assert phrases.spoken(1_234_567, "money") == "$1,230,000"
    assert phrases.spoken(45_678.9, "money", "€") == "€45,700"
    assert phrases.spoken(5.87, "days") == "6 days" and phrases.spoken(1.2, "days") == "1 day"
    assert phrases.spoken(1.8333, "ratio") == "1.8x" and phrases.spoken(0.4321, "rate") == "43%"
    assert phrases.significant(93.58) == "93.6" and phrases.significant(0.012345) == "0.0123"
    assert phrases.nice_edges([5.87, 62.77, 93.58], "days") == [6.0, 60.0, 90.0]
    assert phrases.nice_edges([12.0, 15.0, 18.0], None) == [12.0, 15.0, 18.0]
    labels = ["under $10,000", "$10,000 to $50,000", "$50,000 or more"]
    assert phrases.bin_labels([10_000.0, 50_000.0], "money") == labels


def test_combination_clause():
    assert phrases.combination(4.2) == "; together with this deal's other values it raises the score by 4 points"
    assert phrases.combination(-1.2) == "; together with this deal's other values it lowers the score by 1 point"


def test_empty_numbers_and_odd_values_are_explained_without_error(scored):
    _, frame, scorer, _ = scored
    odd = frame.iloc[:50].copy()
    for name in ("estimatedvalue", "d_close_slip_days", "d_days_in_stage", "d_stage_time_vs_won", "d_owner_closed"):
        if name in odd.columns:
            odd[name] = np.nan
    out = scorer.score(odd)
    assert len(out) == 50
    for rs in out["reasons"]:
        for r in _all(rs):
            assert r["headline"] and r["insight"] and "nan" not in (r["headline"] + r["insight"]).lower()


def test_what_moved_names_old_and_new_values():
    from modeling.changes import what_moved

    old = {
        "score": 40,
        "model": "M@1",
        "facts": '{"budget":[-3.0,"Need Budget","Budget"],"d_days_open":[1.0,"9 days","Days open"]}',
    }
    new = {
        "score": 52,
        "model": "M@1",
        "facts": '{"budget":[5.2,"Can Buy","Budget"],"d_days_open":[0.5,"19 days","Days open"]}',
    }
    change = what_moved(old, new)
    assert change["from"] == 40 and change["to"] == 52 and "modelChanged" not in change
    assert change["facts"] == [
        {"attribute": "budget", "label": "Budget", "from": "Need Budget", "to": "Can Buy", "points": 8.2,
         "text": "Budget changed from Need Budget to Can Buy: +8 points"}
    ]  # fmt: skip
    assert what_moved({"facts": "not json", "model": "M@1"}, {"facts": None, "model": "M@2"})["modelChanged"]


def test_what_moved_names_the_fact_whose_value_changed_first_however_small_its_share():
    """A calibration step can turn a small move of one fact into a larger move of the score, which the points
    share among every fact: the fact that changed is still named, ahead of those that only count differently."""
    from modeling.changes import what_moved

    old = {
        "score": 45,
        "model": "M@1",
        "facts": '{"prob":[-0.5,"49","Probability"],"channel":[-14.9,"Online","Channel"],"need":[7.9,"Must","Need"]}',
    }
    new = {
        "score": 40,
        "model": "M@1",
        "facts": '{"prob":[-1.0,"58","Probability"],"channel":[-17.5,"Online","Channel"],"need":[9.3,"Must","Need"]}',
    }
    facts = what_moved(old, new)["facts"]
    assert [f["attribute"] for f in facts] == ["prob", "channel", "need"]
    assert facts[0]["text"] == "Probability changed from 49 to 58: -0.5 points"
    assert facts[1]["text"] == "Channel (Online) now counts -18 points (was -15 points)"


@pytest.mark.parametrize("kind", KINDS)
def test_per_stage_models_give_facts_a_stage_does_not_apply_no_contribution(kind):
    tables = synth.make_tables(n=1200, n_open=300, seed=21)
    cfg = validate_with_metadata(
        {
            "perStage": True,
            "businessProcessFlow": synth.BPF_ID,
            "stageAttributes": {"Qualify": ["budgetstatus", "need"]},
        },
        MD,
        now=synth.NOW,
    )
    data = build_training_frame(tables, MD, cfg, synth.NOW)
    model = train_model(data, cfg, candidates=[kind])
    frame = build_scoring_frame(tables, MD, cfg, synth.NOW, model.meta["stats"]).frame
    scorer = Scorer(model.onnx_bytes, model.meta)
    out = scorer.score(frame)
    names = [name for name, _, _ in scorer.items]
    qualify = (frame["__stage__"] == "Qualify").to_numpy()
    assert qualify.any() and (~qualify).any()
    competitors = names.index("new_competitorcount")
    for i, (rs, facts) in enumerate(zip(out["reasons"], out["facts"], strict=True)):
        assert abs(rs["baseline"] + float(facts.points.sum()) - 100 * out["probability"].iloc[i]) < 0.1
        if qualify[i]:  # Qualify applies budget and need only
            assert facts.points[competitors] == 0.0


def test_a_change_away_from_the_baseline_value_names_the_old_value(scored):
    """Facts at their baseline (0 points) are kept in the history, so moving off the baseline value says what the
    value was (it used to read "Budget (Can Buy) now counts +8 points (was 0 points)")."""
    from modeling.changes import what_moved

    model, frame, scorer, _ = scored
    budget = next(f for f in model.meta["spec"]["features"] if f["name"] == "budgetstatus")
    code = {label: int(c) for c, label in budget["options"].items()}  # the feed holds option labels
    at_base = frame.iloc[:1].copy()
    at_base["budgetstatus"] = code[budget["baseline"]]
    moved = at_base.copy()
    moved["budgetstatus"] = next(v for label, v in code.items() if label != budget["baseline"])
    facts_old = scorer.score(at_base)["facts"][0]
    facts_new = scorer.score(moved)["facts"][0]
    assert facts_old.as_dict()["budgetstatus"][0] == 0.0
    change = what_moved({"facts": facts_old.to_json(), "model": "M@1"}, {"facts": facts_new.to_json(), "model": "M@1"})
    fact = next(f for f in change["facts"] if f["attribute"] == "budgetstatus")
    assert fact["from"] and fact["to"] and fact["from"] != fact["to"]
    assert fact["text"].startswith(f"Budget changed from {fact['from']} to {fact['to']}")
