"""Unit-test wiring for scoring: eligibility and the scorer replaced by deterministic fakes."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from functions.services import scoring
from tests.unit.scoring.fakes import FakeScorer


@pytest.fixture
def patched(monkeypatch: pytest.MonkeyPatch) -> dict[str, FakeScorer]:
    """Eligibility = open + the model's filter; scores from the `points` column."""
    scorers: dict[str, FakeScorer] = {}

    def build(
        tables: Any,
        metadata: Any,
        model: scoring.PublishedModel,
        now: Any,
        scorer: Any,
        opportunity_ids: Any = None,
    ) -> tuple[pd.DataFrame, dict[str, int]]:
        opp = tables["opportunity"]
        keep = opp["statecode"] == 0
        if model.config.filter_column:
            keep &= opp[model.config.filter_column].isin(model.config.filter_values)
        if opportunity_ids is not None:
            keep &= opp["opportunityid"].isin(opportunity_ids)
        return opp.loc[keep, ["opportunityid", "points", "new_channel"]].reset_index(drop=True), {}

    def load(ctx: Any, name: str, version: int) -> FakeScorer:
        return scorers.setdefault(f"{name}@{version}", FakeScorer(name, version))

    monkeypatch.setattr(scoring, "build_scoring_frame", build)
    monkeypatch.setattr(scoring, "load_scorer", load)
    return scorers
