"""GET /api/health (anonymous): liveness, versions, and which services answer."""

from __future__ import annotations

import platform
import time
from importlib import metadata
from typing import Any

import azure.functions as func

from functions.api import route
from functions.app_context import get_context
from functions.http import json_response
from functions.services import scoring
from functions.settings import SettingsError

bp = func.Blueprint()

APP_VERSION = "0.1.0"
_PACKAGES = ("azure-functions", "scikit-learn", "onnxruntime", "skl2onnx", "msal", "azure-storage-blob", "pyarrow")


def _versions() -> dict[str, str]:
    versions = {"app": APP_VERSION, "python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "missing"
    return versions


def _probe(check: Any) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        detail = check()
        return {"reachable": True, "ms": round((time.perf_counter() - started) * 1000), **(detail or {})}
    except Exception as exc:  # noqa: BLE001 - health reports, never raises
        return {"reachable": False, "error": f"{type(exc).__name__}: {exc}"[:300]}


@route(bp, "health")
def health(req: func.HttpRequest) -> func.HttpResponse:
    body: dict[str, Any] = {"status": "ok", "versions": _versions(), "services": {}}
    try:
        ctx = get_context()
    except SettingsError as exc:
        body["status"] = "misconfigured"
        body["settings"] = exc.problems
        return json_response(body, status=503)
    body["services"]["storage"] = _probe(lambda: {"container": ctx.lake_container.get_container_properties().name})
    body["services"]["dataverse"] = _probe(lambda: {"userId": ctx.dataverse.who_am_i().get("UserId")})
    models = _probe(lambda: scoring.model_health(ctx))
    body["models"] = {k: v for k, v in models.items() if k not in ("reachable", "ms")}
    if not all(s["reachable"] for s in body["services"].values()) or models.get("broken"):
        body["status"] = "degraded"  # a service does not answer, or a published model cannot be loaded
    return json_response(body)
