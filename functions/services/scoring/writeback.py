"""Write-back: a batch's changed score rows upserted to Dataverse's `msdyn_predictivescore` on their alternate
key (connectors/dataverse_bulk.py picks UpsertMultiple or `$batch`)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import pandas as pd

from connectors.dataverse_bulk import upsert_rows
from functions.services.scoring.common import C_ID, ENTITY_SET, SCORE_TABLE, BatchWriteFailed, score_body, score_key

if TYPE_CHECKING:
    from functions.app_context import AppContext

log = logging.getLogger(__name__)


def write_rows(ctx: AppContext, rows: pd.DataFrame) -> tuple[int, list[dict[str, Any]]]:
    """Upsert rows on the alternate key (UpsertMultiple where the org has it, else $batch; at most 1,000
    a request, in parallel up to the org's x-ms-dop-hint and DATAVERSE_WRITE_PARALLELISM). Returns the
    requests sent and the rows Dataverse refused, each with its reason. BatchWriteFailed when rows were
    left unwritten for a transient reason (the host's retry sends them all again)."""
    if rows.empty:
        return 0, []
    records = rows.to_dict("records")
    items = [(score_key(r[C_ID]), score_body(r)) for r in records]
    out = upsert_rows(ctx.dataverse, ENTITY_SET, SCORE_TABLE, items, max_parallelism=ctx.settings.write_parallelism)
    if out.transient:
        first = out.transient[0]
        raise BatchWriteFailed(f"{len(out.transient)} of {len(items)} upserts failed; first: {first.status} "
                               f"{first.message[:200]}")  # fmt: skip
    for f in out.failures:
        log.warning("score row of opportunity %s refused: %s %s", records[f.index][C_ID], f.status, f.code)
    failures = [
        {"opportunityId": str(records[f.index][C_ID]), "status": f.status, "code": f.code, "reason": f.message[:500]}
        for f in out.failures
    ]
    return out.requests, failures
