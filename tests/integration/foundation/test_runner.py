"""The local runner over real HTTP, and its queue polling against Azurite."""

import http.client
import json
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import azure.functions as func
import pytest

from connectors.queues import queue_client
from local_runner.runner import Host, serve

pytestmark = pytest.mark.integration


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def test_health_over_http_reaches_storage_and_dataverse(runner):
    status, body = _get(runner.url + "/api/health")
    assert status == 200, body
    assert body["services"]["storage"]["reachable"] is True
    assert body["services"]["dataverse"]["reachable"] is True, body["services"]["dataverse"]


def test_unknown_route_over_http_is_json_404(runner):
    status, body = _get(runner.url + "/api/definitely/not/a/route")
    assert status == 404 and body["error"]["code"] == "RouteNotFound"


def test_admin_endpoint_lists_and_rejects_unknown_functions(runner):
    status, body = _get(runner.url + "/admin/functions")
    assert status == 200 and any(f["name"] == "health" for f in body)
    req = urllib.request.Request(runner.url + "/admin/functions/no_such_fn", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 404


def test_queue_trigger_runs_retries_and_poisons(azurite, monkeypatch):
    monkeypatch.setenv("AzureWebJobsStorage", azurite.connection_string)
    seen: list[tuple[str, int]] = []
    done = threading.Event()
    app = func.FunctionApp()

    @app.queue_trigger(arg_name="msg", queue_name="runner-test", connection="AzureWebJobsStorage")
    def worker(msg: func.QueueMessage) -> None:
        body = json.loads(msg.get_body())
        seen.append((body["kind"], msg.dequeue_count))
        if body["kind"] == "bad":
            if msg.dequeue_count >= 2:
                done.set()
            raise RuntimeError("boom")

    host = Host(app, max_dequeue_count=2, visibility_timeout=1, poll_interval=0.2, batch_size=2)
    client = queue_client(azurite.connection_string, "runner-test")
    client.send_message(json.dumps({"kind": "good"}).encode())
    client.send_message(json.dumps({"kind": "bad"}).encode())
    host.run_queues()
    try:
        assert done.wait(30), seen
        poison = queue_client(azurite.connection_string, "runner-test-poison")
        deadline = time.monotonic() + 10
        msgs = []
        while not msgs and time.monotonic() < deadline:
            msgs = list(poison.receive_messages())
            time.sleep(0.2)
        assert [json.loads(m.content) for m in msgs] == [{"kind": "bad"}]
        assert ("good", 1) in seen and ("bad", 1) in seen and ("bad", 2) in seen
    finally:
        host.stop()


def test_long_running_queue_function_is_not_delivered_twice(azurite, monkeypatch):
    monkeypatch.setenv("AzureWebJobsStorage", azurite.connection_string)
    seen: list[bytes] = []
    done = threading.Event()
    app = func.FunctionApp()

    @app.queue_trigger(arg_name="msg", queue_name="runner-slow", connection="AzureWebJobsStorage")
    def slow(msg: func.QueueMessage) -> None:
        seen.append(msg.get_body())
        time.sleep(3.5)  # well past the 1 s visibility timeout
        done.set()

    host = Host(app, max_dequeue_count=3, visibility_timeout=1, poll_interval=0.2, batch_size=2)
    queue_client(azurite.connection_string, "runner-slow").send_message(b'{"n": 1}')
    host.run_queues()
    try:
        assert done.wait(30)
        time.sleep(2.5)
        assert seen == [b'{"n": 1}']
    finally:
        host.stop()


# ---- the HTTP layer answers as the Functions host does (issue 12, "The local runner") ----------------


def _exchange(url: str, raw: bytes, timeout: float = 20) -> tuple[int, dict[str, str], dict, bool]:
    """Send raw bytes; the parsed answer (status, headers, JSON body) and whether the server then closed."""
    parts = urllib.parse.urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(raw)
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        body = resp.read()
        headers = {k.lower(): v for k, v in resp.getheaders()}
        sock.settimeout(1.0)  # a kept-alive connection stays open; a closed one reads b"" at once
        try:
            closed = sock.recv(1) == b""
        except TimeoutError:
            closed = False
        except ConnectionError:
            closed = True
    return resp.status, headers, json.loads(body) if body else {}, closed


def _request(method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"] + [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@pytest.mark.parametrize("method", ["FOO", "DELETE", "PUT", "OPTIONS"])
def test_a_method_a_route_does_not_take_is_json_405_with_allow(runner, method):
    status, headers, body, _ = _exchange(runner.url, _request(method, "/api/health"))
    assert status == 405 and headers["allow"] == "GET", (status, headers, body)
    assert body["error"]["code"] == "MethodNotAllowed" and headers["content-type"].startswith("application/json")
    status, headers, body, _ = _exchange(runner.url, _request(method, "/api/models/M/train"))
    assert status == 405 and headers["allow"] == "POST", body


def test_an_unknown_method_on_no_route_is_the_json_404(runner):
    status, _, body, _ = _exchange(runner.url, _request("BREW", "/api/coffee"))
    assert status == 404 and body["error"]["code"] == "RouteNotFound"


@pytest.mark.parametrize(("length", "status"), [("abc", 400), ("-5", 400), ("1, 2", 400), ("99999999999", 413)])
def test_a_bad_or_oversized_content_length_is_a_json_error_and_the_connection_closes(runner, length, status):
    got, headers, body, closed = _exchange(
        runner.url, _request("POST", "/admin/functions/no_such_fn", {"Content-Length": length})
    )
    assert got == status, body
    assert body["error"]["code"] == ("PayloadTooLarge" if status == 413 else "BadRequest")
    assert headers["connection"] == "close" and closed
    if status == 413:
        assert "104,857,600" in body["error"]["message"]


def test_connection_close_is_echoed_and_honoured(runner):
    status, headers, body, closed = _exchange(runner.url, _request("GET", "/api/health", {"Connection": "close"}))
    assert status == 200 and headers["connection"] == "close" and closed, headers
    status, headers, _, closed = _exchange(runner.url, _request("GET", "/api/health"))
    assert status == 200 and "connection" not in headers and not closed  # keep-alive by default


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        (_request("GET", "/api/jobs/" + "x" * 5000), 414, "UriTooLong"),
        (_request("GET", "/api/health", {"X-Big": "v" * 70_000}), 431, "RequestHeaderFieldsTooLarge"),
        (b"GARBAGE\r\n\r\n", 400, "BadRequest"),
        (_request("GET", "/api/health").replace(b"HTTP/1.1", b"HTTP/3.0"), 505, "HttpVersionNotSupported"),
        (_request("POST", "/api/sync", {"Transfer-Encoding": "gzip"}), 400, "BadRequest"),
    ],
)
def test_malformed_requests_get_json_errors(runner, raw, status, code):
    got, headers, body, _ = _exchange(runner.url, raw)
    assert got == status and body["error"]["code"] == code, body
    assert headers["content-type"].startswith("application/json")


