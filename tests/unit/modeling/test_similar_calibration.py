"""Similar past deals (leak-free, stored counts, reasons), calibration choice and the exposed test set."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from modeling import similar
from modeling.calibration import choose_calibration
from modeling.config import validate_with_metadata
from modeling.dataset import build_scoring_frame, build_training_frame
from modeling.dataset.split import TEST_SHARE
from modeling.phrases import count_texts
from modeling.scoring import Scorer, calibrate
from modeling.train import train_model
from tests.unit.modeling import synth

MD = synth.metadata()


def _cfg():
    return validate_with_metadata({}, MD, now=synth.NOW)


@pytest.fixture(scope="module")
def tables():
    return synth.make_tables(n=1500, n_open=200, seed=11)


@pytest.fixture(scope="module")
def trained(tables):
    cfg = _cfg()
    data = build_training_frame(tables, MD, cfg, synth.NOW)
    return cfg, data, train_model(data, cfg)


def _ts(*days):
    return np.array([np.datetime64("2025-01-01T00:00", "ns") + np.timedelta64(d, "D") for d in days])


def test_past_counts_only_strictly_earlier_same_key():
    ev_key = np.array(["a", "a", "a", "b"], dtype=object)
    ev_time = _ts(1, 2, 5, 1)
    ev_y = np.array([1, 0, 1, 1])
    q_key = np.array(["a", "a", "a", "b", "c"], dtype=object)
    q_time = _ts(0, 2, 6, 3, 9)  # day 2 equals an event's close time: that event must not count
    closed, won = similar.past_counts(ev_key, ev_time, ev_y, q_key, q_time)
    assert closed.tolist() == [0, 1, 3, 1, 0]
    assert won.tolist() == [0, 1, 2, 1, 0]


def test_shrink_is_hierarchical():
    coarse = (np.array([10.0]), np.array([8.0]))
    fine = (np.array([0.0]), np.array([0.0]))
    rate = similar.shrink([coarse, fine], prior=0.5, k=5.0)
    assert rate[0] == pytest.approx((8 + 5 * 0.5) / 15)  # no fine deals: the coarser level's rate


def test_similar_rate_never_uses_own_outcome(tables):
    """Flipping one closed deal's outcome leaves its own similar-deals values unchanged."""
    cfg = _cfg()
    base = build_training_frame(tables, MD, cfg, synth.NOW)
    attrs = base.stats["similar"]["attributes"]
    assert attrs, "the planted signal (budget, need, channel...) must give a profile key"
    t = {k: v.copy() for k, v in tables.items()}
    opp = t["opportunity"]
    i = int(np.flatnonzero(opp["statecode"].to_numpy() == 1)[0])
    oid = opp.loc[i, "opportunityid"]
    opp.loc[i, ["statecode", "statuscode"]] = [2, 5]
    t["opportunity_history"] = opp.assign(_synced_at=opp["modifiedon"], _deleted=False)
    flipped = build_training_frame(t, MD, cfg, synth.NOW)
    if flipped.stats["similar"]["attributes"] != attrs:
        pytest.skip("the flip changed the chosen key")
    cols = ["d_similar_win_rate", "d_similar_closed", "d_similar_won"]
    a = base.frame.loc[base.frame["opportunityid"] == oid, cols].to_numpy()
    b = flipped.frame.loc[flipped.frame["opportunityid"] == oid, cols].to_numpy()
    np.testing.assert_array_equal(a[:, 1:], b[:, 1:])  # the counts: identical
    np.testing.assert_allclose(a[:, 0], b[:, 0], atol=1e-4)  # the rate moves only with the global prior


def test_similar_key_ignores_leaky_attributes(tables):
    data = build_training_frame(tables, MD, _cfg(), synth.NOW)
    attrs = data.stats["similar"]["attributes"]
    assert "new_contractnumber" not in attrs and "actualvalue" not in attrs
    assert len(attrs) <= similar.MAX_ATTRIBUTES
    assert data.stats["similar"]["selection"][0]["attribute"] in attrs


