"""A bounded, seeded HTTP fuzzer of the function app over real HTTP (used by `bench.bench_fuzz` and by
tests/integration/foundation/test_fuzz.py).

Each request is drawn from one `random.Random(seed)`: a route of the app (every HTTP function, the catch-all
included), a method (mostly the route's own, sometimes another or an odd token), route parameter values
(valid ones, such as the model `M` the caller set up, and hostile ones: Unicode digits, controls, `..`,
percent-encodings, up to 3,000 characters), query parameters, headers (Content-Type, If-Match, Connection)
and a body (JSON close to what the route reads with one field mutated to another type, size or value,
deep nesting, invalid JSON, raw bytes). A few requests are raw bytes with broken framing (Content-Length,
chunked, request line). The contract checked: no answer is a 5xx, and every 4xx is a JSON error.
"""

from __future__ import annotations

import http.client
import json
import random
import re
import socket
import sys
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

GUID = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
METHODS = ("GET", "POST", "PATCH", "PUT", "DELETE", "HEAD", "OPTIONS")
ODD_METHODS = ("FOO", "PROPFIND", "get", "M-SEARCH", "TRACE")
# The fields each body route reads (so mutations reach the validation behind the parser).
FIELDS: dict[str, dict[str, Any]] = {
    "sync": {"full": True},
    "models": {"name": "Fz", "trainingPeriod": "1y", "gradeRanges": [75, 50, 25], "autoRetrain": False,
               "force": True, "attributes": ["budgetstatus"], "filterColumn": "new_region",
               "filterValues": ["North"], "perStage": False, "wonValues": ["Won"], "stateOptionSet": "statecode"},
    "models/{name}": {"gradeRanges": [80, 60, 30], "autoRetrain": False, "attributes": ["budgetstatus"],
                      "stageAttributes": {}},
    "models/{name}/publish": {"version": 1},
    "models/{name}/backtest": {"from": "2025-01-01", "to": "2025-06-01", "months": 6},
    "score": {"opportunityIds": [GUID]},
}
HOSTILE_TEXT = ["\u00b2", "\u0663", "Zed\n", "a\x00b", "..", "../../etc", "%00", "%0A", "a b", "x' or 1 eq 1",
                "\u202e", "\ud800", "", " ", "é", "😀", "-1", "0", "1e3", "0x10", "null", "[]", "*", "\r\n"]
CONTENT_TYPES = ["application/json", "application/json; charset=utf-8", "application/merge-patch+json",
                 "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=z",
                 "application/json; charset=latin-1", "application/jsonx", "", "*/*", "application/json;;;"]
_PARAM = re.compile(r"\{\*?([A-Za-z_]+)[^}]*\}")
IF_MATCH = ["*", '"0x8DCAFE"', '*, "a"', 'W/"a"', "a b", '"é"', "", '"a", "b"', '"' + "e" * 300 + '"']


@dataclass(frozen=True)
class Route:
    template: str  # as the app registered it, e.g. "models/{name}/performance"
    methods: tuple[str, ...]  # empty: every method (the catch-all)


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes | None
    route: str
    raw: bytes | None = None  # sent as is over a fresh socket

    def short(self) -> str:
        return f"{self.method} {self.path[:160]} headers={self.headers} body={(self.body or self.raw or b'')[:160]!r}"


@dataclass
class Report:
    requests: int = 0
    seconds: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)
    routes: Counter[str] = field(default_factory=Counter)
    route_seconds: Counter[str] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)  # 5xx (and dropped connections)
    non_json_errors: list[str] = field(default_factory=list)  # a 4xx without a JSON error body

    @property
    def failures(self) -> list[str]:
        return self.server_errors + self.non_json_errors


def http_routes(functions: Iterable[Any]) -> list[Route]:
    """The app's HTTP routes from its registered functions (`app.get_functions()` or a cached registry)."""
    out = []
    for f in functions:
        for b in json.loads(f.get_function_json())["bindings"]:
            if b["type"] == "httpTrigger":
                methods = tuple(m.upper() for m in b.get("methods") or ())
                out.append(Route(b.get("route") or f.get_function_name(), methods))
    return sorted(out, key=lambda r: (r.template, r.methods))


