"""GET /api/jobs/{id}: status of a long operation; and the JSON 404 for unknown routes."""

from __future__ import annotations

import azure.functions as func

from functions.app_context import get_context
from functions.http import error_response, handle_errors, json_response
from functions.services.jobs import get_job as job_of

bp = func.Blueprint()


@bp.function_name("get_job")
@bp.route(route="jobs/{id}", methods=["GET"])
@handle_errors
def get_job(req: func.HttpRequest) -> func.HttpResponse:
    return json_response(job_of(get_context(), req.route_params.get("id", "")))


@bp.function_name("not_found")
@bp.route(route="{*path}", auth_level=func.AuthLevel.ANONYMOUS)
def not_found(req: func.HttpRequest) -> func.HttpResponse:
    path = req.route_params.get("path", "")
    return error_response(404, "RouteNotFound", f"no route {req.method} /api/{path}; see README 'HTTP API'")
