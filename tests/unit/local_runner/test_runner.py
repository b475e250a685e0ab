import json
import os

import azure.functions as func
import pytest

from local_runner.runner import Host, compile_route, load_local_settings, resolve_setting


def _app() -> func.FunctionApp:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @app.route(route="items/{id}", methods=["GET"])
    def get_item(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse(json.dumps({"id": req.route_params["id"], "q": req.params.get("q")}))

    @app.route(route="items/special", methods=["GET"])
    def special(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("special")

    @app.route(route="n/{count:int}", methods=["GET"])
    def by_int(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse(req.route_params["count"])

    @app.route(route="{*path}")
    def fallback(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("fallback:" + req.route_params.get("path", ""), status_code=404)

    @app.timer_trigger(schedule="%TEST_SCHEDULE%", arg_name="timer")
    def tick(timer) -> None:
        calls.append(("tick", timer.past_due))

    @app.queue_trigger(arg_name="msg", queue_name="q1", connection="AzureWebJobsStorage")
    def work(msg: func.QueueMessage) -> None:
        calls.append(("work", msg.get_body().decode()))

    return app


calls: list = []


@pytest.fixture(scope="module")
def host() -> Host:
    return Host(_app())


def test_route_templates():
    rx, _ = compile_route("models/{name}/train", "api")
    assert rx.match("/api/models/m1/train").groupdict() == {"name": "m1"}
    assert not rx.match("/api/models/m1/train/x")
    rx, _ = compile_route("x/{id?}", "api")
    assert rx.match("/api/x") and rx.match("/api/x/5")


def test_specific_route_beats_parameter_and_catch_all(host):
    assert host.dispatch_http("GET", "/api/items/special", {}, b"", "http://h").get_body() == b"special"
    body = json.loads(host.dispatch_http("GET", "/api/items/42?q=a%20b", {}, b"", "http://h").get_body())
    assert body == {"id": "42", "q": "a b"}
    assert host.dispatch_http("GET", "/api/nothing/here", {}, b"", "http://h").get_body() == b"fallback:nothing/here"


def test_int_constraint_and_methods(host):
    assert host.dispatch_http("GET", "/api/n/12", {}, b"", "http://h").get_body() == b"12"
    # /api/n/abc fails the int constraint and lands on the catch-all
    assert host.dispatch_http("GET", "/api/n/abc", {}, b"", "http://h").status_code == 404


def test_timer_and_queue_invocation(host, monkeypatch):
    calls.clear()
    host.invoke("tick")
    host.invoke("work", "hello")
    assert calls == [("tick", False), ("work", "hello")]
    with pytest.raises(ValueError):
        host.invoke("get_item")


def test_resolve_setting(monkeypatch):
    monkeypatch.setenv("TEST_SCHEDULE", "0 */5 * * * *")
    assert resolve_setting("%TEST_SCHEDULE%") == "0 */5 * * * *"
    with pytest.raises(KeyError, match="NOPE"):
        resolve_setting("%NOPE%")


def test_local_settings_do_not_override_environment(tmp_path):
    path = tmp_path / "local.settings.json"
    path.write_text(json.dumps({"Values": {"A_SETTING": "file", "B_SETTING": "file"}}))
    env = {"A_SETTING": "env"}
    load_local_settings(path, env)
    assert env == {"A_SETTING": "env", "B_SETTING": "file"}
    assert os.environ.get("B_SETTING") is None
