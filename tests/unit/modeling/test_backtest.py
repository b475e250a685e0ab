"""modeling/backtest.py on small hand-built frames: the cut dates a request asks for, which opportunities were
open on a date, their values as of it, and the per-month figures."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from modeling import backtest
from modeling.backtest import Source, cut_dates, month_metrics, open_at, run_month, scored_mask, scoring_frame_at
from modeling.config import ModelConfig
from modeling.errors import FieldError
from tests.unit.modeling import synth

NOW = datetime(2026, 12, 1, 17, 0, tzinfo=UTC)


def _dates(cuts: list[pd.Timestamp]) -> list[str]:
    return [c.date().isoformat() for c in cuts]


def test_default_cut_dates_are_the_12_months_ending_at_the_last_full_month() -> None:
    cuts = cut_dates({}, NOW)
    assert _dates(cuts) == ["2025-12-01"] + [f"2026-{m:02d}-01" for m in range(1, 12)]
    assert all(c.tzinfo is not None and c.hour == 0 for c in cuts)
    assert _dates(cut_dates({}, datetime(2026, 1, 31, 23, 59, tzinfo=UTC)))[-1] == "2025-12-01"


@pytest.mark.parametrize(
    ("body", "first", "last", "count"),
    [
        ({"months": 6}, "2026-06-01", "2026-11-01", 6),
        ({"months": 1.0}, "2026-11-01", "2026-11-01", 1),
        ({"from": "2025-01-01", "to": "2025-12-01"}, "2025-01-01", "2025-12-01", 12),
        ({"from": "2025-03-01", "months": 2}, "2025-03-01", "2025-04-01", 2),
        ({"to": "2025-03-01", "months": 3}, "2025-01-01", "2025-03-01", 3),
        ({"to": "2025-03-01"}, "2024-04-01", "2025-03-01", 12),
        ({"from": "2026-09-01"}, "2026-09-01", "2026-11-01", 3),
    ],
)
def test_a_range_in_the_body(body: dict, first: str, last: str, count: int) -> None:
    cuts = _dates(cut_dates(body, NOW))
    assert (cuts[0], cuts[-1], len(cuts)) == (first, last, count)
    assert len(set(cuts)) == count and all(c.endswith("-01") for c in cuts)


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({"month": 3}, "month", "UnknownField"),
        ({"months": 0}, "months", "InvalidField"),
        ({"months": 13}, "months", "InvalidField"),
        ({"months": "3"}, "months", "InvalidField"),
        ({"months": True}, "months", "InvalidField"),
        ({"months": 2.5}, "months", "InvalidField"),
        ({"from": "2025-01-15"}, "from", "InvalidField"),
        ({"from": "2025-13-01"}, "from", "InvalidField"),
        ({"from": 20250101}, "from", "InvalidField"),
        ({"from": "1900-01-01", "to": "1900-02-01"}, "from", "InvalidField"),
        ({"to": "2026-12-01"}, "to", "InvalidField"),
        ({"from": "2025-06-01", "to": "2025-05-01"}, "from", "InvalidField"),
        ({"from": "2024-01-01", "to": "2025-12-01"}, "from", "InvalidField"),
        ({"from": "2026-10-01", "months": 3}, "months", "InvalidField"),
        ({"from": "2025-01-01", "to": "2025-02-01", "months": 2}, "months", "InvalidField"),
    ],
)
def test_a_bad_range_names_its_field(body: dict, field: str, code: str) -> None:
    with pytest.raises(FieldError) as err:
        cut_dates(body, NOW)
    assert err.value.field == field and err.value.code == code
    assert str(err.value).startswith(field + ":")


def test_open_at_a_date() -> None:
    cut = pd.Timestamp("2025-06-01", tz="UTC")
    t = lambda s: np.datetime64(s, "ns")  # noqa: E731
    nat = np.datetime64("NaT", "ns")
    created = np.array([t(d) for d in ("2025-05-01", "2025-06-01", "2025-06-02")] + [t("2025-01-01")] * 3)
    close = np.array([nat, t("2025-07-01"), nat, t("2025-05-31"), t("2025-06-01"), t("2025-06-01T00:00:01")])
    # open / created on the date / created after / closed before / closed on the date / closed just after
    assert open_at(created, close, cut).tolist() == [True, True, False, False, False, True]


def _org() -> tuple[dict[str, pd.DataFrame], dict]:
    """Six deals around the cut 2025-06-01: open ones, closed before, created after, one too old to score."""
    opp = pd.DataFrame(
        {
            "opportunityid": ["a", "b", "c", "d", "e", "f"],
            "createdon": pd.to_datetime(
                ["2025-03-01", "2025-04-01", "2025-02-01", "2025-07-01", "2023-01-01", "2025-05-20"], utc=True
            ),
            "actualclosedate": pd.to_datetime([None, "2025-08-01", "2025-05-01", None, None, "2025-09-01"], utc=True),
            "modifiedon": pd.to_datetime(["2025-11-01"] * 6, utc=True),
            "statecode": [0, 1, 2, 0, 0, 2],
            "budgetstatus": [3, 3, 0, 1, 1, 2],
            "estimatedvalue": [100.0, 200.0, 300.0, 400.0, 500.0, 600.0],
            "_parentaccountid_value": ["acc1"] * 6,
            "_ownerid_value": ["own1"] * 6,
        }
    )
    history = pd.DataFrame(  # a's budget was 0 until June 10th; b's went from 1 to 2 on May 1st
        {
            "opportunityid": ["a", "a", "b", "b"],
            "modifiedon": pd.to_datetime(["2025-03-01", "2025-06-10", "2025-04-01", "2025-05-01"], utc=True),
            "budgetstatus": [0, 3, 1, 2],
            "_deleted": [False] * 4,
            "_synced_at": pd.to_datetime(["2025-11-01"] * 4, utc=True),
        }
    )
    attrs = [
        {"name": "opportunityid", "type": "Uniqueidentifier"},
        {"name": "statecode", "type": "State"},
        {"name": "budgetstatus", "type": "Picklist", "label": "Budget"},
        {"name": "estimatedvalue", "type": "Money"},
        {"name": "createdon", "type": "DateTime"},
    ]
    metadata = {"attributes": {"opportunity": attrs, "account": []}, "optionsets": {}, "processes": []}
    return {"opportunity": opp, "opportunity_history": history}, metadata


def test_the_scored_rows_of_a_date_and_their_values_as_of_it() -> None:
    tables, metadata = _org()
    src = Source(tables, metadata, ModelConfig(name="T"))
    cut = pd.Timestamp("2025-06-01", tz="UTC")
    mask = scored_mask(src, cut)
    # c closed before, d created after, e older than the 730-day scoring window
    assert src.opp["opportunityid"][mask].tolist() == ["a", "b", "f"]
    assert src.outcome[mask].tolist()[1:] == [1.0, 0.0] and np.isnan(src.outcome[mask][0])
    frame = scoring_frame_at(src, mask, cut, {"prior_win_rate": 0.4})
    assert frame["opportunityid"].tolist() == ["a", "b", "f"]
    # point in time: a's budget was 0 on the cut (3 only from June 10th), b's 2; f has no history: current
    assert frame["budgetstatus"].astype(int).tolist() == [0, 2, 2]
    assert frame["d_days_open"].tolist() == [92.0, 61.0, 12.0]
    # the account's past deals: only c (lost May 1st) closed before the cut; smoothed toward the prior
    assert frame["d_account_closed"].tolist() == [1.0, 1.0, 1.0]
    assert frame["d_account_win_rate"].tolist() == pytest.approx([(0 + 5 * 0.4) / (1 + 5)] * 3)


def test_a_filtered_model_scores_only_its_opportunities() -> None:
    tables, metadata = _org()
    src = Source(tables, metadata, ModelConfig(name="T", filter_column="budgetstatus", filter_values=("2",)))
    assert src.opp["opportunityid"][scored_mask(src, pd.Timestamp("2025-06-01", tz="UTC"))].tolist() == ["f"]


def test_month_metrics_leave_still_open_deals_out_but_count_them() -> None:
    ids = [f"o{i:02d}" for i in range(12)]
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.95, 0.5])
    y = np.array([1, 1, 0, 1, 0, 0, 1, 0, 0, 0, np.nan, np.nan])
    got = month_metrics(ids, p, y)
    done = ~np.isnan(y)
    assert (got["scoredRows"], got["closedSince"], got["stillOpen"], got["won"], got["lost"]) == (12, 10, 2, 4, 6)
    assert got["auc"] == round(roc_auc_score(y[done], p[done]), 4)
    assert got["wonRate"] == 0.4 and got["meanPredicted"] == round(p[done].mean(), 4)
    # the top decile of 10 evaluated rows is 1 row: the 0.9 one (won), so the lift is 1 / 0.4
    assert got["topDecileRows"] == 1 and got["topDecileLift"] == 2.5
    bins = np.minimum((p[done] * 10).astype(int), 9)
    expected = sum(
        (bins == b).sum() / 10 * abs(p[done][bins == b].mean() - y[done][bins == b].mean()) for b in np.unique(bins)
    )
    assert got["ece"] == round(expected, 4)


def test_month_metrics_without_both_outcomes_or_without_rows() -> None:
    one = month_metrics(["a", "b"], np.array([0.2, 0.7]), np.array([0.0, 0.0]))
    assert one["auc"] is None and one["wonRate"] == 0.0 and one["topDecileLift"] is None
    none = month_metrics([], np.zeros(0), np.zeros(0))
    assert none["closedSince"] == 0 and none["auc"] is None and none["ece"] is None and none["wonRate"] is None


def test_top_decile_ties_go_to_the_smaller_id() -> None:
    p = np.array([0.5] * 10 + [0.1] * 10)
    assert backtest.top_decile([f"x{i:02d}" for i in range(19, -1, -1)], p).tolist() == [9, 8]


def test_summary_takes_medians_of_the_months_that_have_a_figure() -> None:
    months = [
        {"status": "evaluated", "auc": 0.7, "ece": 0.1, "wonRate": 0.3, "meanPredicted": 0.3, "topDecileLift": 2.0},
        {"status": "evaluated", "auc": 0.8, "ece": 0.05, "wonRate": 0.4, "meanPredicted": 0.35, "topDecileLift": None},
        {"status": "evaluated", "auc": 0.9, "ece": 0.2, "wonRate": 0.5, "meanPredicted": 0.4, "topDecileLift": 3.0},
        {"status": "skipped"},
    ]
    got = backtest.summary(months)
    assert (got["months"], got["evaluated"], got["skipped"]) == (4, 3, 1)
    assert (got["medianAuc"], got["medianEce"], got["medianTopDecileLift"]) == (0.8, 0.1, 2.5)


@pytest.fixture(scope="module")
def src() -> Source:
    return Source(synth.make_tables(n=900, n_open=150), synth.metadata(), ModelConfig(name="T", training_period="1y"))


def test_a_month_without_enough_closed_deals_is_reported_with_the_reason(src: Source) -> None:
    month = run_month(src, pd.Timestamp("2024-01-01", tz="UTC"), threads=1)
    assert month.report["status"] == "skipped" and month.ids == []
    assert month.report["reason"]["code"] == "InsufficientData"
    assert month.report["reason"]["needed"] == {"won": 40, "lost": 40}


def test_a_month_scores_exactly_the_deals_open_then_with_their_outcomes(src: Source) -> None:
    cut = pd.Timestamp("2025-03-01", tz="UTC")
    month = run_month(src, cut, threads=1)
    report = month.report
    assert report["status"] == "evaluated", report
    opp = src.tables["opportunity"]
    created, closed = opp["createdon"], opp["actualclosedate"]
    expected = opp[(created <= cut) & (closed.isna() | (closed > cut))]
    assert sorted(month.ids) == sorted(expected["opportunityid"])
    state = dict(zip(expected["opportunityid"], expected["statecode"], strict=True))
    assert month.outcomes == [{0: None, 1: 1, 2: 0}[state[i]] for i in month.ids]
    # the training set holds only deals closed by the cut
    assert report["trainedRows"] == int(((closed <= cut) & (created >= cut - pd.DateOffset(years=1))).sum())
    y = np.array([np.nan if o is None else o for o in month.outcomes], dtype=float)
    assert report == {**report, **month_metrics(month.ids, np.array(month.probabilities), y)}
    assert report["auc"] > 0.7 and report["stillOpen"] == sum(o is None for o in month.outcomes) > 0


def test_training_without_explanations_gives_the_same_model(src: Source) -> None:
    from modeling.dataset import build_training_frame
    from modeling.train import train_model

    data = build_training_frame(src.tables, src.metadata, src.config, datetime(2025, 4, 1, tzinfo=UTC))
    full = train_model(data, src.config, threads=1)
    lean = train_model(data, src.config, threads=1, explain=False)
    assert lean.meta["metrics"] == full.meta["metrics"] and lean.meta["spec"] == full.meta["spec"]
    assert full.meta["insights"]["influence"] and lean.meta["insights"]["influence"] == []
    assert lean.meta["insights"]["top_attributes"] == []