class Generator:
    """Seeded requests; `known` are the valid route values the caller set up (model, job id, ...)."""

    def __init__(self, routes: list[Route], seed: int, known: dict[str, list[str]]):
        self.routes, self.rng, self.known = routes, random.Random(seed), known

    # ---- values
    def text(self) -> str:
        r = self.rng
        kind = r.random()
        if kind < 0.4:
            return r.choice(HOSTILE_TEXT)
        if kind < 0.6:
            return "".join(chr(r.choice([r.randint(32, 126), r.randint(0, 0x2FFF), r.randint(0, 31)]))
                           for _ in range(r.randint(1, 20)))
        if kind < 0.8:
            return r.choice("aZ9_-x") * r.choice([64, 65, 100, 101, 1000, 3000])
        return r.choice(["M", "Fz", GUID, GUID.upper(), "Deals_2025", "OpportunityScoring_202612010000"])

    def scalar(self) -> Any:
        r = self.rng
        return r.choice([
            None, True, False, 0, -1, 1, 2, 3, 100, 101, 10**20, -(10**30), 1.5, -0.0, 1e308, 2**53 + 1,
            self.text(), [], {}, [self.text()], {"min": 75, "max": 100}, "1", "²",
        ])

    def value(self, depth: int = 0) -> Any:
        r = self.rng
        if depth > 3 or r.random() < 0.6:
            return self.scalar()
        if r.random() < 0.5:
            return [self.value(depth + 1) for _ in range(r.randint(0, 4))]
        return {self.text(): self.value(depth + 1) for _ in range(r.randint(0, 3))}

    def route_value(self, name: str) -> str:
        r = self.rng
        if r.random() < 0.45 and self.known.get(name):
            return r.choice(self.known[name])
        return self.text()

    # ---- bodies
    def body(self, template: str) -> bytes | None:
        r = self.rng
        kind = r.random()
        base = dict(FIELDS.get(template, {}))
        if kind < 0.12:
            return None
        if kind < 0.55 and base:  # the route's own fields, one or two mutated or dropped, maybe an extra
            for _ in range(r.randint(1, 2)):
                if not base:
                    break
                key = r.choice(sorted(base))
                if r.random() < 0.2:
                    base.pop(key)
                else:
                    base[key] = self.value()
            if r.random() < 0.15:
                base[self.text()] = self.value()
            return self.dump(base)
        if kind < 0.7:
            return self.dump({self.text(): self.value() for _ in range(r.randint(0, 3))})
        if kind < 0.78:  # deep nesting, closed or not
            depth = r.choice([31, 32, 33, 100, 999, 1001, 5000, 100_000])
            opener, closer = r.choice([(b"[", b"]"), (b'{"a":', b"}")])
            tail = closer * depth if r.random() < 0.5 else b""
            return opener * depth + (b"1" if opener != b"[" else b"") + tail
        if kind < 0.86:  # not JSON (or not standard JSON)
            return r.choice([b"{not json", b"[NaN]", b'{"gradeRanges": [Infinity, 50, 25]}', b"1e999", b"\xff\xfe",
                             b'"\\ud800"', b"\xef\xbb\xbf{}", b"{}" * 3, b"nul", b'{"a":1,}', b"-", b"  \n "])
        if kind < 0.93:
            return bytes(r.getrandbits(8) for _ in range(r.randint(1, 300)))
        return self.dump(self.value())  # any JSON value, maybe not an object; sometimes large
        # (sizes stay under 1 MB: the host's 100 MB limit is the runner tests' concern)

    def dump(self, value: Any) -> bytes:
        r = self.rng
        text = json.dumps(value, ensure_ascii=r.random() < 0.5)
        if r.random() < 0.03:
            text = json.dumps({"pad": "x" * r.choice([10_000, 200_000, 900_000]), "v": value})
        return text.encode("utf-8", "surrogatepass")

    # ---- requests
    def request(self) -> Request:
        r = self.rng
        if r.random() < 0.03:
            return self.raw()
        route = r.choice(self.routes)
        if route.methods and r.random() < 0.85:
            method = r.choice(route.methods)
        else:
            method = r.choice(METHODS + ODD_METHODS)
        own = method != "DELETE"  # the set-up model stays (deleting it would leave the rest at 404s)
        path = "/api/" + _PARAM.sub(lambda m: self.segment(str(m.group(1)), own), route.template)
        query: dict[str, str] = {}
        if r.random() < 0.5:
            query["version"] = self.rng.choice(["1", "2", "0", "-1", "²", "1" * 10, "1" * 3000, " 1", ""]) \
                if r.random() < 0.7 else self.text()
        if r.random() < 0.1:
            query[self.text()] = self.text()
        if query:
            path += "?" + urllib.parse.urlencode(query, errors="surrogatepass")
        headers: dict[str, str] = {}
        body = self.body(route.template) if method not in ("GET", "HEAD") or r.random() < 0.1 else None
        if body is not None or r.random() < 0.1:
            ct = "application/json" if r.random() < 0.7 else r.choice(CONTENT_TYPES)
            if ct:
                headers["Content-Type"] = ct
        if r.random() < 0.25:
            headers["If-Match"] = r.choice(IF_MATCH)
        if r.random() < 0.05:
            headers["Connection"] = "close"
        if r.random() < 0.05:
            headers["X-Fuzz"] = re.sub(r"[\r\n]", "", self.text().encode("utf-8", "replace").decode("latin-1"))[:200]
        return Request(method, path, headers, body, route.template)

    def segment(self, name: str, known: bool = True) -> str:
        value = self.route_value(name) if known else self.text()
        # the catch-all takes slashes; every value is percent-encoded (controls reach the app decoded)
        return urllib.parse.quote(value, safe="/" if name == "path" else "", errors="surrogatepass")

    def raw(self) -> Request:
        r = self.rng
        target = "/api/" + r.choice(["sync", "models", "models/M", "score", "health", "jobs/x"])
        framing = r.choice([
            f"POST {target} HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
            f"POST {target} HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            f"POST {target} HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n",
            f"POST {target} HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{{}}",
            f"POST {target} HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
            "2\r\n{}\r\n0\r\n\r\n",
            f"POST {target} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            f"POST {target} HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            f"{r.choice(ODD_METHODS)} {target} HTTP/1.1\r\n\r\n",
            f"GET {target} HTTP/1.x\r\n\r\n",  # (HTTP/2+ request lines get the host's 505: test_runner)
            "GARBAGE\r\n\r\n",
            f"GET /api/jobs/{'x' * 5000} HTTP/1.1\r\n\r\n",
            f"GET {target} HTTP/1.1\r\nX-Big: {'v' * 70_000}\r\n\r\n",
            f"GET {target} HTTP/1.1\r\n" + "".join(f"X-{i}: v\r\n" for i in range(120)) + "\r\n",
        ])
        raw = framing.encode("latin-1")
        return Request("RAW", target, {}, None, "(raw framing)", raw=raw)


