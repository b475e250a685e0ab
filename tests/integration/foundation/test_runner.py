"""The local runner over real HTTP, and its queue polling against Azurite."""

import json
import threading
import time
import urllib.error
import urllib.request

import azure.functions as func
import pytest

from connectors.queues import queue_client
from local_runner.runner import Host

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
