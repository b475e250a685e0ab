"""A scoring run's spans and metrics (the SDK's in-memory exporter and reader) over the service's unit fakes:
one plan span, one span per batch with its run, batch and model, and the counts scored, written and sent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from functions.services import scoring
from tests.unit.functions.services.scoring.test_service import _ctx, _drain


def test_a_run_is_a_plan_span_and_a_span_per_batch_with_its_counts(tmp_path: Path, patched: Any, otel: Any) -> None:
    ctx = _ctx(tmp_path)
    plan = scoring.plan_run(ctx, actor="test", batch_size=700)
    _drain(ctx)
    [planned] = otel.spans("scoring.plan")
    assert planned.attributes["scoring.run"] == plan["runId"]
    batches = sorted(otel.spans("scoring.batch"), key=lambda s: s.attributes["scoring.batch"])
    assert [s.attributes["scoring.batch"] for s in batches] == [0, 1, 2, 3]
    assert {s.attributes["scoring.run"] for s in batches} == {plan["runId"]}
    assert [s.attributes["written"] for s in batches] == [700, 700, 700, 150]
    assert {s.attributes["model"] for s in batches} == {"All@1"}
    assert all(s.parent is None or s.parent.span_id != planned.context.span_id for s in batches)  # queued apart
    assert otel.counted("scoring.opportunities", model="All@1") == 2250
    assert otel.counted("dataverse.rows_written", model="All@1") == 2250
    assert otel.counted("dataverse.write_requests", model="All@1") == 4
    shown = json.dumps([dict(s.attributes) for s in batches])
    assert "Deal 1" not in shown  # ids and counts, never a record's values


def test_the_quota_used_is_a_gauge_of_the_month(tmp_path: Path, patched: Any, otel: Any) -> None:
    ctx = _ctx(tmp_path, quota=1000)
    plan = scoring.plan_run(ctx, actor="test", batch_size=700)
    _drain(ctx)
    month = plan["month"]
    assert otel.gauge("scoring.quota_used", month=month, limit=1000) == [1000.0]
    assert otel.counted("scoring.opportunities") == 1000