class Client:
    """One keep-alive connection, reopened when the server closes it."""

    def __init__(self, url: str, timeout: float = 60.0):
        parts = urllib.parse.urlsplit(url)
        self.host, self.port, self.timeout = parts.hostname or "127.0.0.1", int(parts.port or 80), timeout
        self.conn: http.client.HTTPConnection | None = None

    def send(self, req: Request) -> tuple[int, dict[str, str], bytes]:
        if req.raw is not None:
            return self._raw(req.raw)
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request(req.method, req.path, body=req.body, headers=req.headers)
                resp = self.conn.getresponse()
                data = resp.read()
                headers = {k.lower(): v for k, v in resp.getheaders()}
                if resp.will_close:
                    self.close()
                return resp.status, headers, data
            except (ConnectionError, http.client.RemoteDisconnected, http.client.CannotSendRequest):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _raw(self, raw: bytes) -> tuple[int, dict[str, str], bytes]:
        with socket.create_connection((self.host, self.port), timeout=self.timeout) as sock:
            try:
                sock.sendall(raw)
            except ConnectionError:
                pass  # the server may answer and close before reading everything
            resp = http.client.HTTPResponse(sock)
            resp.begin()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def run(url: str, routes: list[Route], *, requests: int, seed: int, known: dict[str, list[str]]) -> Report:
    """Send `requests` generated requests to `url`; the statuses seen and every contract violation."""
    gen, client, report = Generator(routes, seed, known), Client(url), Report()
    started = time.perf_counter()
    try:
        for _ in range(requests):
            req = gen.request()
            report.routes[req.route] += 1
            sent = time.perf_counter()
            try:
                status, headers, data = client.send(req)
            except (OSError, http.client.HTTPException) as exc:
                report.server_errors.append(f"{type(exc).__name__}: {exc} <- {req.short()}")
                client.close()
                continue
            finally:
                report.route_seconds[req.route] += time.perf_counter() - sent
            report.requests += 1
            report.statuses[status] += 1
            if status >= 500:
                report.server_errors.append(f"{status} {data[:300]!r} <- {req.short()}")
            elif status >= 400 and req.method != "HEAD" and not _is_json_error(headers, data):
                report.non_json_errors.append(f"{status} {data[:300]!r} <- {req.short()}")
    finally:
        client.close()
    report.seconds = time.perf_counter() - started
    return report


