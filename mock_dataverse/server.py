"""HTTP(S) transport of the mock: token service, Web API (auth, service protection, faults, stats),
control plane, and `MockServer`, the in-process handle used by tests and the CLI.

Standard library `ThreadingHTTPServer` + `ssl` (no web framework needed: the routing is the Web API's
own, and TLS is wrapped per connection in the handler thread so a slow handshake never blocks accept).
"""

from __future__ import annotations

import base64
import json
import logging
import shutil
import socket
import ssl
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from . import errors as E
from . import webresources
from .api import Api, Request, Response
from .auth import TokenService, make_certificate
from .batch import handle_batch
from .control import Faults, Stats
from .errors import DataverseError
from .generator import Generator, seed_org
from .protection import CostModel, ServiceProtection
from .sdkmessages import disable, seed_messages
from .store import Org

log = logging.getLogger("mock_dataverse")

DEFAULT_TENANT = "8f5e1a7c-2d4b-4e6a-9c3f-1b2d3e4f5a6b"
DEFAULT_CLIENT = "5b1c9d2e-7f3a-4b8c-9d0e-1f2a3b4c5d6e"
DEFAULT_SECRET = "mock-dataverse-secret"
API_PREFIXES = ("/api/data/v9.2/", "/api/data/v9.1/", "/api/data/v9.0/")


def default_now() -> datetime:
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    ssl_context: ssl.SSLContext | None = None
    mock: MockServer

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.ssl_context is not None:
            try:
                request.settimeout(30)
                request = self.ssl_context.wrap_socket(request, server_side=True)
                request.settimeout(None)
            except (ssl.SSLError, OSError) as exc:
                log.debug("TLS handshake failed from %s: %s", client_address, exc)
                return
        self.RequestHandlerClass(request, client_address, self)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection error from %s", client_address, exc_info=True)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug(format, *args)

    def date_time_string(self, timestamp: float | None = None) -> str:
        return format_datetime(self.server.mock.org.now(), usegmt=True)

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PATCH = do_DELETE = do_PUT = do_GET

    def _dispatch(self) -> None:
        mock = self.server.mock
        t0 = time.perf_counter()
        split = urlsplit(self.path)
        path = unquote(split.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            resp = mock.dispatch(self.command, path, split.query, headers, body)
        except Exception:  # noqa: BLE001 - a bug must never kill the server; answer 500 and log it
            log.exception("unhandled error for %s %s", self.command, path)
            resp = Response.error(DataverseError(500, "0x80040216", "An unexpected error occurred."))
        if resp is None:  # injected dropped connection
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self.send_response(resp.status)
        for k, v in resp.headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(resp.body)))
        self.send_header("x-ms-service-request-id", str(uuid.uuid4()))
        self.end_headers()
        if self.command != "HEAD" and resp.body:
            self.wfile.write(resp.body)
        log.debug(
            "%s %s -> %d in %.1f ms", self.command, path, resp.status, (time.perf_counter() - t0) * 1000
        )


