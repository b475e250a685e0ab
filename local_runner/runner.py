"""Serve a v2-programming-model function app locally, the way Azure Functions Core Tools does.

- loads `local.settings.json` Values into the environment (variables already set win, so CI and scripts
  can override a value);
- serves every HTTP-triggered function on 127.0.0.1:7071 under the host's route prefix (`api`) with
  route parameters (`{x}`, `{x:int}`, `{x?}`, `{*rest}`), specific routes before catch-alls;
- runs timer triggers on their NCRONTAB schedules (6 fields, `%SETTING%` resolved from the environment);
- polls Azurite queues for queue-triggered functions, retries failures up to host.json's
  `maxDequeueCount` and then moves the message to `<queue>-poison`, like the host;
- fires any function through `POST /admin/functions/{name}` with `{"input": "..."}`, as Core Tools does.

It dispatches to the functions the app registered (`app.get_functions()`), so nothing is declared twice.
Function keys are not checked (Core Tools does not check them locally either).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import importlib
import inspect
import json
import logging
import os
import re
import signal
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import azure.functions as func
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest

log = logging.getLogger("local_runner")
_JSON = {"Content-Type": "application/json; charset=utf-8"}


def message_body(content: Any) -> bytes:
    """A queue message's bytes, whether the client decoded the base64 already or not."""
    if isinstance(content, bytes):
        return content
    try:
        return base64.b64decode(content, validate=True)
    except (ValueError, TypeError):
        return str(content).encode()


def settle(
    queue: Any,
    poison: Any,
    msg: Any,
    invoke: Callable[[QueueMessage], Any],
    *,
    max_dequeue: int,
    retry_after: int | None = None,
) -> BaseException | None:
    """Deliver one received message as the Functions host does: run `invoke`; on success delete the
    message; on failure leave it for a retry (visible again after `retry_after` s, or when its
    visibility lapses) or, once it was dequeued `max_dequeue` times, move it to the poison queue.
    Returns the failure (None on success). The local runner, tests and benchmarks all drain queues so."""
    qm = QueueMessage(
        id=msg.id, body=message_body(msg.content), pop_receipt=msg.pop_receipt, dequeue_count=msg.dequeue_count
    )
    try:
        invoke(qm)
    except Exception as exc:  # noqa: BLE001 - retried, then poisoned, like the host
        if msg.dequeue_count >= max_dequeue:
            poison.send_message(msg.content)
            queue.delete_message(msg)
            log.error("message %s moved to the poison queue after %d attempts", msg.id, msg.dequeue_count)
        elif retry_after is not None:
            queue.update_message(msg, visibility_timeout=retry_after)
        return exc
    queue.delete_message(msg)
    return None


def load_local_settings(path: Path, environ: dict[str, str] | Any = os.environ) -> dict[str, str]:
    """Put the file's Values into the environment without overriding variables already set."""
    if not path.is_file():
        return {}
    values = json.loads(path.read_text()).get("Values", {})
    for key, value in values.items():
        if key not in environ and value is not None:
            environ[key] = str(value)
    return {k: str(v) for k, v in values.items()}