@pytest.fixture(scope="module")
def echo_server():
    """serve() with a 1 s request timeout around a small app (real HTTP, no storage needed)."""
    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @app.route(route="echo", methods=["POST"])
    def echo(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse(json.dumps({"bytes": len(req.get_body())}), mimetype="application/json")

    server, host = serve(app, port=0, timers=False, queues=False, request_timeout=1.0)
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        host.stop()
        server.shutdown()
        server.server_close()


def test_a_body_shorter_than_its_content_length_times_out_with_408(echo_server):
    started = time.monotonic()
    status, headers, body, closed = _exchange(
        echo_server, _request("POST", "/api/echo", {"Content-Length": "10"}, b"abc")
    )
    assert status == 408 and body["error"]["code"] == "RequestTimeout", body
    assert headers["connection"] == "close" and closed
    assert time.monotonic() - started < 10


def test_a_stalled_request_line_is_dropped_after_the_timeout(echo_server):
    parts = urllib.parse.urlsplit(echo_server)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(b"POST /api/ec")
        started = time.monotonic()
        assert sock.recv(100) == b""  # closed by the server, not left hanging
        assert time.monotonic() - started < 8


def test_a_chunked_body_is_read(echo_server):
    raw = _request("POST", "/api/echo", {"Transfer-Encoding": "chunked"}, b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n")
    status, _, body, _ = _exchange(echo_server, raw)
    assert status == 200 and body == {"bytes": 7}
