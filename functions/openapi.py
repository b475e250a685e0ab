"""GET /api/openapi.json (anonymous): the OpenAPI 3.1 description, built from the route table (functions/api.py)."""

from __future__ import annotations

import functools
import json

import azure.functions as func

from functions import api

bp = func.Blueprint()


@functools.cache
def _document_bytes() -> bytes:
    return json.dumps(api.document(), indent=1).encode()


@api.route(bp, "openapi_document")
def openapi_document(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(_document_bytes(), status_code=200, mimetype="application/json")
