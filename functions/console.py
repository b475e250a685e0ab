"""GET /api/console: the admin console, static files (no server-side rendering) from `console/`. The page
calls the product's own HTTP API with the function key the admin types in; it holds no secret itself, so
its files are served anonymously. GET /api/activity: what its Activity page shows (usage, last runs)."""

from __future__ import annotations

import re
from pathlib import Path

import azure.functions as func

from functions.api import route
from functions.app_context import get_context
from functions.http import error_response, handle_errors, json_response
from functions.services.activity import activity as activity_of

bp = func.Blueprint()

FOLDER = Path(__file__).resolve().parents[1] / "console"
TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
_FILE = re.compile(r"[a-z][a-z0-9_-]{0,60}\.(?:html|js|css)")
# The page may talk to its own origin only; no inline script, no framing by other sites.
SECURITY = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


@route(bp, "console")
def console(req: func.HttpRequest) -> func.HttpResponse:
    path = req.route_params.get("path") or ""
    if not path and req.url.split("?", 1)[0].endswith("/"):
        return func.HttpResponse(status_code=308, headers={"Location": "../console"})  # assets are console/<file>
    name = path or "index.html"
    file = FOLDER / name
    if not _FILE.fullmatch(name) or not file.is_file():
        return error_response(404, "RouteNotFound", f"no console file {name[:100]!r}; open /api/console")
    return func.HttpResponse(file.read_bytes(), status_code=200, mimetype=TYPES[file.suffix], headers=SECURITY)


@route(bp, "get_activity")
@handle_errors
def get_activity(req: func.HttpRequest) -> func.HttpResponse:
    return json_response(activity_of(get_context()))
