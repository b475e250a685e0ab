"""The JSON Schemas of the HTTP API's bodies: the one place they are written (OpenAPI 3.1 dialect, i.e.
JSON Schema 2020-12). `functions/api.py` refers to them by name; `GET /api/openapi.json` serves them under
`components.schemas`.

Request schemas say what the triggers accept. Response schemas name the fields callers rely on and allow
additional properties: a response may gain fields without a change here breaking a client that validates
against the description (add them here when it does).
"""

from __future__ import annotations

from typing import Any

from connectors.jobs import JOB_ID
from modeling.values import AUDIT_CURSOR, GUID, MODEL_NAME

# Route values and query values, as the triggers check them (modeling/values.py, connectors/jobs.py).
MODEL_NAME_PATTERN = f"^{MODEL_NAME.pattern}$"
JOB_ID_PATTERN = f"^{JOB_ID.pattern}$"
GUID_PATTERN = f"^{GUID.pattern}$"
AUDIT_CURSOR_PATTERN = f"^({AUDIT_CURSOR.pattern})?$"  # empty: the first page
# A version as a query value: empty (published, else latest) or at most 9 ASCII digits of a number >= 1.
VERSION_PATTERN = "^(0*[1-9][0-9]{0,8})?$"
SEGMENT_PATTERN = "^[A-Za-z0-9_.]{0,100}$"  # a column's logical name (account.<name> for the account's)
VERSION_MAX_LENGTH = 9

_MONTH_START = r"^[0-9]{4}-(0[1-9]|1[0-2])-01$"
_NULLABLE_STR = {"type": ["string", "null"]}
_NULLABLE_INT = {"type": ["integer", "null"]}
_NULLABLE_NUM = {"type": ["number", "null"]}


def _open(properties: dict[str, Any], required: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    """An object schema of a response: these properties, more allowed."""
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": True}
    if required:
        schema["required"] = required
    schema.update(extra)
    return schema


_GRADE_RANGES = {
    "description": 'minimum scores of grades A, B, C as `[75, 50, 25]`, `{"A": 75, "B": 50, "C": 25}`, '
    'or full contiguous ranges `{"A": {"min": 75, "max": 100}, ...}` covering 0..100',
    "oneOf": [
        {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 100}, "minItems": 3, "maxItems": 3},
        {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0, "maximum": 100}},
        {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}},
                "required": ["min", "max"],
            },
        },
    ],
}
_STRINGS = {"type": "array", "items": {"type": "string"}}
_OPTION_VALUES = {
    "type": "array",
    "minItems": 1,
    "items": {"type": ["string", "integer"]},
    "description": "option labels (`Won`) or values (`1`)",
}

# ---------------------------------------------------------------------------------------------- requests
REQUEST_SCHEMAS: dict[str, dict[str, Any]] = {
    "SyncRequest": {
        "type": "object",
        "properties": {"full": {"type": "boolean", "default": False, "description": "a full resync"}},
        "additionalProperties": False,
    },
    "ModelConfiguration": {
        "type": "object",
        "description": "docs/MODELING.md 'Configuration'; every field optional (defaults as Dynamics')",
        "properties": {
            "name": {"type": "string", "pattern": MODEL_NAME_PATTERN, "description": "OpportunityScoring_<UTC>"},
            "businessProcessFlow": {"type": "string", "description": "process id or unique name; needed with perStage"},
            "stateOptionSet": {"type": "string", "default": "statecode"},
            "wonValues": _OPTION_VALUES,
            "lostValues": _OPTION_VALUES,
            "filterColumn": {"type": "string"},
            "filterValues": {"type": "array", "items": {"type": ["string", "number"]}},
            "trainingPeriod": {"type": "string", "enum": ["3m", "6m", "1y", "2y"], "default": "2y"},
            "perStage": {"type": "boolean", "default": False},
            "attributes": _STRINGS,
            "stageAttributes": {"type": "object", "additionalProperties": _STRINGS},
            "gradeRanges": _GRADE_RANGES,
            "autoRetrain": {"type": "boolean", "default": True},
            "force": {"type": "boolean", "description": "create even when it overlaps an existing model"},
        },
        "additionalProperties": False,
    },
    "ModelEdit": {
        "type": "object",
        "description": "only these fields can change after creation",
        "minProperties": 1,
        "properties": {
            "attributes": _STRINGS,
            "stageAttributes": {"type": "object", "additionalProperties": _STRINGS},
            "gradeRanges": _GRADE_RANGES,
            "autoRetrain": {"type": "boolean"},
        },
        "additionalProperties": False,
    },
    "PublishRequest": {
        "type": "object",
        "properties": {
            "version": {
                "description": "default: the latest",
                "anyOf": [
                    {"type": "integer", "minimum": 1},
                    {"type": "string", "pattern": VERSION_PATTERN, "maxLength": VERSION_MAX_LENGTH},
                    {"type": "null"},
                ],
            }
        },
        "additionalProperties": False,
    },
    "ScoreRequest": {
        "type": "object",
        "description": "empty: every eligible open opportunity; `opportunityIds`: these (200 for up to 20); "
        "`resume`: re-send the batches of an unfinished run",
        "properties": {
            "opportunityIds": {"type": "array", "items": {"type": "string", "pattern": GUID_PATTERN}, "minItems": 1},
            "resume": {"type": "string", "pattern": JOB_ID_PATTERN},
        },
        "additionalProperties": False,
    },
    "BacktestRequest": {
        "type": "object",
        "description": "empty: the 12 monthly cut dates ending at the last full month; or `months` (ending there), "
        "`from` and `to`, or one of them with `months`; at most 12 cut dates, none after the last full month",
        "properties": {
            "from": {"type": "string", "pattern": _MONTH_START, "description": "the first cut date, YYYY-MM-01"},
            "to": {"type": "string", "pattern": _MONTH_START, "description": "the last cut date, YYYY-MM-01"},
            "months": {"type": "integer", "minimum": 1, "maximum": 12, "description": "how many cut dates"},
        },
        "additionalProperties": False,
    },
    "EmptyRequest": {"type": "object", "maxProperties": 0, "additionalProperties": False},
}