class MockServer:
    """A mock Dataverse org served over HTTPS (or HTTP) on a background thread."""

    def __init__(
        self,
        seed: int = 7,
        opportunities: int = 2000,
        port: int = 0,
        https: bool = True,
        import_file: str | Path | None = None,
        mapping: str | Path | dict[str, Any] | None = None,
        token_ttl: int = 3600,
        now: datetime | str | None = None,
        host: str = "127.0.0.1",
        tenant_id: str = DEFAULT_TENANT,
        client_id: str = DEFAULT_CLIENT,
        client_secret: str = DEFAULT_SECRET,
        rate_limit: int = 6000,
        rate_window: float = 300.0,
        execution_limit_ms: int = 1_200_000,
        concurrency_limit: int = 52,
        dop_hint: int = 4,
        cost_sleep: bool = False,
        webresources: str | Path | None = None,
    ):
        self.seed, self.opportunities, self.port, self.https, self.host = (
            seed,
            opportunities,
            port,
            https,
            host,
        )
        self.import_file, self.mapping = import_file, mapping
        self.webresources = Path(webresources) if webresources is not None else None
        if isinstance(now, str):
            now = datetime.fromisoformat(now.replace("Z", "+00:00"))
        self.start_now = (now or default_now()).astimezone(UTC)
        self.tokens = TokenService(tenant_id, client_id, client_secret, token_ttl)
        self.faults = Faults()
        self.stats = Stats()
        self.protection = ServiceProtection(rate_limit, rate_window, execution_limit_ms, concurrency_limit, dop_hint)
        self.cost_sleep = cost_sleep
        self.cost = CostModel(sleep=cost_sleep)
        self.generator: Generator | None = None
        self.import_report: dict[str, Any] | None = None
        self._lock = threading.RLock()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._tmp: Path | None = None
        self.info: dict[str, str] = {}
        self.org = self._build_org()
        self.api: Api | None = None

    # -- org -------------------------------------------------------------------------------------------
    def _build_org(self) -> Org:
        t0 = time.perf_counter()
        org = Org(self.start_now)
        seed_messages(org)
        if self.import_file is not None or self.mapping is not None:
            from .importer import import_csv  # local: pandas is only needed for imports

            gen = Generator(org, self.seed, self.start_now)
            gen.base()
            self.import_report = import_csv(org, gen, self.import_file, self.mapping)
            self.generator = gen
        else:
            self.generator = seed_org(org, self.seed, self.opportunities, self.start_now)
        log.info(
            "org ready: %d opportunities, %d accounts in %.2f s",
            len(org.data["opportunity"].rows),
            len(org.data["account"].rows),
            time.perf_counter() - t0,
        )
        return org

    def reset(self) -> None:
        with self._lock:
            org = self._build_org()
            self.org = org
            if self.api is not None:
                self.api.org = org
                self.api._cursors.clear()
            self.faults = Faults()
            self.stats.reset()
            self.protection.reset()
            self.cost = CostModel(sleep=self.cost_sleep)

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> dict[str, str]:
        httpd = _HTTPServer((self.host, self.port), Handler)
        httpd.mock = self
        port = httpd.server_address[1]
        scheme = "https" if self.https else "http"
        self._tmp = Path(tempfile.mkdtemp(prefix="mock_dataverse_"))
        ca_cert = ""
        if self.https:
            ca, cert, key = make_certificate(self._tmp)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert, key)
            httpd.ssl_context = ctx
            ca_cert = str(ca)
        url = f"{scheme}://127.0.0.1:{port}"
        self.url = url
        self.api = Api(self.org, url + "/api/data/v9.2/")
        self.info = {
            "url": url,
            "api": url + "/api/data/v9.2/",
            "authority": f"{url}/{self.tokens.tenant_id}",
            "tenant_id": self.tokens.tenant_id,
            "client_id": self.tokens.client_id,
            "client_secret": self.tokens.client_secret,
            "resource": url,
            "ca_cert": ca_cert,
        }
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="mock-dataverse", daemon=True
        )
        self._thread.start()
        log.info("serving %s", url)
        return dict(self.info)

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> MockServer:
        if self._httpd is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- requests --------------------------------------------------------------------------------------
    def dispatch(
        self, method: str, path: str, query: str, headers: dict[str, str], body: bytes
    ) -> Response | None:
        if path.startswith("/api/data/"):
            return self._api(method, path, query, headers, body)
        if path.startswith("/_mock/"):
            return self._control(method, path, body)
        if path.startswith(webresources.PREFIX):
            return webresources.serve(self.webresources, method, path)
        return self._identity(method, path, headers, body)

    def _api(
        self, method: str, path: str, query: str, headers: dict[str, str], body: bytes
    ) -> Response | None:
        api = self.api
        assert api is not None
        prefix = next((p for p in API_PREFIXES if path.startswith(p)), None)
        rel = path[len(prefix) :] if prefix else path[len("/api/data/") :]
        table = api.table_of(rel)
        client, reason = self.tokens.check(headers.get("authorization"))
        try:
            if prefix is None:
                raise DataverseError(404, E.SEGMENT_NOT_FOUND, f"Resource not found for the segment '{rel}'.")
            if client is None:
                raise DataverseError(
                    401,
                    E.NOT_AUTHENTICATED,
                    reason,
                    {
                        "WWW-Authenticate": "Bearer authorization_uri="
                        f"{self.info['authority']}/oauth2/authorize, "
                        f"resource_id={self.url}"
                    },
                )
            faults = self.faults
            if faults.latency_ms:
                time.sleep(faults.latency_ms / 1000)
            kind = faults.draw(path, rel)
            if kind is not None:
                with self.stats.lock:
                    self.stats.faults_injected[kind] += 1
                if kind == "drop":
                    return None
                raise faults.error(kind)
            self.protection.enter(client)
        except DataverseError as err:
            resp = Response.error(err)
            self.stats.record(method, table, resp.status)
            return resp
        started, modelled = time.perf_counter(), 0.0
        try:
            q = dict(parse_qsl(query, keep_blank_values=True))
            req = Request(method, rel, q, headers, body)
            if rel == "$batch":
                resp = handle_batch(api, req, self.stats)
            else:
                with self._lock:
                    resp = api.handle(req)
            singles = resp.operations or (1 if resp.write and not resp.bulk_operations else 0)
            cost = self.cost
            modelled = cost.cost_ms(singles, resp.bulk_operations, resp.rows)
            spent = (time.perf_counter() - started) * 1000
            if cost.sleep and modelled > spent:
                time.sleep((modelled - spent) / 1000)
        finally:
            self.protection.leave(client, max(modelled, (time.perf_counter() - started) * 1000))
        self.stats.record(method, resp.table or table, resp.status, resp.write)
        self.stats.record_cost(modelled, resp.bulk_operations)
        resp.headers["x-ms-dop-hint"] = str(self.protection.dop_hint)
        resp.headers.update(self.protection.remaining(client))
        return resp

    def _identity(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Response:
        tenant = self.tokens.tenant_id
        base = self.url
        if method == "GET" and path in (
            f"/{tenant}/v2.0/.well-known/openid-configuration",
            f"/{tenant}/.well-known/openid-configuration",
        ):
            return Response.json(200, self.tokens.openid_configuration(base))
        if method == "GET" and path == "/common/discovery/instance":
            return Response.json(
                200,
                {
                    "tenant_discovery_endpoint": f"{base}/{tenant}/v2.0/.well-known/openid-configuration",
                    "api-version": "1.1",
                    "metadata": [],
                },
            )
        if method == "POST" and path in (f"/{tenant}/oauth2/v2.0/token", f"/{tenant}/oauth2/token"):
            with self.stats.lock:
                self.stats.token_requests += 1
            form = dict(parse_qsl(body.decode("utf-8", "replace")))
            basic = None
            auth = headers.get("authorization", "")
            if auth.lower().startswith("basic "):
                try:
                    cid, _, sec = base64.b64decode(auth[6:]).decode().partition(":")
                    basic = (unquote(cid), unquote(sec))
                except (ValueError, UnicodeDecodeError):
                    basic = None
            status, obj = self.tokens.issue(form, basic)
            return Response(
                status,
                json.dumps(obj).encode(),
                {"Content-Type": "application/json; charset=utf-8", "Cache-Control": "no-store"},
            )
        if method == "GET" and path == "/":
            return Response.json(200, {k: v for k, v in self.info.items() if k != "client_secret"})
        if path.startswith(f"/{tenant}/") or path.startswith("/common/"):
            return Response(
                400 if method == "POST" else 404,
                json.dumps(
                    {
                        "error": "invalid_request",
                        "error_description": f"AADSTS900561: The endpoint {path} is not "
                        "supported by the mock.",
                    }
                ).encode(),
                {"Content-Type": "application/json"},
            )
        return Response.json(
            404, {"error": {"code": E.SEGMENT_NOT_FOUND, "message": f"Resource not found: {path}"}}
        )

    def _control(self, method: str, path: str, body: bytes) -> Response:
        try:
            obj: Any = {}
            if body.strip():
                try:
                    obj = json.loads(body)
                except ValueError:
                    raise E.bad_request("The body must be JSON.") from None
            if method == "POST" and path == "/_mock/reset":
                self.reset()
                return Response.json(200, {"status": "reset", "now": self.org.now_iso()})
            if method == "POST" and path == "/_mock/faults":
                self.faults = Faults.parse(obj)
                return Response.json(200, self.faults.as_dict())
            if method == "GET" and path == "/_mock/faults":
                return Response.json(200, self.faults.as_dict())
            if method == "GET" and path == "/_mock/stats":
                return Response.json(200, self.stats.snapshot())
            if method == "POST" and path == "/_mock/stats/reset":
                self.stats.reset()
                return Response.json(200, self.stats.snapshot())
            if path in ("/_mock/cost", "/_mock/limits") and method in ("GET", "POST"):
                target = self.cost if path == "/_mock/cost" else self.protection
                if method == "POST":
                    target.update(obj)
                return Response.json(200, target.as_dict())
            if method == "POST" and path == "/_mock/messages":
                if not isinstance(obj, dict) or set(obj) != {"disable"}:
                    raise E.bad_request('The messages body is {"disable": ["table/Message", ...]}.')
                with self._lock:
                    return Response.json(200, {"disabled": disable(self.org, obj["disable"])})
            if method == "GET" and path == "/_mock/clock":
                return Response.json(200, {"now": self.org.now_iso()})
            if method == "POST" and path == "/_mock/simulate":
                from .simulate import simulate

                if not isinstance(obj, dict):
                    raise E.bad_request('The simulate body must be a JSON object like {"days": 7}.')
                with self._lock:
                    report = simulate(self.org, self.generator, obj)
                return Response.json(200, report)
            if method == "GET" and path == "/_mock/import":
                return Response.json(200, self.import_report or {})
            raise DataverseError(404, E.SEGMENT_NOT_FOUND, f"Unknown control endpoint {method} {path}.")
        except DataverseError as err:
            return Response.error(err)
