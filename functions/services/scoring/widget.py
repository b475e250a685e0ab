"""The score card's two calls: `GET /api/opportunities/{id}/score` (the row, decoded) and scoring a
handful of listed ids now (`POST /api/score {"opportunityIds": [...]}`), which runs the batch code in
this process on only those opportunities."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from connectors.clock import iso, utcnow
from connectors.dataverse import DataverseNotFound
from connectors.odata import key_segment
from functions.services.scoring import inputs, plan, run, scores
from functions.services.scoring.batch import execute
from functions.services.scoring.common import (
    C_ID,
    ENTITY_SET,
    SYNC_LIMIT,
    BatchSpec,
    ScoreNotFound,
    new_run_id,
    score_key,
    validate_id,
    validate_ids,
)
from functions.services.scoring.report import summary
from modeling.changes import what_moved
from modeling.scoring_rules import GRADE_LABELS, TREND_LABELS

if TYPE_CHECKING:
    from functions.app_context import AppContext

SELECT = "msdyn_score,msdyn_grade,msdyn_scoretrend,msdyn_scoredon,msdyn_scorereasons,msdyn_name"


def score_now(ctx: AppContext, ids: Sequence[str], *, actor: str = "anonymous") -> tuple[int, dict[str, Any]]:
    """At most SYNC_LIMIT ids: scored and written now -> (200, scores). More: a queued run -> (202, job)."""
    wanted = validate_ids(ids)
    if len(wanted) > SYNC_LIMIT:
        planned = plan.plan_run(ctx, opportunity_ids=wanted, actor=actor)
        return 202, {"job": run.job_view(ctx, ctx.jobs.get(planned["runId"])), "run": summary(planned)}
    run_id, clock = new_run_id(), utcnow()
    models = inputs.published_models(ctx)
    chosen = inputs.assign(ctx, inputs.read_listed(ctx, wanted, models), models, wanted)
    rows: list[dict[str, Any]] = []
    stopped = 0
    for index, (model, frame) in enumerate(f for f in chosen.frames if len(f[1])):
        spec = BatchSpec(
            run_id,
            index,
            model.name,
            model.version,
            tuple(model.config.grade_ranges),
            clock.date().isoformat(),
            clock.strftime("%Y-%m"),
            ctx.settings.monthly_quota,
        )
        result, decided = execute(ctx, spec, frame)
        stopped += int(result["quotaStopped"])
        rows.extend(decode_decided(r, spec.key) for r in decided.to_dict("records"))
    body: dict[str, Any] = {
        "runId": run_id,
        "scores": sorted(rows, key=lambda r: r["opportunityId"]),
        "notScored": chosen.not_scored,
        "quotaStopped": stopped,
    }
    if chosen.broken:
        body["brokenModels"] = chosen.broken
    if stopped:
        body["message"] = f"monthly quota of {ctx.settings.monthly_quota} scored records reached: {stopped} not scored"
    return 200, body


def decode_decided(row: Mapping[str, Any], model: str) -> dict[str, Any]:
    previous = row.get("previous_score")
    return {
        "opportunityId": row[C_ID],
        "score": int(row["score"]),
        "grade": GRADE_LABELS[int(row["grade"])],
        "trend": TREND_LABELS[int(row["trend"])],
        "previousScore": None if previous is None or pd.isna(previous) else int(previous),
        "model": model,
        "written": bool(row["changed"]),
        "reasons": _parse_reasons(row.get("reasons")),
    }


def get_score(ctx: AppContext, opportunity_id: Any) -> dict[str, Any]:
    """The current msdyn_predictivescore row of an opportunity, decoded for the widget, with its score over
    time (the lake's score history) and what moved it at the last change."""
    opp_id = validate_id(opportunity_id)
    try:
        row = ctx.dataverse.get(key_segment(ENTITY_SET, score_key(opp_id)), params={"$select": SELECT})
    except DataverseNotFound as exc:
        raise ScoreNotFound(f"opportunity {opp_id} has no score") from exc
    return {**decode_dataverse_row(opp_id, row), **score_history(ctx, opp_id)}


def score_history(ctx: AppContext, opp_id: str) -> dict[str, Any]:
    """{"history": [{date, writtenAt, score, grade, model}] oldest first, "lastChange": what_moved between
    the last two written rows, or None}."""
    rows = scores.history(ctx.lake, opp_id).to_dict("records")
    points = [
        {
            "date": r["scoredon"],
            "writtenAt": iso(r["written_at"]),
            "score": int(r["score"]),
            "grade": GRADE_LABELS[int(r["grade"])],
            "model": f"{r['model']}@{int(r['version'])}",
        }
        for r in rows
    ]
    last = None
    if len(rows) >= 2:
        old, new = (
            {"score": int(r["score"]), "facts": r.get("facts"), "model": f"{r['model']}@{int(r['version'])}"}
            for r in rows[-2:]
        )
        last = {"at": points[-1]["writtenAt"], **what_moved(old, new)}
    return {"history": points, "lastChange": last}


def decode_dataverse_row(opp_id: str, row: Mapping[str, Any]) -> dict[str, Any]:
    reasons = _parse_reasons(row.get("msdyn_scorereasons"))
    model = None
    if isinstance(reasons, Mapping) and reasons.get("model"):
        model = f"{reasons.get('model')}@{reasons.get('version')}"
    grade, trend = row.get("msdyn_grade"), row.get("msdyn_scoretrend")
    return {
        "opportunityId": opp_id,
        "score": row.get("msdyn_score"),
        "grade": GRADE_LABELS[grade] if isinstance(grade, int) and 0 <= grade < 4 else None,
        "gradeValue": grade,
        "trend": TREND_LABELS[trend] if isinstance(trend, int) and 0 <= trend < 4 else None,
        "trendValue": trend,
        "scoredOn": row.get("msdyn_scoredon"),
        "model": model,
        "reasons": reasons,
    }


def _parse_reasons(text: Any) -> Any:
    if not isinstance(text, str) or not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return {"raw": text}
