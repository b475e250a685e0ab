"""Boolean (two-option) attributes: lake values (pyarrow bool -> numpy bool / object with None) keep their
values through the dataset, the feed, training, insights and scoring, with labels from the metadata."""

from __future__ import annotations

import copy
import re

import numpy as np
import pandas as pd
import pytest

from modeling.config import validate_with_metadata
from modeling.dataset import build_scoring_frame, build_training_frame
from modeling.dataset.attributes import feature_descriptors
from modeling.errors import ConfigError
from modeling.features import MISSING, boolean_options, build_spec, prepare, prepare_with_report
from modeling.insights import value_win_rates
from modeling.scoring import Scorer
from modeling.train import train_model
from tests.unit.modeling import synth

LABEL = "Decision Maker?"


def with_decisionmaker(optionset: dict[str, str] | None) -> tuple[dict[str, pd.DataFrame], dict]:
    """synth tables + a Boolean `decisionmaker` with planted signal (True on 70% of won, 30% of lost deals)."""
    tables = synth.make_tables(n=1500, n_open=200, seed=5)
    opp = tables["opportunity"].copy()
    rng = np.random.default_rng(3)
    won = opp["statecode"].to_numpy() == 1
    dm = np.where(won, rng.random(len(opp)) < 0.7, rng.random(len(opp)) < 0.3)
    opp["decisionmaker"] = dm.astype(bool)  # the lake's pyarrow bool -> numpy bool
    tables = dict(tables, opportunity=opp)
    tables["opportunity_history"] = opp.assign(_synced_at=opp["modifiedon"], _deleted=False)
    md = copy.deepcopy(synth.metadata())
    md["attributes"]["opportunity"].append(
        {"name": "decisionmaker", "type": "Boolean", "custom": False, "label": LABEL}
    )
    if optionset is not None:
        md["optionsets"]["opportunity"]["decisionmaker"] = optionset
    return tables, md


def _cfg(md, payload=None):
    return validate_with_metadata(payload or {}, md, now=synth.NOW)


def test_boolean_options_from_every_metadata_shape():
    assert boolean_options(None) == {"1": "Yes", "0": "No"}
    assert boolean_options({}) == {"1": "Yes", "0": "No"}
    assert boolean_options({"true": "completed", "false": "mark complete"}) == {
        "1": "completed",
        "0": "mark complete",
    }
    assert boolean_options({"1": "Allow", "0": "Do Not Allow"}) == {"1": "Allow", "0": "Do Not Allow"}


def test_boolean_feed_keeps_values_of_every_lake_shape():
    spec = build_spec(
        pd.DataFrame({"dm": [True, False] * 10}),
        [
            {
                "name": "dm",
                "kind": "category",
                "label": LABEL,
                "options": {"true": "Yes", "false": "No"},
                "boolean": True,
            }
        ],
    )
    assert spec["features"][0]["categories"][:2] == ["No", "Yes"]
    shapes = [
        pd.Series([True, False, True], dtype=bool),
        pd.Series([True, None, False], dtype=object),
        pd.Series([True, pd.NA, False], dtype="boolean"),
        pd.Series(["true", None, "False"], dtype=object),
        pd.Series([1, 0, 1], dtype="int64"),
        pd.Series([1.0, np.nan, 0.0]),
    ]
    for col in shapes:
        feed, report = prepare_with_report(pd.DataFrame({"dm": col}), spec)
        values = list(feed["dm"].ravel())
        assert values[0] == "Yes" and values[2] in ("Yes", "No") and report == {}, (col.dtype, values)
        assert values[1] in ("No", MISSING)
    feed, report = prepare_with_report(pd.DataFrame({"dm": pd.Series(["maybe", True], dtype=object)}), spec)
    assert list(feed["dm"].ravel()) == [MISSING, "Yes"] and report == {"dm": 1}


@pytest.fixture(scope="module")
def trained():
    tables, md = with_decisionmaker(None)  # no labels in the metadata: Yes / No
    cfg = _cfg(md)
    data = build_training_frame(tables, md, cfg, synth.NOW)
    return tables, md, cfg, train_model(data, cfg, candidates=["logistic_regression"])


def test_boolean_attribute_is_used_with_its_labels(trained):
    tables, md, cfg, model = trained
    leak = model.meta["leakage"]["decisionmaker"]
    assert not leak["excluded"] and not leak.get("unused"), leak
    assert leak["fill_closed"] == 1.0
    names = [f["name"] for f in model.meta["spec"]["features"]]
    assert "decisionmaker" in names
    rates = model.meta["value_rates"]["decisionmaker"]
    assert rates["values"]["Yes"]["rate"] > rates["global_rate"] > rates["values"]["No"]["rate"]
    text = rates["values"]["Yes"]["text"]
    assert re.fullmatch(rf"\d+% of opportunities with {re.escape(LABEL)} = Yes were won; overall \d+%", text)
    infl = {r["attribute"]: r["influence"] for r in model.meta["insights"]["influence"]}
    assert infl["decisionmaker"] > 0.5  # the planted signal is seen (mean points)
    sd = build_scoring_frame(tables, md, cfg, synth.NOW, model.meta["stats"])
    out = Scorer(model.onnx_bytes, model.meta).score(sd.frame)
    assert "decisionmaker" not in out.attrs["bad_values"]
    texts = [
        r["headline"] + " " + r["insight"]
        for rs in out["reasons"]
        for side in ("positive", "negative")
        for r in rs[side]
        if r["attribute"] == "decisionmaker"
    ]
    assert texts and all(LABEL in t for t in texts)


def test_boolean_labels_from_metadata_reach_the_sentences():
    tables, md = with_decisionmaker({"true": "completed", "false": "mark complete"})
    descriptors = [f for f in feature_descriptors(["decisionmaker"], md) if f["name"] == "decisionmaker"]
    assert descriptors[0]["options"] == {"1": "completed", "0": "mark complete"}
    frame = tables["opportunity"]
    spec = build_spec(frame, descriptors)
    y = (frame["statecode"] == 1).to_numpy()
    rates = value_win_rates(prepare(frame, spec), y, spec)["decisionmaker"]
    assert set(rates["values"]) == {"completed", "mark complete"}
    assert rates["values"]["completed"]["text"].startswith(f"{rates['values']['completed']['rate']:.0%} of opp")
    assert f"{LABEL} = completed were won; overall " in rates["values"]["completed"]["text"]


def test_boolean_filter_by_label_or_value():
    _, md = with_decisionmaker({"true": "completed", "false": "mark complete"})
    for values in (["completed"], [1], ["1"]):
        cfg = _cfg(md, {"filterColumn": "decisionmaker", "filterValues": values})
        assert cfg.filter_values == ("1",)
    _, md_plain = with_decisionmaker(None)
    assert _cfg(md_plain, {"filterColumn": "decisionmaker", "filterValues": ["No"]}).filter_values == ("0",)
    with pytest.raises(ConfigError):
        _cfg(md, {"filterColumn": "decisionmaker", "filterValues": ["perhaps"]})


def test_boolean_filter_selects_training_rows():
    tables, md = with_decisionmaker(None)
    cfg = _cfg(md, {"filterColumn": "decisionmaker", "filterValues": ["Yes"]})
    data = build_training_frame(tables, md, cfg, synth.NOW)
    dm = tables["opportunity"].set_index("opportunityid")["decisionmaker"]
    assert dm.loc[data.frame["opportunityid"]].all()
