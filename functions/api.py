"""The HTTP API's route table: the one place a route's function name, method, template, auth level,
parameters, body, responses and examples are written. Trigger modules register their HTTP functions with
`route(bp, name)`, which takes method, template and auth level from here; `document()` builds the OpenAPI
3.1 description served at `GET /api/openapi.json` from the same table, so the two cannot drift apart
(tests/unit/functions/test_openapi.py checks every registered route is described and vice versa).

Auth levels (README "Who may do what"): anonymous for health and this description; function keys for
reads (sellers' score lookups, job status, model views); the admin level (the host's master key or an
admin system key) for everything that changes state: sync, scoring runs and model administration.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import azure.functions as func

from functions.api_schemas import (
    AUDIT_CURSOR_PATTERN,
    GUID_PATTERN,
    JOB_ID_PATTERN,
    MODEL_NAME_PATTERN,
    SCHEMAS,
    SEGMENT_PATTERN,
    VERSION_MAX_LENGTH,
    VERSION_PATTERN,
)

ANONYMOUS, FUNCTION, ADMIN = func.AuthLevel.ANONYMOUS, func.AuthLevel.FUNCTION, func.AuthLevel.ADMIN
OPENAPI_VERSION = "3.1.0"
API_VERSION = "0.1.0"

# Error statuses: what each means on this API (the response description of each code).
ERROR_MEANINGS: dict[int, str] = {
    400: "bad input: the error names the field, value or header that was wrong",
    404: "no such model, version, job, score or backtest report",
    409: "conflict: see the error code (overlap, model limit, auto-retrain on, run in progress, registry busy)",
    412: "If-Match names an ETag the model no longer has",
    415: "the body was not sent as application/json",
    422: "not enough data to train: the error names the counts found and needed",
    503: "a service the app needs (storage, Dataverse) did not answer, or the settings are incomplete",
}


@dataclass(frozen=True)
class Operation:
    """One HTTP function: how it is registered and how it is described."""

    name: str
    method: str
    route: str
    auth: func.AuthLevel
    tag: str
    summary: str
    ok: Mapping[int, str]  # success status -> response schema name
    parameters: tuple[str, ...] = ()
    body: str | None = None  # request schema name
    body_required: bool = False
    errors: tuple[int, ...] = (400, 503)
    examples: Mapping[int, Any] = field(default_factory=dict)
    request_example: Any = None

    @property
    def path(self) -> str:
        return "/api/" + self.route


_JOB_EXAMPLE = {
    "job": {
        "id": "6f1c0d6e2b8a4f0e9d3c1b2a0f9e8d7c",
        "kind": "training",
        "status": "queued",
        "createdAt": "2026-12-01T09:30:00+00:00",
        "updatedAt": "2026-12-01T09:30:00+00:00",
        "result": None,
        "error": None,
    }
}
_OPP = "0b8f6a52-4c1e-4d8f-9a57-3e2f5c6d7a81"

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "health", "GET", "health", ANONYMOUS, "service", "liveness, versions, which services answer",
        {200: "Health"}, errors=(503,),
        examples={200: {"status": "ok", "versions": {"app": "0.1.0", "python": "3.11.7"}, "services": {}}},
    ),
    Operation(
        "openapi_document", "GET", "openapi.json", ANONYMOUS, "service", "this OpenAPI 3.1 description",
        {200: "OpenApiDocument"}, errors=(),
    ),
    Operation(
        "start_sync", "POST", "sync", ADMIN, "sync", "start an extraction from Dataverse into the lake (202 + job)",
        {202: "Accepted"}, body="SyncRequest", errors=(400, 409, 415, 503),
        request_example={"full": True}, examples={202: _JOB_EXAMPLE},
    ),
    Operation(
        "get_job", "GET", "jobs/{id}", FUNCTION, "jobs", "a long operation: queued, running, succeeded or failed",
        {200: "Job"}, parameters=("JobId",), errors=(400, 404, 503), examples={200: _JOB_EXAMPLE["job"]},
    ),
    Operation(
        "list_models", "GET", "models", FUNCTION, "models", "the models (at most 10), status and published version",
        {200: "ModelList"},
        examples={200: {"models": [{"name": "Pipeline", "status": "ready"}], "count": 1, "limit": 10}},
    ),
    Operation(
        "create_model", "POST", "models", ADMIN, "models", "create a model and start its training (202 + job)",
        {202: "Accepted"}, body="ModelConfiguration", body_required=True, errors=(400, 404, 409, 415, 422, 503),
        request_example={"name": "Pipeline", "trainingPeriod": "2y", "gradeRanges": [75, 50, 25]},
        examples={202: {**_JOB_EXAMPLE, "model": "Pipeline", "counts": {"won": 412, "lost": 655}}},
    ),
    Operation(
        "get_model", "GET", "models/{name}", FUNCTION, "models", "configuration, versions, published version, status",
        {200: "Model"}, parameters=("ModelName",), errors=(400, 404, 503),
    ),
    Operation(
        "edit_model", "PATCH", "models/{name}", ADMIN, "models", "edit attributes, grade ranges, auto-retrain",
        {200: "Model"}, parameters=("ModelName", "IfMatch"), body="ModelEdit", body_required=True,
        errors=(400, 404, 409, 412, 415, 503), request_example={"autoRetrain": False},
    ),
    Operation(
        "delete_model", "DELETE", "models/{name}", ADMIN, "models", "delete a model (409 while auto-retrain is on)",
        {200: "ModelDeleted"}, parameters=("ModelName",), errors=(400, 404, 409, 503),
        examples={200: {"model": "Pipeline", "deleted": True}},
    ),
    Operation(
        "train_model", "POST", "models/{name}/train", ADMIN, "models", "retrain now (202 + job)",
        {202: "Accepted"}, parameters=("ModelName",), body="EmptyRequest", errors=(400, 404, 409, 415, 422, 503),
    ),
    Operation(
        "publish_model", "POST", "models/{name}/publish", ADMIN, "models", "publish a version (default: latest)",
        {200: "Published"}, parameters=("ModelName", "Version"), body="PublishRequest",
        errors=(400, 404, 409, 415, 503), request_example={"version": 2},
    ),
    Operation(
        "revert_model", "POST", "models/{name}/revert", ADMIN, "models", "revert an unpublished retrain",
        {200: "Reverted"}, parameters=("ModelName",), body="EmptyRequest", errors=(400, 404, 409, 415, 503),
    ),
    Operation(
        "model_performance", "GET", "models/{name}/performance", FUNCTION, "models",
        "metrics of a version: AUC, Brier, ECE, calibration; precision/recall/F1 at the chosen threshold; "
        "AUC, calibration error and counts per owner, stage, region and a chosen column (`?segment=`)",
        {200: "Performance"}, parameters=("ModelName", "Version", "Segment"), errors=(400, 404, 503),
    ),
    Operation(
        "model_insights", "GET", "models/{name}/insights", FUNCTION, "models",
        "attribute influence: global, per stage, per value", {200: "Insights"},
        parameters=("ModelName", "Version"), errors=(400, 404, 503),
    ),
    Operation(
        "model_audit", "GET", "models/{name}/audit", FUNCTION, "models", "the model's audit trail, newest first, paged",
        {200: "AuditPage"}, parameters=("ModelName", "Limit", "Before"), errors=(400, 404, 503),
    ),
    Operation(
        "start_backtest", "POST", "models/{name}/backtest", ADMIN, "models",
        "replay past dates (default: the 12 months ending at the last full month): train as on each cut date, "
        "score what was open then, compare with how it ended (202 + job)",
        {202: "Accepted"}, parameters=("ModelName",), body="BacktestRequest", errors=(400, 404, 409, 415, 503),
        request_example={"from": "2025-01-01", "to": "2025-12-01"},
        examples={202: {**_JOB_EXAMPLE, "model": "Pipeline", "cutDates": ["2025-01-01", "2025-02-01"]}},
    ),
    Operation(
        "get_backtest", "GET", "models/{name}/backtest", FUNCTION, "models",
        "the model's last backtest report: per cut date AUC, ECE, won rate, mean score, top-decile lift; medians",
        {200: "Backtest"}, parameters=("ModelName",), errors=(400, 404, 503),
    ),
    Operation(
        "start_scoring", "POST", "score", ADMIN, "scoring",
        "score every eligible open opportunity (202 + job), listed ids (200 for up to 20), or resume a run",
        {200: "Scores", 202: "Accepted"}, body="ScoreRequest", errors=(400, 404, 409, 415, 503),
        request_example={"opportunityIds": [_OPP]},
    ),
    Operation(
        "get_opportunity_score", "GET", "opportunities/{id}/score", FUNCTION, "scoring",
        "the current score row of an opportunity, decoded (for the score card)", {200: "OpportunityScore"},
        parameters=("OpportunityId",), errors=(400, 404, 503),
        examples={
            200: {
                "opportunityId": _OPP, "score": 72, "grade": "B", "gradeValue": 1, "trend": "Improving",
                "trendValue": 0, "scoredOn": "2026-12-01", "model": "Pipeline@3", "reasons": {"positive": []},
                "history": [{"date": "2026-12-01", "score": 72, "grade": "B", "model": "Pipeline@3"}],
                "lastChange": None,
            }
        },
    ),
    Operation(
        "get_activity", "GET", "activity", FUNCTION, "service",
        "the console's Activity page: monthly scoring usage, the last sync's report, the last scoring runs",
        {200: "Activity"}, errors=(503,),
    ),
)

# The catch-all (JSON 404, or 405 + Allow for a known path) is registered here too but not described:
# it is the absence of a route.
CATCH_ALL = "not_found"
BY_NAME: dict[str, Operation] = {op.name: op for op in OPERATIONS}


@dataclass(frozen=True)
class StaticFiles:
    """A route serving files (not JSON, so not in the API description), registered from this table too."""

    name: str
    method: str
    route: str
    auth: func.AuthLevel


# the admin console's page, script and style (functions/console.py): anonymous, it holds no secret
STATIC: dict[str, StaticFiles] = {"console": StaticFiles("console", "GET", "console/{*path}", ANONYMOUS)}

PARAMETERS: dict[str, dict[str, Any]] = {
    "ModelName": {
        "name": "name", "in": "path", "required": True, "description": "letters, digits and _ (1 to 100)",
        "schema": {"type": "string", "pattern": MODEL_NAME_PATTERN}, "example": "Pipeline",
    },
    "JobId": {
        "name": "id", "in": "path", "required": True, "description": "a job id as a 202 returned it",
        "schema": {"type": "string", "pattern": JOB_ID_PATTERN}, "example": "6f1c0d6e2b8a4f0e9d3c1b2a0f9e8d7c",
    },
    "OpportunityId": {
        "name": "id", "in": "path", "required": True, "description": "the opportunity's GUID",
        "schema": {"type": "string", "pattern": GUID_PATTERN}, "example": _OPP,
    },
    "Version": {
        "name": "version", "in": "query", "required": False, "description": "default: published, else latest",
        "schema": {"type": "string", "pattern": VERSION_PATTERN, "maxLength": VERSION_MAX_LENGTH}, "example": "2",
    },
    "Segment": {
        "name": "segment", "in": "query", "required": False,
        "description": "also group the test records by this opportunity column (or account.<column>); 400 "
        "InvalidSegment naming it when the synced tables have no such column",
        "schema": {"type": "string", "pattern": SEGMENT_PATTERN, "maxLength": 100}, "example": "budgetstatus",
    },
    "Limit": {
        "name": "limit", "in": "query", "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
    },
    "Before": {
        "name": "before", "in": "query", "required": False, "description": "the `next` cursor of the previous page",
        "schema": {"type": "string", "pattern": AUDIT_CURSOR_PATTERN},
    },
    "IfMatch": {
        "name": "If-Match", "in": "header", "required": False,
        "description": "`*` or the ETag GET returned (412 when it changed)", "schema": {"type": "string"},
    },
}

SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "functionKey": {
        "type": "apiKey", "in": "header", "name": "x-functions-key",
        "description": "a function key (or the `code` query parameter): reads",
    },
    "functionKeyQuery": {"type": "apiKey", "in": "query", "name": "code", "description": "a function key"},
    "adminKey": {
        "type": "apiKey", "in": "header", "name": "x-functions-key",
        "description": "the host's master key or an admin-level system key: changes state",
    },
}
_SECURITY: dict[func.AuthLevel, list[dict[str, list[str]]]] = {
    ANONYMOUS: [],
    FUNCTION: [{"functionKey": []}, {"functionKeyQuery": []}, {"adminKey": []}],
    ADMIN: [{"adminKey": []}],
}

F = TypeVar("F", bound=Callable[..., Any])


def route(bp: func.Blueprint, name: str) -> Callable[[F], F]:
    """Register `fn` as the HTTP function `name` of the table (OPERATIONS or STATIC): its name, template,
    method and auth level."""
    op: Operation | StaticFiles = BY_NAME[name] if name in BY_NAME else STATIC[name]

    def register(fn: F) -> F:
        routed = bp.route(route=op.route, methods=[op.method], auth_level=op.auth)(fn)
        return bp.function_name(name)(routed)  # type: ignore[no-any-return]

    return register


def _template_regex(template: str) -> re.Pattern[str]:
    """`models/{name}` -> one segment per parameter; a trailing `/{*rest}` matches nothing or any rest."""
    head, star, _ = template.partition("/{*")
    parts = [r"[^/]+" if p.startswith("{") else re.escape(p) for p in head.split("/")]
    return re.compile("/".join(parts) + (r"(?:/.*)?" if star else ""))


_ROUTED: tuple[Operation | StaticFiles, ...] = (*OPERATIONS, *STATIC.values())
_TEMPLATES = [(_template_regex(op.route), op.method) for op in _ROUTED]


def allowed_methods(path: str) -> list[str]:
    """The methods the table serves at `path` (below `/api/`), sorted; [] for a path no route serves."""
    trimmed = path.strip("/")
    return sorted({method for regex, method in _TEMPLATES if regex.fullmatch(trimmed)})


def _response(schema: str, description: str, example: Any = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": {"$ref": f"#/components/schemas/{schema}"}}
    if example is not None:
        media["example"] = example
    return {"description": description, "content": {"application/json": media}}


def _operation(op: Operation) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, schema in op.ok.items():
        description = {200: "OK", 202: "accepted: poll Location"}[status]
        responses[str(status)] = _response(schema, description, op.examples.get(status))
        if status == 202:
            responses[str(status)]["headers"] = {
                "Location": {"description": "/api/jobs/{id}", "schema": {"type": "string"}}
            }
    for status in op.errors:
        responses[str(status)] = _response("Error", ERROR_MEANINGS[status])
    doc: dict[str, Any] = {
        "operationId": op.name,
        "summary": op.summary,
        "tags": [op.tag],
        "security": _SECURITY[op.auth],
        "x-auth-level": op.auth.value.lower(),
        "responses": responses,
    }
    if op.parameters:
        doc["parameters"] = [{"$ref": f"#/components/parameters/{p}"} for p in op.parameters]
    if op.body:
        media: dict[str, Any] = {"schema": {"$ref": f"#/components/schemas/{op.body}"}}
        if op.request_example is not None:
            media["example"] = op.request_example
        doc["requestBody"] = {"required": op.body_required, "content": {"application/json": media}}
    return doc


def document(server_url: str = "/") -> dict[str, Any]:
    """The OpenAPI 3.1 description of every operation of the table."""
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Predictive opportunity scoring for Dataverse",
            "version": API_VERSION,
            "description": (
                "Errors are `{\"error\": {\"code\", \"message\"}}`; bad input is a 4xx naming what was wrong. "
                "Host limits: 413 over 100 MB of body, 414 over 4,096 characters of URL, 431 for oversized "
                "headers, 408 for a stalled body; 405 with `Allow` for a method a route does not take. "
                "With App Service authentication (Entra ID) enabled, callers also sign in; the principal "
                "(`X-MS-CLIENT-PRINCIPAL`) is recorded in the audit log."
            ),
        },
        "servers": [{"url": server_url}],
        "paths": paths,
        "components": {"schemas": SCHEMAS, "parameters": PARAMETERS, "securitySchemes": SECURITY_SCHEMES},
    }
