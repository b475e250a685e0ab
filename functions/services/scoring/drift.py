"""Drift of each published version, measured while a full scoring run plans (docs/SCORING.md "Drift"): the
plan has read the lake and built every model's scoring frame already, so this costs one pass over the open
records (their feed and calibrated probability, no reasons) and one read of the score state.

Each model's latest measure is kept at `scoring/drift/<model>.json` (`GET /api/models/{name}` shows it for
the published version; the auto-retrain timer reads it); the run's plan and report carry the run's own.
A run scoring listed ids measures nothing (a handful of records says nothing about a population)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from connectors.clock import iso, parse
from functions.services.scoring import scores
from functions.services.scoring.common import C_ID
from modeling import drift as drift_math
from modeling.scoring_rules import PublishedModel

if TYPE_CHECKING:
    from functions.app_context import AppContext
    from functions.services.scoring.inputs import Assignment, LakeInputs

log = logging.getLogger(__name__)

DRIFT_PREFIX = "scoring/drift/"


def drift_path(name: str) -> str:
    return f"{DRIFT_PREFIX}{name}.json"


def measure(ctx: AppContext, run_id: str, lake_inputs: LakeInputs, chosen: Assignment) -> list[dict[str, Any]]:
    """Population drift and realized performance of every model the run scores (versions trained before
    drift profiles were stored are left out). Never fails the run: an error is logged and nothing measured."""
    from functions.services.scoring.inputs import load_model

    try:
        state = scores.state(ctx.lake)
        out = []
        for model, frame in chosen.frames:
            scorer, meta = load_model(ctx, model.name, model.version)
            if not meta.get("drift") or frame.empty:
                continue
            feed, p = scorer.feed_probabilities(frame)
            found = drift_math.population(meta["drift"], feed, scorer.spec, p)
            real = realized(model, meta, lake_inputs.tables.get("opportunity"), state, lake_inputs.as_of)
            doc = {
                "model": model.name,
                "version": model.version,
                "runId": run_id,
                "measuredAt": iso(),
                "asOf": iso(lake_inputs.as_of),
                "population": found,
                "realized": real,
                "assessment": drift_math.assess(found, real),
                "thresholds": drift_math.thresholds(),
            }
            ctx.lake.json.write(drift_path(model.name), doc)
            out.append(doc)
    except Exception as exc:  # noqa: BLE001 - drift is a report; the run scores without it
        log.warning("scoring run=%s: drift not measured (%s: %s)", run_id, type(exc).__name__, exc)
        return []
    for line in drift_math.summarize(out):
        log.warning("scoring run=%s drift alert %s", run_id, line)
    return out


def realized(
    model: PublishedModel,
    meta: Mapping[str, Any],
    opportunities: pd.DataFrame | None,
    state: pd.DataFrame,
    as_of: dt.datetime,
) -> dict[str, Any]:
    """The version's last written score of each opportunity closed in the window (since the later of the
    version's training and REALIZED_DAYS before `as_of`) against its outcome (`modeling.drift.realized`)."""
    from modeling.dataset.tables import close_time, outcome_labels

    since = as_of - dt.timedelta(days=drift_math.REALIZED_DAYS)
    trained = parse(str(meta.get("trainedAt") or ""))
    if trained is not None and trained > since:
        since = trained
    p, y = np.zeros(0), np.zeros(0, dtype=int)
    mine = state[(state["model"] == model.name) & (state["version"] == model.version)]
    if opportunities is not None and not opportunities.empty and not mine.empty:
        labels = outcome_labels(opportunities, model.config)
        closed_at = close_time(opportunities)
        window = labels.notna() & (closed_at >= pd.Timestamp(since)).to_numpy()
        closed = pd.DataFrame(
            {"opportunityid": opportunities.loc[window, C_ID].astype(str).str.lower(), "won": labels[window]}
        )
        scored = mine.assign(opportunityid=mine["opportunityid"].astype(str).str.lower())
        joined = closed.merge(scored[["opportunityid", "score"]], on="opportunityid", how="inner")
        p, y = joined["score"].to_numpy(dtype=float) / 100.0, joined["won"].to_numpy(dtype=int)
    return {**drift_math.realized(p, y, meta.get("metrics") or {}), "since": iso(since)}


def latest(ctx: AppContext, name: str, version: int | None) -> dict[str, Any] | None:
    """The latest drift measured for `name`@`version` (None: never measured for that version)."""
    if version is None:
        return None
    doc = ctx.lake.read_json(drift_path(name))
    return doc if doc and doc.get("version") == version else None


def view(doc: dict[str, Any] | None) -> dict[str, Any] | None:
    """The published version's latest drift (docs/SCORING.md "Drift"): the assessment first, then the
    measures; None until a full scoring run has measured it."""
    if doc is None:
        return None
    assessment = doc.get("assessment") or {}
    population = doc.get("population") or {}
    return {
        "alert": assessment.get("alert"),
        "earlyRetrain": assessment.get("retrain"),
        "message": assessment.get("message"),
        "reasons": assessment.get("reasons") or [],
        "drifted": population.get("drifted") or [],
        "moderate": population.get("moderate") or [],
        "score": population.get("score"),
        "realized": doc.get("realized"),
        "attributes": population.get("attributes") or [],
        **{k: doc.get(k) for k in ("version", "runId", "measuredAt", "asOf", "thresholds")},
    }


def forget(ctx: AppContext, name: str) -> None:
    """A deleted model's drift document goes with it."""
    ctx.lake.delete(drift_path(name))
