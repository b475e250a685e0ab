"""bench/bench_choice.py's counterfactual: the attributes' winsorising off, the derived features' kept."""

from __future__ import annotations

import pandas as pd

import modeling.train
from bench.bench_choice import winsorising

FEATURES = [
    {"name": "amount", "kind": "number", "label": "Amount", "options": None, "source": "amount", "derived": False},
    {"name": "d_days_open", "kind": "number", "label": "Days open", "options": None, "source": None, "derived": True},
]
FRAME = pd.DataFrame({"amount": [float(v) for v in range(200)], "d_days_open": [float(v) for v in range(200)]})


def _clips() -> dict[str, object]:
    return {f["name"]: f["clip"] for f in modeling.train.build_spec(FRAME, FEATURES)["features"]}


def test_winsorising_off_unclips_attributes_only_and_only_inside_the_context() -> None:
    as_built = _clips()
    assert as_built["amount"] is not None and as_built["d_days_open"] is not None
    with winsorising(True):
        assert _clips() == as_built
    with winsorising(False):
        off = _clips()
    assert off["amount"] is None  # an attribute: not clipped, so a linear model extrapolates
    assert off["d_days_open"] == as_built["d_days_open"]  # a derived count keeps its clip
    assert _clips() == as_built  # the product's spec is untouched afterwards