def resolve_setting(value: str) -> str:
    """Expand `%NAME%` from the environment, as the host does for binding expressions."""

    def repl(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in os.environ:
            raise KeyError(f"app setting {name} (used as %{name}%) is not set")
        return os.environ[name]

    return re.sub(r"%([A-Za-z0-9_]+)%", repl, value)


@dataclass
class Route:
    pattern: re.Pattern[str]
    methods: set[str]
    function: Any
    arg_name: str
    specificity: tuple[int, int, int]
    template: str


def compile_route(template: str, prefix: str) -> tuple[re.Pattern[str], tuple[int, int, int]]:
    parts = [p for p in (prefix.strip("/") + "/" + template.strip("/")).split("/") if p]
    regex = ""
    literal = params = 0
    catch_all = 0
    for part in parts:
        m = re.fullmatch(r"\{(\*?)([A-Za-z_][A-Za-z0-9_]*)(?::([a-z]+))?(\?)?\}", part)
        if not m:
            regex += "/" + re.escape(part)
            literal += 1
            continue
        star, name, constraint, optional = m.groups()
        if star:
            regex += f"(?:/(?P<{name}>.*))?"
            catch_all = 1
        else:
            body = r"-?\d+" if constraint == "int" else r"[^/]+"
            regex += f"(?:/(?P<{name}>{body})){'?' if optional else ''}"
            params += 1
    return re.compile("^" + (regex or "/") + "/?$"), (-catch_all, literal, -params)


def _call(fn: Callable[..., Any], loop: asyncio.AbstractEventLoop, **kwargs: Any) -> Any:
    accepted = inspect.signature(fn).parameters
    if "context" in accepted and "context" not in kwargs:
        kwargs["context"] = None
    result = fn(**{k: v for k, v in kwargs.items() if k in accepted})
    if inspect.isawaitable(result):
        return asyncio.run_coroutine_threadsafe(result, loop).result()  # type: ignore[arg-type]
    return result


# The Functions host's HTTP limits (learn.microsoft.com "Azure Functions HTTP trigger", Limits): request bodies
# up to 100 MB, URLs up to 4 KB. The socket timeout stands in for Kestrel's request timeouts.
MAX_BODY_BYTES = 104_857_600
MAX_URL_LENGTH = 4096
REQUEST_TIMEOUT_S = 30.0
_METHOD_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}")
_CONTROL = re.compile("[\x00-\x1f\x7f\x85\u2028\u2029]")
_ERROR_CODES = {
    400: "BadRequest",
    405: "MethodNotAllowed",
    408: "RequestTimeout",
    411: "LengthRequired",
    413: "PayloadTooLarge",
    414: "UriTooLong",
    431: "RequestHeaderFieldsTooLarge",
    501: "NotImplemented",
    505: "HttpVersionNotSupported",
}


def escape_controls(text: str) -> str:
    """`text` with control characters (newlines, NUL, ...) written as escapes, so it stays one log line."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


class OneLineFormatter(logging.Formatter):
    """Each record's message on one line: a newline or NUL a caller sent in a value cannot forge a log line
    (tracebacks, added after the message, keep their lines)."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        record.message = escape_controls(record.message)
        return super().formatMessage(record)