def test_open_rows_use_the_stored_counts(tables, trained):
    _, data, model = trained
    st = model.meta["stats"]["similar"]
    sd = build_scoring_frame(tables, MD, _cfg(), synth.NOW, model.meta["stats"]).frame
    keys = similar.level_keys(sd, st["attributes"])[-1]
    expected = [st["levels"][-1].get(str(k), [0, 0]) for k in keys]
    assert sd["d_similar_closed"].tolist() == [e[0] for e in expected]
    assert sd["d_similar_won"].tolist() == [e[1] for e in expected]
    assert sum(e[0] for e in expected) > 0


def test_count_texts():
    up, down, insight, d = count_texts("d_similar_win_rate", 7, 9, None, 0.29)
    assert insight == "7 of 9 similar past deals were won; overall 29%" and d == 1
    assert up == "Similar past deals were won more often than most" and down == "Similar past deals: 78% won"
    none_yet = "No similar past deals closed yet; overall 29% were won"
    assert count_texts("d_similar_win_rate", 0, 0, None, 0.29)[2] == none_yet
    many = "about 1,230 of 5,680 past deals of this owner were won; overall 29%"
    assert count_texts("d_owner_win_rate", 1234, 5678, None, 0.29)[2] == many


def test_similar_reason_states_the_counts(tables, trained):
    _, _, model = trained
    sd = build_scoring_frame(tables, MD, _cfg(), synth.NOW, model.meta["stats"]).frame
    out = Scorer(model.onnx_bytes, model.meta).score(sd)
    texts = [
        r["insight"]
        for reasons in out["reasons"]
        for side in ("positive", "negative")
        for r in reasons[side]
        if r["attribute"] == "d_similar_win_rate"
    ]
    assert texts, "the similar-deals feature should explain some scores"
    assert all("similar past deals" in t and "overall " in t for t in texts)


def test_test_set_is_exposed(trained):
    _, data, model = trained
    closed = pd.to_datetime(pd.Series(data.closed_at), utc=True).to_numpy()
    n_test = int(np.ceil(len(closed) * TEST_SHARE))
    idx = model.test_index
    assert idx is not None and len(idx) == n_test == model.meta["test"]["rows"]
    assert closed[idx].min() >= np.sort(closed)[len(closed) - n_test - 1]
    ids = data.frame["opportunityid"].iloc[idx].astype(str)
    assert sorted(model.meta["test"]["ids"]) == sorted(set(ids))
    assert model.meta["test"]["from"] <= model.meta["test"]["to"]


def test_calibration_methods_are_monotone():
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, 2000)
    y = (rng.uniform(0, 1, 2000) < np.clip(p * 0.8 + 0.15, 0, 1)).astype(int)  # drifting, miscalibrated
    cal = choose_calibration(p, y)
    assert cal["method"] in {"none", "platt", "isotonic", "blend"}
    assert cal["trials"] and cal["fitted_on"]["rows"] > 0
    grid = np.linspace(0, 1, 101)
    for method in ("platt", "isotonic", "blend", "none"):
        c = dict(cal, method=method) if method != "none" else {"method": "none"}
        if "x" not in c:
            c.update({"x": [0.0, 1.0], "y": [0.0, 1.0]})
        q = calibrate(grid, c)
        assert np.all(np.diff(q) >= -1e-12) and q.min() >= 0 and q.max() <= 1


def test_calibrated_test_metrics_reported(trained):
    _, _, model = trained
    m = model.meta["metrics"]
    assert {"ece", "ece_uncalibrated", "auc", "auc_uncalibrated"} <= set(m)
    assert model.meta["calibration"]["method"] in {"none", "platt", "isotonic", "blend"}


