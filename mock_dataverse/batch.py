"""OData `$batch`: multipart/mixed (CRLF) with atomic change sets, Content-ID references,
`odata.continue-on-error`, at most 1,000 operations and per-part status codes."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qsl, unquote, urlsplit

from . import errors as E
from .api import Api, Request, Response
from .control import Stats
from .errors import DataverseError

MAX_OPERATIONS = 1000
BOUNDARY_RE = re.compile(r'boundary="?([^";,\s]+)"?', re.I)


@dataclass
class Part:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    content_id: str | None = None


@dataclass
class ChangeSet:
    parts: list[Part] = field(default_factory=list)


def _split(body: bytes, boundary: str) -> list[bytes]:
    delim = b"--" + boundary.encode()
    chunks = body.split(delim)
    if len(chunks) < 2:
        raise DataverseError(
            400, E.PAYLOAD_ERROR, "The batch request body has no part with the declared boundary."
        )
    out = []
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            break
        out.append(chunk[2:] if chunk.startswith(b"\r\n") else chunk.lstrip(b"\n"))
    return out


def _headers(block: bytes) -> dict[str, str]:
    out = {}
    for line in block.decode("utf-8", "replace").split("\r\n"):
        if ":" in line:
            k, _, v = line.partition(":")
            out[k.strip().lower()] = v.strip()
    return out


def _parse_part(chunk: bytes) -> Part | ChangeSet:
    head, sep, rest = chunk.partition(b"\r\n\r\n")
    if not sep:
        raise DataverseError(400, E.PAYLOAD_ERROR, "Stream was not readable.")
    mime = _headers(head)
    ctype = mime.get("content-type", "")
    if ctype.startswith("multipart/mixed"):
        m = BOUNDARY_RE.search(ctype)
        if not m:
            raise DataverseError(400, E.PAYLOAD_ERROR, "The change set has no boundary.")
        cs = ChangeSet()
        for sub in _split(rest, m.group(1)):
            p = _parse_part(sub)
            if isinstance(p, ChangeSet):
                raise DataverseError(400, E.PAYLOAD_ERROR, "Change sets cannot be nested.")
            cs.parts.append(p)
        return cs
    inner_head, _, body = rest.partition(b"\r\n\r\n")
    lines = inner_head.decode("utf-8", "replace").split("\r\n")
    request_line = lines[0].split(" ")
    if len(request_line) < 2:
        raise DataverseError(400, E.PAYLOAD_ERROR, f"Invalid request line in batch part: '{lines[0]}'.")
    body = body[:-2] if body.endswith(b"\r\n") else body
    return Part(
        request_line[0].upper(),
        request_line[1],
        _headers("\r\n".join(lines[1:]).encode()),
        body.strip(),
        mime.get("content-id"),
    )


def _relative(url: str, content_ids: dict[str, str]) -> tuple[str, dict[str, str]]:
    """Inner request URL -> (path after /api/data/v9.2/, query dict); resolves `$n` references."""
    if url.startswith("$"):
        ref, _, tail = url.partition("/")
        if ref not in content_ids:
            raise DataverseError(
                400, E.GENERIC, f"Content-ID Reference: '{ref}' does not exist in the batch context."
            )
        url = content_ids[ref] + ("/" + tail if tail else "")
    split = urlsplit(url)
    path = unquote(split.path)
    path = re.sub(r"^.*?/api/data/v\d+\.\d+/", "", path).lstrip("/")
    return path, dict(parse_qsl(split.query, keep_blank_values=True))


def _render(resp: Response, content_id: str | None = None) -> str:
    lines = ["Content-Type: application/http", "Content-Transfer-Encoding: binary"]
    if content_id is not None:
        lines.append(f"Content-ID: {content_id}")
    lines += ["", f"HTTP/1.1 {resp.status} {HTTPStatus(resp.status).phrase}"]
    lines += [f"{k}: {v}" for k, v in resp.headers.items()]
    lines += ["", resp.body.decode("utf-8", "replace")]
    return "\r\n".join(lines)


def handle_batch(api: Api, req: Request, stats: Stats) -> Response:
    try:
        return _handle(api, req, stats)
    except DataverseError as err:
        return Response.error(err)


def _handle(api: Api, req: Request, stats: Stats) -> Response:
    if req.method != "POST":
        raise DataverseError(405, "", "The $batch endpoint only accepts POST.")
    m = BOUNDARY_RE.search(req.headers.get("content-type", ""))
    if not req.headers.get("content-type", "").startswith("multipart/mixed") or not m:
        raise DataverseError(
            400, E.PAYLOAD_ERROR, "The $batch request must have Content-Type multipart/mixed with a boundary."
        )
    if b"\n" in req.body and b"\r\n" not in req.body:
        raise DataverseError(
            400, E.PAYLOAD_ERROR, "Stream was not readable. (batch lines must end with CRLF)"
        )
    items = [_parse_part(c) for c in _split(req.body, m.group(1))]
    n_ops = sum(len(i.parts) if isinstance(i, ChangeSet) else 1 for i in items)
    if n_ops > MAX_OPERATIONS:
        raise DataverseError(
            400,
            E.GENERIC,
            f"The number of requests in the batch ({n_ops}) exceeds the maximum of {MAX_OPERATIONS}.",
        )
    continue_on_error = "odata.continue-on-error" in req.headers.get("prefer", "")
    boundary = f"batchresponse_{uuid.uuid4()}"
    content_ids: dict[str, str] = {}
    out: list[str] = []
    failed = False
    with stats.lock:
        stats.batch_requests += 1
        stats.batch_parts += n_ops

    def run(p: Part, in_changeset: bool) -> Response:
        headers = {k: v for k, v in req.headers.items() if k in ("authorization", "prefer")}
        headers.update(p.headers)
        if in_changeset and p.method == "GET":
            return Response.error(
                DataverseError(400, E.GENERIC, "GET requests are not allowed in a change set.")
            )
        try:
            path, query = _relative(p.url, content_ids)
        except DataverseError as err:
            return Response.error(err)
        if path == "$batch":
            return Response.error(DataverseError(400, E.GENERIC, "Nested $batch requests are not supported."))
        resp = api.handle(Request(p.method, path, query, headers, p.body, content_ids))
        with stats.lock:
            if resp.table:
                stats.by_table[resp.table][p.method] += 1
            if resp.write and resp.status < 400:
                stats.writes += 1
        if p.content_id is not None and resp.status < 400:
            loc = resp.headers.get("OData-EntityId") or resp.headers.get("Location")
            if loc is None and resp.body:
                try:
                    ctx = json.loads(resp.body)
                    set_name = path.split("(")[0]
                    table = api.org.table(api.org.by_set[set_name])
                    loc = f"{api.base}{set_name}({ctx[table.pk]})"
                except (ValueError, KeyError):
                    loc = None
            if loc:
                content_ids["$" + p.content_id] = loc
        return resp

    for item in items:
        if failed and not continue_on_error:
            break
        if isinstance(item, Part):
            resp = run(item, False)
            out.append(_render(resp, item.content_id))
            failed = failed or resp.status >= 400
            continue
        cs_boundary = f"changesetresponse_{uuid.uuid4()}"
        responses: list[tuple[Response, str | None]] = []
        error: tuple[Response, str | None] | None = None
        try:
            with api.org.transaction():
                for p in item.parts:
                    r = run(p, True)
                    if r.status >= 400:
                        error = (r, p.content_id)
                        raise _Abort()
                    responses.append((r, p.content_id))
        except _Abort:
            pass
        if error is not None:
            failed = True
            out.append(_render(error[0], error[1]))
            continue
        inner = "".join(f"--{cs_boundary}\r\n{_render(r, cid)}\r\n" for r, cid in responses)
        out.append(f"Content-Type: multipart/mixed; boundary={cs_boundary}\r\n\r\n{inner}--{cs_boundary}--")
    body = "".join(f"--{boundary}\r\n{part}\r\n" for part in out) + f"--{boundary}--\r\n"
    status = 400 if failed and not continue_on_error else 200
    resp = Response(
        status,
        body.encode(),
        {"Content-Type": f"multipart/mixed; boundary={boundary}", "OData-Version": "4.0"},
    )
    if continue_on_error:
        resp.headers["Preference-Applied"] = "odata.continue-on-error"
    resp.operations = n_ops  # each part is applied on its own: the cost model charges it as one operation
    return resp


class _Abort(Exception):
    pass
