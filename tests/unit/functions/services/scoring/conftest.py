"""Unit-test wiring for scoring: eligibility and the scorer replaced by deterministic fakes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import pytest

from functions.services.scoring import inputs
from modeling.scoring_rules import PublishedModel
from tests.unit.functions.services.scoring.fakes import FakeScorer


@pytest.fixture
def patched(monkeypatch: pytest.MonkeyPatch) -> dict[str, FakeScorer]:
    """Eligibility = open + the model's filter; scores from the `points` column."""
    scorers: dict[str, FakeScorer] = {}

    def frame(
        lake_inputs: inputs.LakeInputs, model: PublishedModel, meta: Any, ids: Sequence[str] | None
    ) -> tuple[pd.DataFrame, dict[str, int]]:
        opp = lake_inputs.tables["opportunity"]
        keep = opp["statecode"] == 0
        if model.config.filter_column:
            keep &= opp[model.config.filter_column].isin(model.config.filter_values)
        if ids is not None:
            keep &= opp["opportunityid"].isin(ids)
        return opp.loc[keep, ["opportunityid", "points", "new_channel"]].reset_index(drop=True), {}

    def load(ctx: Any, name: str, version: int) -> tuple[FakeScorer, dict[str, Any]]:
        return scorers.setdefault(f"{name}@{version}", FakeScorer(name, version)), {"stats": {}}

    monkeypatch.setattr(inputs, "scoring_frame", frame)
    monkeypatch.setattr(inputs, "load_model", load)
    return scorers
