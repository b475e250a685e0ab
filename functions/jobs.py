"""GET /api/jobs/{id}: status of a long operation; and the catch-all: 405 + Allow for a method a route of the
table does not take (the host's routing sends it here), else the JSON 404."""

from __future__ import annotations

import azure.functions as func

from functions.api import allowed_methods, route
from functions.app_context import get_context
from functions.http import error_response, handle_errors, json_response
from functions.services.jobs import get_job as job_of

bp = func.Blueprint()


@route(bp, "get_job")
@handle_errors
def get_job(req: func.HttpRequest) -> func.HttpResponse:
    return json_response(job_of(get_context(), req.route_params.get("id", "")))


@bp.function_name("not_found")
@bp.route(route="{*path}", auth_level=func.AuthLevel.ANONYMOUS)
def not_found(req: func.HttpRequest) -> func.HttpResponse:
    path = req.route_params.get("path", "")
    allowed = allowed_methods(path)
    if allowed:
        response = error_response(405, "MethodNotAllowed", f"/api/{path} takes {', '.join(allowed)}, not {req.method}")
        response.headers["Allow"] = ", ".join(allowed)
        return response
    return error_response(404, "RouteNotFound", f"no route {req.method} /api/{path}; see README 'HTTP API'")
