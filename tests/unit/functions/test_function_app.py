"""The app's own functions through get_user_function() with real azure.functions request objects."""

import json

import azure.functions as func
import pytest

from functions.app_context import set_context
from functions.settings import get_settings
from tests.conftest import registry


def test_every_function_has_a_unique_name_and_a_trigger():
    names = list(registry())
    assert len(names) == len(set(names))
    for f in registry().values():
        bindings = json.loads(f.get_function_json())["bindings"]
        assert any(b["type"].endswith("Trigger") for b in bindings)


def test_schedules_are_settings_not_literals():
    for f in registry().values():
        for b in json.loads(f.get_function_json())["bindings"]:
            if b["type"] == "timerTrigger":
                assert b["schedule"].startswith("%") and b["schedule"].endswith("%"), f.get_function_name()


def test_unknown_route_is_a_json_404():
    fn = registry()["not_found"].get_user_function()
    req = func.HttpRequest("GET", "http://localhost/api/nope", route_params={"path": "nope"}, body=b"")
    resp = fn(req)
    assert resp.status_code == 404
    assert json.loads(resp.get_body())["error"]["code"] == "RouteNotFound"


def test_health_names_missing_settings(monkeypatch):
    for name in ("AzureWebJobsStorage", "DATAVERSE_URL", "DATAVERSE_TENANT_ID", "DATAVERSE_CLIENT_ID"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    set_context(None)
    try:
        resp = registry()["health"].get_user_function()(
            func.HttpRequest("GET", "http://localhost/api/health", body=b"")
        )
        body = json.loads(resp.get_body())
        assert resp.status_code == 503 and body["status"] == "misconfigured"
        assert any("DATAVERSE_URL" in p for p in body["settings"])
        assert body["versions"]["azure-functions"].startswith("1.26")
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize("job_id", ["../../etc/passwd", "no-such-job"])
def test_job_lookup_rejects_unknown_ids(job_id):
    from connectors.jobs import JobNotFound, JobStore

    class FakeBlobs:
        def read(self, path):
            return None

    with pytest.raises(JobNotFound):
        JobStore(FakeBlobs()).get(job_id)  # type: ignore[arg-type]
