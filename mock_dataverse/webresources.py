"""Web resources as Dataverse serves them to a form: `GET /WebResources/<name>` answers the file of that
name from a folder (a solution's web resources, e.g. `solution/webresources/`), with its content type.

Only names made of path segments of letters, digits, `_`, `-` and `.` are served (no `..`, no hidden
files); anything else, or a name with no file, is Dataverse's 404."""

from __future__ import annotations

import re
from pathlib import Path

from . import errors as E
from .api import Response
from .errors import DataverseError

PREFIX = "/WebResources/"
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".htm": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".resx": "application/xml; charset=utf-8",
}


def serve(folder: Path | None, method: str, path: str) -> Response:
    """The web resource `path` (starting with PREFIX) from `folder`; 404 when absent or not servable."""
    name = path[len(PREFIX) :]
    segments = name.split("/")
    target = None
    if folder is not None and method in ("GET", "HEAD") and all(_SEGMENT.fullmatch(s) for s in segments):
        candidate = folder.joinpath(*segments)
        if candidate.suffix.lower() in TYPES and candidate.is_file():
            target = candidate
    if target is None:
        return Response.error(DataverseError(404, E.SEGMENT_NOT_FOUND, f"Web resource not found: {name[:200]}"))
    return Response(
        200,
        target.read_bytes(),
        {"Content-Type": TYPES[target.suffix.lower()], "Cache-Control": "no-cache"},
    )