@dataclass
class Host:
    app: Any
    route_prefix: str = "api"
    max_dequeue_count: int = 5
    visibility_timeout: float = 30.0
    batch_size: int = 4
    poll_interval: float = 1.0
    max_body_bytes: int = MAX_BODY_BYTES
    max_url_length: int = MAX_URL_LENGTH
    request_timeout: float = REQUEST_TIMEOUT_S
    functions: dict[str, Any] = field(default_factory=dict)
    bindings: dict[str, dict[str, Any]] = field(default_factory=dict)
    routes: list[Route] = field(default_factory=list)
    stop_event: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="async-loop", daemon=True).start()
        for f in self.app.get_functions():
            name = f.get_function_name()
            self.functions[name] = f
            trigger = next(b for b in json.loads(f.get_function_json())["bindings"] if b["type"].endswith("Trigger"))
            self.bindings[name] = trigger
            if trigger["type"] == "httpTrigger":
                template = trigger.get("route") or name
                pattern, spec = compile_route(template, self.route_prefix)
                methods = {m.upper() for m in trigger.get("methods") or []}
                self.routes.append(Route(pattern, methods, f, trigger["name"], spec, template))
        self.routes.sort(key=lambda r: r.specificity, reverse=True)

    # ---- HTTP -------------------------------------------------------------------------------------
    def dispatch_http(
        self, method: str, raw_path: str, headers: dict[str, str], body: bytes, base: str
    ) -> func.HttpResponse:
        parsed = urllib.parse.urlsplit(raw_path)
        path = urllib.parse.unquote(parsed.path)
        params = dict(urllib.parse.parse_qsl(parsed.query, keep_blank_values=True))
        allowed: set[str] = set()
        for route in self.routes:
            m = route.pattern.fullmatch(path)
            if not m:
                continue
            if route.methods and method not in route.methods:
                allowed |= route.methods
                continue
            if allowed and route.specificity[0] < 0:
                break  # a route serves this path with other methods: 405, not the catch-all
            route_params = {k: v for k, v in m.groupdict().items() if v is not None}
            req = func.HttpRequest(
                method, base + raw_path, headers=headers, params=params, route_params=route_params, body=body
            )
            started = time.perf_counter()
            name = route.function.get_function_name()
            try:
                resp = _call(route.function.get_user_function(), self.loop, **{route.arg_name: req})
            except Exception:  # noqa: BLE001 - the host turns unhandled errors into 500
                log.exception("Executed 'Functions.%s' (Failed)", name)
                return func.HttpResponse(
                    json.dumps({"error": {"code": "InternalError", "message": f"function {name} failed"}}),
                    status_code=500,
                    mimetype="application/json",
                )
            log.info(
                "Executed 'Functions.%s' (%s) %s %r in %.0f ms",
                name,
                getattr(resp, "status_code", "?"),
                method,
                path,
                (time.perf_counter() - started) * 1000,
            )
            if not isinstance(resp, func.HttpResponse):
                return func.HttpResponse(
                    status_code=204 if resp is None else 200, body=b"" if resp is None else str(resp)
                )
            return resp
        if allowed:
            return func.HttpResponse(
                _error_json("MethodNotAllowed", f"{path} takes {', '.join(sorted(allowed))}, not {method}"),
                status_code=405,
                mimetype="application/json",
                headers={"Allow": ", ".join(sorted(allowed))},
            )
        return func.HttpResponse(
            _error_json("RouteNotFound", f"no function serves {method} {path}"),
            status_code=404,
            mimetype="application/json",
        )

    # ---- non-HTTP triggers ------------------------------------------------------------------------
    def invoke(self, name: str, payload: str | bytes | None = None) -> Any:
        """Run a timer or queue function once (the admin endpoint and the schedulers use this)."""
        f = self.functions[name]
        trigger = self.bindings[name]
        if trigger["type"] == "timerTrigger":
            arg: Any = TimerRequest(past_due=False)
        elif trigger["type"] == "queueTrigger":
            data = payload.encode() if isinstance(payload, str) else (payload or b"")
            arg = QueueMessage(id=f"admin-{time.time_ns()}", body=data, dequeue_count=1)
        else:
            raise ValueError(f"{name} is a {trigger['type']} function; call it over HTTP")
        started = time.perf_counter()
        try:
            result = _call(f.get_user_function(), self.loop, **{trigger["name"]: arg})
        except Exception:
            log.exception("Executed 'Functions.%s' (Failed)", name)
            raise
        log.info("Executed 'Functions.%s' (Succeeded) in %.0f ms", name, (time.perf_counter() - started) * 1000)
        return result

    def run_timers(self) -> list[threading.Thread]:
        from croniter import croniter

        threads = []
        for name, trigger in self.bindings.items():
            if trigger["type"] != "timerTrigger":
                continue
            try:
                schedule = resolve_setting(trigger["schedule"])
            except KeyError as exc:
                log.error("timer %s is not scheduled: %s", name, exc.args[0])
                continue
            itr = croniter(schedule, dt.datetime.now(dt.UTC), second_at_beginning=True)
            log.info("timer %s: schedule %r, next at %s", name, schedule, itr.get_next(dt.datetime))

            def loop(name: str = name, itr: Any = itr) -> None:
                next_at = itr.get_current(dt.datetime)
                while not self.stop_event.is_set():
                    wait = (next_at - dt.datetime.now(dt.UTC)).total_seconds()
                    if wait > 0 and self.stop_event.wait(min(wait, 1.0)):
                        return
                    if wait > 0:
                        continue
                    try:
                        self.invoke(name)
                    except Exception:  # noqa: BLE001 - logged in invoke; the timer keeps running
                        pass
                    next_at = itr.get_next(dt.datetime)

            t = threading.Thread(target=loop, name=f"timer-{name}", daemon=True)
            t.start()
            threads.append(t)
            if trigger.get("runOnStartup"):
                threading.Thread(target=self.invoke, args=(name,), daemon=True).start()
        return threads

    def run_queues(self) -> list[threading.Thread]:
        threads = []
        for name, trigger in self.bindings.items():
            if trigger["type"] != "queueTrigger":
                continue
            t = threading.Thread(target=self._poll_queue, args=(name, trigger), name=f"queue-{name}", daemon=True)
            t.start()
            threads.append(t)
        return threads

    def _poll_queue(self, name: str, trigger: dict[str, Any]) -> None:
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.queue import QueueClient

        try:
            queue_name = resolve_setting(trigger["queueName"]).lower()
        except KeyError as exc:
            log.error("queue function %s is not polled: %s", name, exc.args[0])
            return
        conn = os.environ.get(trigger.get("connection") or "AzureWebJobsStorage") or os.environ["AzureWebJobsStorage"]
        client = QueueClient.from_connection_string(conn, queue_name, api_version="2025-11-05")
        poison = QueueClient.from_connection_string(conn, queue_name + "-poison", api_version="2025-11-05")
        for c in (client, poison):
            try:
                c.create_queue()
            except ResourceExistsError:
                pass
        user_fn = self.functions[name].get_user_function()
        pool = ThreadPoolExecutor(max_workers=self.batch_size, thread_name_prefix=f"q-{name}")
        log.info("queue %s: polling %s", name, queue_name)

        def handle(msg: Any) -> None:
            started = time.perf_counter()
            finished = threading.Event()

            def keep_invisible() -> None:
                # Like the host: while the function runs, keep extending the message's invisibility so a
                # long job is not delivered a second time (the receipt is renewed on `msg` itself).
                while not finished.wait(max(0.5, self.visibility_timeout / 2)):
                    try:
                        msg.pop_receipt = client.update_message(
                            msg, visibility_timeout=int(self.visibility_timeout)
                        ).pop_receipt
                    except Exception as exc:  # noqa: BLE001 - the next attempt may still succeed
                        log.warning("queue %s: could not renew message %s: %s", queue_name, msg.id, exc)

            threading.Thread(target=keep_invisible, daemon=True).start()
            try:
                failure = settle(
                    client,
                    poison,
                    msg,
                    lambda qm: _call(user_fn, self.loop, **{trigger["name"]: qm}),
                    max_dequeue=self.max_dequeue_count,
                )
            finally:
                finished.set()
            if failure is not None:
                log.warning("Executed 'Functions.%s' (Failed, dequeue %d): %s", name, msg.dequeue_count, failure)
            else:
                log.info("Executed 'Functions.%s' (Succeeded) in %.0f ms", name, (time.perf_counter() - started) * 1000)

        while not self.stop_event.is_set():
            try:
                messages = list(
                    client.receive_messages(
                        max_messages=self.batch_size, visibility_timeout=int(self.visibility_timeout)
                    )
                )
            except Exception as exc:  # noqa: BLE001 - storage hiccup: log and keep polling
                log.warning("queue %s: receive failed: %s", queue_name, exc)
                messages = []
            if not messages:
                self.stop_event.wait(self.poll_interval)
                continue
            list(pool.map(handle, messages))

    def stop(self) -> None:
        self.stop_event.set()
        self.loop.call_soon_threadsafe(self.loop.stop)


