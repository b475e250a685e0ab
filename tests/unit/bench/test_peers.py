"""Peers: the Odoo-style naive Bayes by hand, and every peer on planted signal with messy input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench import peers
from bench.common import evaluate


def test_odoo_naive_bayes_by_hand() -> None:
    X = pd.DataFrame({"source": ["web", "web", "web", "fair", "fair", None]})
    y = np.array([1, 1, 0, 0, 0, 1])
    nb = peers.OdooNaiveBayes().fit(X, y)
    # counts +0.1: web (2.1 won, 1.1 lost), fair (0.1, 2.1); blank skipped; totals won 2.2, lost 3.2
    assert nb.counts["source"]["web"] == pytest.approx((2.1, 1.1))
    s_won = 0.5 * 2.1 / 2.2
    s_lost = 0.5 * 1.1 / 3.2
    p = nb.predict_proba(pd.DataFrame({"source": ["web", "unseen", None]}))
    assert p[0] == pytest.approx(s_won / (s_won + s_lost))
    # a value never seen in training and a blank are skipped: the prior alone
    assert p[1] == pytest.approx(0.5) and p[2] == pytest.approx(0.5)


def test_odoo_naive_bayes_bins_numbers_into_training_deciles() -> None:
    rng = np.random.default_rng(0)
    amount = rng.uniform(0, 100, 2000)
    y = (amount > 50).astype(int)
    nb = peers.OdooNaiveBayes().fit(pd.DataFrame({"amount": amount}), y)
    assert len(nb.edges["amount"]) == 9
    p = nb.predict_proba(pd.DataFrame({"amount": [5.0, 95.0, np.nan]}))
    assert p[0] < 0.1 < 0.9 < p[1] and p[2] == pytest.approx(nb.prior_won)


def test_odoo_naive_bayes_needs_both_classes() -> None:
    with pytest.raises(ValueError, match="won and one lost"):
        peers.OdooNaiveBayes().fit(pd.DataFrame({"a": ["x", "y"]}), np.array([1, 1]))


def _planted(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    region = rng.choice(["north", "south", "east", "west"], n)
    amount = rng.lognormal(10, 1, n)
    logit = np.where(region == "north", 1.5, -0.5) - 0.5 * (np.log(amount) - 10)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    X = pd.DataFrame(
        {"region": pd.Series(region, dtype="str"), "amount": amount, "flag": rng.random(n) < 0.5}
    )
    X.loc[X.sample(frac=0.1, random_state=seed).index, "region"] = np.nan
    X.loc[X.sample(frac=0.1, random_state=seed + 1).index, "amount"] = np.nan
    return X, y


@pytest.mark.parametrize(
    "make", [peers.PlainLogisticRegression, peers.PlainHistGradientBoosting, peers.OdooNaiveBayes]
)
def test_every_peer_learns_planted_signal_and_survives_unseen_values(make: type) -> None:
    X, y = _planted(3000, 1)
    Xt, yt = _planted(1000, 2)
    Xt.loc[Xt.index[:5], "region"] = "never-seen"
    p = make().fit(X, y, seed=0).predict_proba(Xt)
    assert p.shape == (1000,) and np.all((p >= 0) & (p <= 1))
    assert evaluate(yt, p, 0.5)["auc"] > 0.7


def test_split_columns_treats_bools_and_strings_as_categories() -> None:
    X, _ = _planted(10, 0)
    assert peers.split_columns(X) == (["region", "flag"], ["amount"])


def test_oof_threshold_uses_training_records_only() -> None:
    X, y = _planted(1500, 3)
    t = peers.oof_threshold(peers.PlainLogisticRegression, X, y, seed=0)
    assert 0.0 < t < 1.0


def test_peer_without_columns_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no feature columns"):
        peers.PlainLogisticRegression().fit(pd.DataFrame(index=range(3)), np.array([0, 1, 0]))