# --------------------------------------------------------------------------------------------- responses
JOB = _open(
    {
        "id": {"type": "string"},
        "kind": {"type": "string"},
        "status": {"type": "string", "enum": ["queued", "running", "succeeded", "failed"]},
        "createdAt": {"type": "string"},
        "updatedAt": {"type": "string"},
        "result": {},
        "error": {},
        "heartbeatAgeS": {"type": "number"},
    },
    ["id", "status"],
)
_MODEL_SUMMARY = _open(
    {
        "name": {"type": "string"},
        "status": {"type": "string"},
        "publishedVersion": _NULLABLE_INT,
        "latestVersion": _NULLABLE_INT,
        "autoRetrain": {"type": "boolean"},
        "readiness": _NULLABLE_STR,
        "auc": _NULLABLE_NUM,
        "canRevert": {"type": "boolean"},
    },
    ["name", "status"],
)

RESPONSE_SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": {
        "type": "object",
        "properties": {
            "error": _open(
                {
                    "code": {"type": "string", "description": "e.g. InvalidField, ModelNotFound, MalformedJson"},
                    "message": {"type": "string", "description": "what was wrong, naming the field or value"},
                    "field": {"type": "string"},
                    "details": {},
                    "requestId": {"type": "string"},
                },
                ["code", "message"],
            )
        },
        "required": ["error"],
        "additionalProperties": True,
    },
    "Health": _open(
        {
            "status": {"type": "string", "enum": ["ok", "degraded", "misconfigured"]},
            "versions": {"type": "object", "additionalProperties": {"type": "string"}},
            "services": {"type": "object"},
            "models": {"type": "object"},
            "settings": _STRINGS,
        },
        ["status", "versions"],
    ),
    "Job": JOB,
    "Accepted": _open({"job": JOB}, ["job"], description="202: poll `Location` (`/api/jobs/{id}`)"),
    "ModelList": _open(
        {
            "models": {"type": "array", "items": _MODEL_SUMMARY},
            "count": {"type": "integer"},
            "limit": {"type": "integer"},
        },
        ["models", "count", "limit"],
    ),
    "Model": _open(
        {
            **_MODEL_SUMMARY["properties"],
            "configuration": {"type": "object"},
            "versions": {"type": "array", "items": _open({"version": {"type": "integer"}, "auc": _NULLABLE_NUM})},
            "createdAt": _NULLABLE_STR,
            "createdBy": _NULLABLE_STR,
            "previousVersion": _NULLABLE_INT,
            "drift": {
                "type": ["object", "null"],
                "additionalProperties": True,
                "description": "the published version's latest drift, measured by the last full scoring run (null "
                "before one): alert, earlyRetrain, message, reasons, drifted and moderate attributes, score PSI, "
                "realized performance of records closed since, the PSI of every attribute, thresholds",
            },
        },
        ["name", "status", "configuration", "versions"],
    ),
    "ModelDeleted": _open({"model": {"type": "string"}, "deleted": {"type": "boolean"}}, ["model", "deleted"]),
    "Published": _open({"model": {"type": "string"}, "published": _NULLABLE_INT}, ["model"]),
    "Reverted": _open({"model": {"type": "string"}, "currentVersion": _NULLABLE_INT}, ["model"]),
    "Performance": _open(
        {
            "model": {"type": "string"},
            "version": {"type": "integer"},
            "readiness": _NULLABLE_STR,
            "metrics": _open({"auc": _NULLABLE_NUM, "brier": _NULLABLE_NUM, "ece": _NULLABLE_NUM}),
            "choice": _open(
                {
                    "candidate": _NULLABLE_STR,
                    "candidates": {
                        "type": "object",
                        "description": "per candidate: validationAuc, behindBest (AUC lag behind the best), "
                        "standardError (bootstrap SE of that lag), iterations",
                    },
                    "calibration": {"type": "object", "description": "method, fittedOn, trials"},
                }
            ),
            "published": {"type": "boolean"},
            "segments": _open(
                {
                    "available": {"type": "boolean"},
                    "minClosed": {"type": "integer", "description": "fewer closed records: the segment is small"},
                    "segments": {
                        "type": "object",
                        "description": "owner, stage, region and the chosen column: per value its closed, won, "
                        "lost, wonRate, meanScore, auc (null with one outcome), ece and small",
                        "additionalProperties": {"type": "array", "items": _open({"small": {"type": "boolean"}})},
                    },
                },
                ["available"],
            ),
        },
        ["model", "version", "metrics"],
    ),
    # Insights: what impacts scores in this org (`topAttributes`), attribute influence (global, per stage, per
    # value); more fields may follow.
    "Insights": _open(
        {
            "model": {"type": "string"},
            "version": {"type": "integer"},
            "topAttributes": {
                "type": "array",
                "items": _open({}),
                "description": "mean contribution in points, the values that raise and lower scores most, a sentence",
            },
            "insights": {"type": "object"},
        },
        ["model", "version", "insights"],
    ),
    # The console's Activity page: monthly scoring usage, the last sync's report, the last scoring runs' reports.
    "Activity": _open(
        {
            "usage": _open(
                {
                    "limit": {"type": ["integer", "null"]},
                    "counted": {"type": "boolean"},
                    "thisMonth": {"type": "object"},
                    "months": {"type": "array", "items": {"type": "object"}},
                },
                ["counted", "months"],
            ),
            "lastSync": {"type": ["object", "null"]},
            "scoringRuns": {"type": "array", "items": {"type": "object"}},
        },
        ["usage", "lastSync", "scoringRuns"],
    ),
    "AuditPage": _open(
        {
            "model": {"type": "string"},
            "entries": {"type": "array", "items": {"type": "object"}},
            "next": _NULLABLE_STR,
        },
        ["model"],
    ),
    "Scores": _open(
        {"scores": {"type": "array", "items": {"type": "object"}}},
        description="200 for a handful of listed ids, scored and written in-process",
    ),
    # The current score row of one opportunity, decoded, with its history and last change; more may follow.
    "OpportunityScore": _open(
        {
            "opportunityId": {"type": "string"},
            "score": _NULLABLE_INT,
            "grade": {"type": ["string", "null"], "enum": ["A", "B", "C", "D", None]},
            "gradeValue": _NULLABLE_INT,
            "trend": _NULLABLE_STR,
            "trendValue": _NULLABLE_INT,
            "scoredOn": _NULLABLE_STR,
            "model": _NULLABLE_STR,
            "reasons": {},
            "history": {
                "type": "array",
                "items": _open({}),
                "description": "the score over time, oldest first (date, writtenAt, score, grade, model)",
            },
            "lastChange": {
                "type": ["object", "null"],
                "additionalProperties": True,
                "description": "what moved the score at its last change (null before a second score)",
            },
        },
        ["opportunityId", "score"],
    ),
    # The last backtest of a model (modeling/backtest.py): one line per cut date and the medians.
    "Backtest": _open(
        {
            "model": {"type": "string"},
            "ranAt": {"type": "string"},
            "cutDates": _STRINGS,
            "months": {
                "type": "array",
                "items": _open(
                    {
                        "cutDate": {"type": "string"},
                        "status": {"type": "string", "enum": ["evaluated", "skipped"]},
                        "reason": {"type": "object", "description": "why a month could not be trained"},
                        "trainedRows": {"type": "integer"},
                        "scoredRows": {"type": "integer", "description": "open on the cut date, as scored"},
                        "closedSince": {"type": "integer", "description": "of those, won or lost since"},
                        "stillOpen": {"type": "integer"},
                        "auc": _NULLABLE_NUM,
                        "ece": _NULLABLE_NUM,
                        "wonRate": _NULLABLE_NUM,
                        "meanPredicted": _NULLABLE_NUM,
                        "topDecileLift": _NULLABLE_NUM,
                    },
                    ["cutDate", "status"],
                ),
            },
            "summary": _open({"medianAuc": _NULLABLE_NUM, "medianEce": _NULLABLE_NUM}),
            "running": {"type": ["object", "null"], "description": "a backtest queued or running now"},
        },
        ["model", "months", "summary"],
    ),
    "OpenApiDocument": _open({"openapi": {"type": "string"}, "paths": {"type": "object"}}, ["openapi", "paths"]),
}

SCHEMAS: dict[str, dict[str, Any]] = {**REQUEST_SCHEMAS, **RESPONSE_SCHEMAS}