def test_training_rows_smooth_toward_the_win_rate_known_at_their_time(tables):
    """Issue 16's audit leak: the smoothing prior of past win rates was the win rate of every closed record,
    the test window's outcomes included. Flipping the outcomes of the latest deals must not move the
    smoothed rates of rows that closed before them."""
    from modeling.dataset.split import prior_as_of

    times = np.array(["2026-01-01", "2026-03-01", "2026-06-01"], dtype="datetime64[ns]")
    closes = np.array(["2025-12-01", "2026-02-01", "2026-02-15", "2026-05-01"], dtype="datetime64[ns]")
    assert prior_as_of(times, closes, np.array([1, 0, 1, 1])).tolist() == [2 / 3, 3 / 5, 4 / 6]

    cfg = validate_with_metadata({}, MD, now=synth.NOW)
    base = build_training_frame(tables, MD, cfg, synth.NOW)
    opp = tables["opportunity"].copy()
    closed = opp["statecode"] != 0
    late = closed & (
        pd.to_datetime(opp["actualclosedate"], utc=True) >= pd.to_datetime(base.closed_at).max() - pd.Timedelta(days=60)
    )
    assert 20 < int(late.sum()) < int(closed.sum()) / 3
    opp.loc[late, "statecode"] = np.where(opp.loc[late, "statecode"] == 1, 2, 1)
    opp.loc[late, "statuscode"] = np.where(opp.loc[late, "statecode"] == 1, 3, 5)
    flipped = build_training_frame({**tables, "opportunity": opp}, MD, cfg, synth.NOW)
    cut = pd.to_datetime(base.closed_at).max() - pd.Timedelta(days=60)
    early_ids = set(base.frame["opportunityid"][pd.to_datetime(base.closed_at) < cut])
    a = base.frame[base.frame["opportunityid"].isin(early_ids)].set_index("opportunityid").sort_index()
    b = flipped.frame[flipped.frame["opportunityid"].isin(early_ids)].set_index("opportunityid").sort_index()
    assert len(a) > 100
    for column in ("d_owner_win_rate", "d_account_win_rate", "d_account_same_value_win_rate"):
        np.testing.assert_allclose(a[column].to_numpy(dtype=float), b[column].to_numpy(dtype=float), err_msg=column)


def test_test_rows_see_only_the_similar_counts_frozen_before_the_test_window(tables):
    """Issue 16's second audit leak: scoring reads the similar-deals counts (and the prior) stored at training,
    but test rows counted the outcomes of earlier test deals. Flipping every test-window outcome must leave the
    test rows' similar-deals values unchanged, while their live owner counts (as scoring's) follow."""
    from modeling.dataset.split import test_split

    cfg = _cfg()
    base = build_training_frame(tables, MD, cfg, synth.NOW)
    assert base.stats["similar"]["attributes"], "the synthetic org should choose a similar-deals key"
    _, _, test_from = test_split(pd.to_datetime(pd.Series(base.closed_at), utc=True).to_numpy(dtype="datetime64[ns]"))
    opp = tables["opportunity"].copy()
    close = pd.to_datetime(opp["actualclosedate"], utc=True).dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")
    late = (opp["statecode"] != 0).to_numpy() & (close >= test_from)
    assert 50 < int(late.sum())
    opp.loc[late, "statecode"] = np.where(opp.loc[late, "statecode"] == 1, 2, 1)
    opp.loc[late, "statuscode"] = np.where(opp.loc[late, "statecode"] == 1, 3, 5)
    flipped = build_training_frame({**tables, "opportunity": opp}, MD, cfg, synth.NOW)

    def test_rows(data):
        closed_at = pd.to_datetime(pd.Series(data.closed_at), utc=True).dt.tz_localize(None).to_numpy()
        return data.frame[closed_at >= test_from].set_index("opportunityid").sort_index()

    a, b = test_rows(base), test_rows(flipped)
    assert len(a) == len(b) > 50
    for column in ("d_similar_win_rate", "d_similar_closed", "d_similar_won"):
        np.testing.assert_allclose(a[column].to_numpy(dtype=float), b[column].to_numpy(dtype=float), err_msg=column)
    assert not np.allclose(a["d_owner_win_rate"].to_numpy(dtype=float), b["d_owner_win_rate"].to_numpy(dtype=float))