class _Refused(Exception):
    """A request the runner answers itself (status, code, message), as the host's HTTP layer would."""

    def __init__(self, status: int, message: str, *, close: bool = False):
        super().__init__(message)
        self.status, self.message, self.close = status, message, close


def _error_json(code: str, message: str) -> str:
    return json.dumps({"error": {"code": code, "message": message}})


def make_handler(host: Host) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = host.request_timeout  # socket timeout: a stalled request line, header or body ends
        # (stdlib limits: request line 64 KiB -> 414, header line 64 KiB or 100 headers -> 431)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            log.debug(format, *args)

        def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for k, v in headers.items():
                if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
            """The stdlib's own refusals (bad request line, header limits), as JSON errors."""
            self.close_connection = True
            if self.request_version not in ("HTTP/1.0", "HTTP/1.1"):
                self.request_version = self.protocol_version  # answer with a status line even then
            phrase = self.responses.get(code, ("Error", ""))[0]
            text = message if message and message != phrase else (explain or phrase)
            self._send(code, _error_json(_ERROR_CODES.get(code, "Error"), text).encode(), _JSON)

        def handle_one_request(self) -> None:
            """Any method token goes to the routes (405 with Allow where a route takes other methods)."""
            try:
                self.raw_requestline = self.rfile.readline(65537)
                if len(self.raw_requestline) > 65536:
                    self.requestline = self.request_version = self.command = ""
                    self.send_error(414, f"the URL is longer than the host's limit of {host.max_url_length}")
                    return
                if not self.raw_requestline:
                    self.close_connection = True
                    return
                if not self.parse_request():
                    return  # parse_request answered (send_error)
                try:
                    self._handle()
                except _Refused as refused:
                    self.close_connection = self.close_connection or refused.close
                    body = _error_json(_ERROR_CODES.get(refused.status, "Error"), refused.message).encode()
                    self._send(refused.status, body, _JSON)
                self.wfile.flush()
            except TimeoutError:
                # The request line or headers stalled (a body that stalls is answered 408 in _read_body).
                self.close_connection = True
            except (ConnectionError, BrokenPipeError):
                self.close_connection = True

        def _read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding"):
                if self.headers["Transfer-Encoding"].strip().lower() != "chunked":
                    raise _Refused(400, "the only transfer coding accepted is chunked (as Kestrel)", close=True)
                return self._read_chunked()
            values = self.headers.get_all("Content-Length") or []
            if not values:
                return b""
            if len({v.strip() for v in values}) > 1 or not re.fullmatch(r"[0-9]{1,19}", values[0].strip()):
                shown = values[0][:40]
                raise _Refused(400, f"Content-Length must be one non-negative integer, got {shown!r}", close=True)
            length = int(values[0])
            if length > host.max_body_bytes:
                raise _Refused(
                    413, f"the body is {length:,} bytes; the host's limit is {host.max_body_bytes:,}", close=True
                )
            return self._read_exactly(length)

        def _read_exactly(self, length: int) -> bytes:
            try:
                body = self.rfile.read(length) if length else b""
            except TimeoutError:
                message = f"the body did not arrive within {host.request_timeout:g} s (Content-Length {length})"
                raise _Refused(408, message, close=True) from None
            if len(body) < length:
                raise _Refused(400, f"the body ended after {len(body)} of {length} bytes", close=True)
            return body

        def _read_chunked(self) -> bytes:
            chunks: list[bytes] = []
            total = 0
            while True:
                try:
                    line = self.rfile.readline(1026)
                except TimeoutError:
                    raise _Refused(408, "the chunked body stalled", close=True) from None
                size_text = line.split(b";", 1)[0].strip()
                if not re.fullmatch(rb"[0-9A-Fa-f]{1,16}", size_text):
                    raise _Refused(400, "malformed chunk size in a chunked body", close=True)
                size = int(size_text, 16)
                if size == 0:
                    while self.rfile.readline(65537).strip():  # trailers
                        pass
                    return b"".join(chunks)
                total += size
                if total > host.max_body_bytes:
                    message = f"the body is over the host's limit of {host.max_body_bytes:,} bytes"
                    raise _Refused(413, message, close=True)
                chunks.append(self._read_exactly(size))
                self._read_exactly(2)  # the CRLF after each chunk

        def _handle(self) -> None:
            if not _METHOD_TOKEN.fullmatch(self.command):
                raise _Refused(400, "the request method is not an HTTP token", close=True)
            if len(self.path) > host.max_url_length:
                message = f"the URL is {len(self.path):,} characters; the host's limit is {host.max_url_length:,}"
                raise _Refused(414, message, close=True)
            body = self._read_body()
            path = urllib.parse.urlsplit(self.path).path
            m = re.fullmatch(r"/admin/functions/([A-Za-z0-9_]+)", path)
            if m and self.command == "POST":
                return self._admin(m.group(1), body)
            if path in ("/admin/functions", "/admin/host/status") and self.command == "GET":
                data = (
                    {"state": "Running"}
                    if path.endswith("status")
                    else [{"name": n, "trigger": b["type"]} for n, b in host.bindings.items()]
                )
                return self._send(200, json.dumps(data).encode(), {"Content-Type": "application/json"})
            host_hdr = self.headers.get("Host", f"127.0.0.1:{self.server.server_address[1]}")
            resp = host.dispatch_http(
                self.command, self.path, {k: v for k, v in self.headers.items()}, body, f"http://{host_hdr}"
            )
            headers = dict(resp.headers)
            if resp.mimetype and "Content-Type" not in headers and "content-type" not in headers:
                headers["Content-Type"] = f"{resp.mimetype}; charset={resp.charset or 'utf-8'}"
            self._send(resp.status_code, resp.get_body() or b"", headers)

        def _admin(self, name: str, body: bytes) -> None:
            if name not in host.functions:
                return self._send(
                    404,
                    json.dumps(
                        {"error": {"code": "FunctionNotFound", "message": f"no function named {name}"}}
                    ).encode(),
                    {"Content-Type": "application/json"},
                )
            try:
                payload = json.loads(body or b"{}").get("input")
            except (ValueError, AttributeError, RecursionError):
                return self._send(
                    400,
                    b'{"error":{"code":"BadRequest","message":"body must be {\\"input\\": ...}"}}',
                    {"Content-Type": "application/json"},
                )
            if host.bindings[name]["type"] == "httpTrigger":
                return self._send(
                    400,
                    json.dumps(
                        {"error": {"code": "BadRequest", "message": f"{name} is HTTP-triggered; call its route"}}
                    ).encode(),
                    {"Content-Type": "application/json"},
                )
            threading.Thread(target=lambda: _swallow(host.invoke, name, payload), daemon=True).start()
            self._send(202, b"", {})

    return Handler