def _is_json_error(headers: dict[str, str], data: bytes) -> bool:
    if not headers.get("content-type", "").startswith("application/json"):
        return False
    try:
        body = json.loads(data)
    except ValueError:
        return False
    return isinstance(body, dict) and isinstance(body.get("error"), dict) and isinstance(body["error"].get("code"), str)


def prepare(url: str, *, timeout: float = 300.0) -> dict[str, list[str]]:
    """Give the app something to find: a full sync and the trained model `M` (auto-retrain off). Needs a
    runner that polls its queues. Returns the valid route values for the generator."""
    client = Client(url, timeout=120)

    def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        status, _, raw = client.send(Request(method, path, headers, data, path))
        return status, json.loads(raw) if raw else None

    def wait(accepted: dict[str, Any]) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, job = call("GET", f"/api/jobs/{accepted['job']['id']}")
            if status == 200 and job["status"] in ("succeeded", "failed"):
                return dict(job)
            time.sleep(0.5)
        raise TimeoutError(f"job {accepted['job']['id']} did not end within {timeout:.0f} s")

    try:
        status, synced = call("POST", "/api/sync", {"full": True})
        if status != 202 or wait(synced)["status"] != "succeeded":
            raise RuntimeError(f"the set-up sync failed: {status} {synced}")
        status, created = call("POST", "/api/models", {"name": "M", "autoRetrain": False})
        if status != 202 or wait(created)["status"] != "succeeded":
            raise RuntimeError(f"the set-up training failed: {status} {created}")
    finally:
        client.close()
    return {"name": ["M"], "id": [synced["job"]["id"], created["job"]["id"], GUID], "path": ["x", "models/M/x"]}


@contextmanager
def prepared_runner(settings: dict[str, str], log_dir: str) -> Iterator[tuple[Any, dict[str, list[str]]]]:
    """A local runner on `settings` after `prepare` (done by a runner that polls its queues), which itself polls
    no queues and runs no timers, so the jobs generated requests start stay queued and a run is bounded.
    Yields (runner, the valid route values); both runners are stopped by PID however it ends."""
    from local_runner import stack

    setup = stack.start_runner(settings, log_path=f"{log_dir}/setup.log", extra_args=["--no-timers"])
    try:
        started = time.perf_counter()
        known = prepare(setup.url)
        sys.stderr.write(f"set up (sync + model M) in {time.perf_counter() - started:.1f} s\n")
    finally:
        setup.stop()
    target = stack.start_runner(settings, log_path=f"{log_dir}/runner.log", extra_args=["--no-timers", "--no-queues"])
    try:
        yield target, known
    finally:
        target.stop()
