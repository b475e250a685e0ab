"""Scoring runs as plain idempotent queue batches (docs/SCORING.md).

- `plan`: a run plans once: reads the lake, gives each eligible opportunity one model, writes one
  Parquet input per batch of <= 5,000 ids and `plan.json`, and sends one `{"runId", "batch"}` message each.
- `batch`: the queue worker: a batch with a result is done; otherwise it scores, decides what changed
  against the score state, upserts the changed rows, appends them to the score history, MERGEs them into
  the score state and writes its result create-only. Redelivery at any point writes nothing twice.
- `run`: status and report computed from the batch results, resume, poison markers, the scheduled run.
- `scores` (the score state and history Delta tables), `quota`, `widget` (GET score, score a few ids now).
The pure rules (model priority, trend, what changed, snapshot time) are `modeling.scoring_rules`.
"""

from functions.services.scoring.active import ScoringInProgress
from functions.services.scoring.batch import execute, handle_message, score_batch
from functions.services.scoring.common import (
    SYNC_LIMIT,
    BatchWriteFailed,
    RunNotFound,
    RunSuperseded,
    ScoreNotFound,
    ScoringError,
    parse_message,
    validate_ids,
)
from functions.services.scoring.inputs import clear_model_cache, model_health
from functions.services.scoring.plan import plan_run
from functions.services.scoring.quota import usage as quota_usage
from functions.services.scoring.report import summary
from functions.services.scoring.run import job_view, record_poisoned, report, resume, scheduled_run
from functions.services.scoring.widget import decode_dataverse_row, get_score, score_now

__all__ = [
    "SYNC_LIMIT",
    "BatchWriteFailed",
    "RunNotFound",
    "RunSuperseded",
    "ScoreNotFound",
    "ScoringError",
    "ScoringInProgress",
    "clear_model_cache",
    "decode_dataverse_row",
    "execute",
    "get_score",
    "handle_message",
    "job_view",
    "model_health",
    "parse_message",
    "plan_run",
    "quota_usage",
    "record_poisoned",
    "report",
    "resume",
    "scheduled_run",
    "score_batch",
    "score_now",
    "summary",
    "validate_ids",
]