def _swallow(fn: Callable[..., Any], *args: Any) -> None:
    try:
        fn(*args)
    except Exception:  # noqa: BLE001 - already logged by Host.invoke
        pass


def serve(
    app: Any,
    *,
    port: int = 7071,
    timers: bool = True,
    queues: bool = True,
    host_json: Path | None = None,
    request_timeout: float = REQUEST_TIMEOUT_S,
    max_body_bytes: int = MAX_BODY_BYTES,
    max_url_length: int = MAX_URL_LENGTH,
) -> tuple[ThreadingHTTPServer, Host]:
    cfg = json.loads(host_json.read_text()) if host_json and host_json.is_file() else {}
    ext = cfg.get("extensions", {})
    qcfg = ext.get("queues", {})

    def seconds(value: str | None, default: float) -> float:
        if not value:
            return default
        h, m, s = value.split(":")
        return int(h) * 3600 + int(m) * 60 + float(s)

    host = Host(
        app,
        route_prefix=ext.get("http", {}).get("routePrefix", "api"),
        max_dequeue_count=int(qcfg.get("maxDequeueCount", 5)),
        visibility_timeout=max(1.0, seconds(qcfg.get("visibilityTimeout"), 30.0)),
        batch_size=int(qcfg.get("batchSize", 4)),
        poll_interval=min(2.0, seconds(qcfg.get("maxPollingInterval"), 1.0)),
        max_body_bytes=max_body_bytes,
        max_url_length=max_url_length,
        request_timeout=request_timeout,
    )
    server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(host))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    if timers:
        host.run_timers()
    if queues:
        host.run_queues()
    return server, host


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local_runner", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=7071)
    parser.add_argument("--app-dir", default=".", help="folder with function_app.py and host.json")
    parser.add_argument("--settings", default="local.settings.json")
    parser.add_argument("--no-timers", action="store_true", help="do not run timer schedules")
    parser.add_argument("--no-queues", action="store_true", help="do not poll queues")
    parser.add_argument(
        "--request-timeout",
        type=float,
        default=REQUEST_TIMEOUT_S,
        help="seconds a request line, header or body may stall before the connection ends (408 for a body)",
    )
    args = parser.parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    logging.getLogger("azure").setLevel(logging.WARNING)  # as host.json's Azure.Core/Azure.Storage levels
    app_dir = Path(args.app_dir).resolve()
    load_local_settings(app_dir / args.settings)
    sys.path.insert(0, str(app_dir))
    app = importlib.import_module("function_app").app
    server, host = serve(
        app,
        port=args.port,
        timers=not args.no_timers,
        queues=not args.no_queues,
        host_json=app_dir / "host.json",
        request_timeout=args.request_timeout,
    )
    url = f"http://127.0.0.1:{server.server_address[1]}"
    print(json.dumps({"url": url, "functions": sorted(host.functions)}), flush=True)
    log.info("serving %d functions on %s", len(host.functions), url)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    host.stop()
    server.shutdown()
    return 0
