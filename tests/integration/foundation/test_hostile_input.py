"""Issue 12, bad input and security: each reproducer over real HTTP through the local runner (Azurite + the
mock), on a module runner whose lake is synced and which holds one model `M`."""

from __future__ import annotations

import http.client
import json
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from local_runner import stack
from tests.integration.http import wait_job

pytestmark = pytest.mark.integration

JSON = {"Content-Type": "application/json"}
GUID = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"


class Api:
    """Requests with exactly the headers given (no client default Content-Type), JSON answers."""

    def __init__(self, url: str, log: Path):
        parts = urllib.parse.urlsplit(url)
        self.url = url
        self.host, self.port, self.log = parts.hostname or "127.0.0.1", int(parts.port or 80), log

    def raw(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        status, _, raw = self.raw(method, path, data, JSON if headers is None and data is not None else headers)
        return status, json.loads(raw) if raw else None

    def wait(self, job_id: str, timeout: float = 300) -> dict[str, Any]:
        return wait_job(self.url, job_id, timeout)


@pytest.fixture(scope="module")
def api(azurite, mock_info, tmp_path_factory) -> Any:
    settings = stack.unique_settings(azurite, mock_info, tag="h")
    log = tmp_path_factory.mktemp("hostile") / "runner.log"
    runner = stack.start_runner(settings, log_path=str(log), extra_args=["--no-timers"])
    try:
        client = Api(runner.url, log)
        status, accepted = client.call("POST", "/api/sync", {"full": True})
        assert status == 202, accepted
        assert client.wait(accepted["job"]["id"])["status"] == "succeeded"
        status, created = client.call("POST", "/api/models", {"name": "M", "autoRetrain": False})
        assert status == 202, created
        yield client
    finally:
        runner.stop()


def _error(status: int, body: Any, expected: int, code: str | None = None) -> dict[str, Any]:
    assert status == expected, body
    assert isinstance(body, dict) and "error" in body, body
    if code is not None:
        assert body["error"]["code"] == code, body
    return dict(body["error"])


BODY_ROUTES = [
    ("POST", "/api/sync"),
    ("POST", "/api/models"),
    ("PATCH", "/api/models/M"),
    ("POST", "/api/models/M/train"),
    ("POST", "/api/models/M/publish"),
    ("POST", "/api/models/M/revert"),
    ("POST", "/api/score"),
]


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
def test_json_nested_100000_deep_is_400(api, method, path):
    status, body = api.call(method, path, b"[" * 100_000)
    _error(status, body, 400, "MalformedJson")
    status, body = api.call(method, path, b'{"a":' * 5_000 + b"1" + b"}" * 5_000)
    assert "deep" in _error(status, body, 400, "MalformedJson")["message"]


@pytest.mark.parametrize("period", [[], {}, 3, None])
def test_training_period_of_the_wrong_type_is_400(api, period):
    status, body = api.call("POST", "/api/models", {"name": "r1", "trainingPeriod": period})
    assert _error(status, body, 400, "InvalidConfiguration")["field"] == "trainingPeriod"


@pytest.mark.parametrize("raw", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
def test_non_finite_grade_ranges_are_400_on_create_and_patch(api, raw):
    body = b'{"name": "g1", "gradeRanges": [' + raw + b", 50, 25]}"
    status, answer = api.call("POST", "/api/models", body)
    assert status == 400, answer
    status, answer = api.call("PATCH", "/api/models/M", b'{"gradeRanges": [' + raw + b", 50, 25]}")
    assert status == 400, answer


@pytest.mark.parametrize("version", ["%C2%B2", "%D9%A3", "1" * 4000, "1" * 10, "-1", "0", "1.0", "+1", "%201"])
@pytest.mark.parametrize("route", ["performance", "insights"])
def test_bad_versions_in_the_query_are_400(api, route, version):
    status, body = api.call("GET", f"/api/models/M/{route}?version={version}")
    _error(status, body, 400, "InvalidVersion")


@pytest.mark.parametrize("version", ["²", "1" * 5000, "1" * 20, True, 1.5, [], {}])
def test_bad_versions_to_publish_are_400(api, version):
    status, body = api.call("POST", "/api/models/M/publish", {"version": version})
    _error(status, body, 400, "InvalidVersion")
    status, body = api.call("POST", "/api/models/M/publish?version=%C2%B2")
    _error(status, body, 400, "InvalidVersion")


@pytest.mark.parametrize("ids", [1, None, "x", {}, True])
def test_opportunity_ids_of_the_wrong_type_are_400(api, ids):
    status, body = api.call("POST", "/api/score", {"opportunityIds": ids})
    _error(status, body, 400, "InvalidOpportunityIds")


def test_a_5000_digit_version_is_over_the_hosts_url_limit(api):
    status, body = api.call("GET", "/api/models/M/performance?version=" + "1" * 5000)
    _error(status, body, 414, "UriTooLong")


def test_a_20000_character_job_id_is_a_client_error(api):
    status, body = api.call("GET", "/api/jobs/" + "x" * 20_000)
    _error(status, body, 414, "UriTooLong")
    status, body = api.call("GET", "/api/jobs/" + "x" * 3_900)
    _error(status, body, 404, "JobNotFound")


@pytest.mark.parametrize("if_match", ['*, "a"', '"a", *', "W/", '"unterminated', "a b", '"é"'])
def test_malformed_if_match_is_400(api, if_match):
    headers = {**JSON, "If-Match": if_match}
    status, body = api.call("PATCH", "/api/models/M", {"autoRetrain": False}, headers=headers)
    _error(status, body, 400, "InvalidHeader")


def test_if_match_star_and_a_stale_etag(api):
    headers = {**JSON, "If-Match": "*"}
    status, body = api.call("PATCH", "/api/models/M", {"autoRetrain": False}, headers=headers)
    assert status == 200, body
    headers = {**JSON, "If-Match": '"0x8DCAFEBABE00000"'}
    status, body = api.call("PATCH", "/api/models/M", {"autoRetrain": False}, headers=headers)
    _error(status, body, 412)


# ---------------------------------------------------------------------------------------------- security


def test_a_name_with_a_newline_or_nul_forges_no_log_line(api):
    for name in ("Evil\nFORGED-LINE injected", "Nul\x00FORGED-NUL", "Cr\rFORGED-CR"):
        status, body = api.call("POST", "/api/models", {"name": name, "force": True})
        assert status == 400, body
        status, body = api.call("GET", "/api/models/" + urllib.parse.quote(name) + "/performance")
        assert status in (400, 404), body
    status, body = api.call("GET", "/api/jobs/x%0AFORGED-PATH%00")
    assert status == 404, body
    time.sleep(0.5)
    text = api.log.read_bytes()
    assert b"\x00" not in text
    forged = [line for line in text.splitlines() if line.startswith(b"FORGED")]
    assert not forged, forged


def test_a_trailing_newline_passes_no_name_or_id_rule(api, azurite):
    status, body = api.call("POST", "/api/models", {"name": "Zed\n", "force": True})
    assert _error(status, body, 400, "InvalidConfiguration")["field"] == "name"
    status, body = api.call("GET", "/api/models/Zed%0A")
    _error(status, body, 404, "ModelNotFound")
    status, body = api.call("GET", f"/api/opportunities/{GUID}%0A/score")
    _error(status, body, 400, "InvalidOpportunityId")
    status, body = api.call("POST", "/api/score", {"opportunityIds": [GUID + "\n"]})
    _error(status, body, 400, "InvalidOpportunityIds")
    status, listed = api.call("GET", "/api/models")
    assert all("\n" not in m["name"] for m in listed["models"]), listed


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/jsonx",
     "application/json; charset=latin-1", "json"],
)
def test_json_routes_accept_only_json_content_types(api, content_type):
    headers = {} if content_type is None else {"Content-Type": content_type}
    status, body = api.call("POST", "/api/models", b'{"name": "x"}', headers=headers)
    _error(status, body, 415, "UnsupportedMediaType")
    status, body = api.call("PATCH", "/api/models/M", b'{"autoRetrain": false}', headers=headers)
    _error(status, body, 415, "UnsupportedMediaType")
    status, listed = api.call("GET", "/api/models")
    assert "x" not in [m["name"] for m in listed["models"]]


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "Application/JSON", "application/merge-patch+json"]
)
def test_json_content_types_with_parameters_and_suffixes_are_accepted(api, content_type):
    status, body = api.call("PATCH", "/api/models/M", b'{"autoRetrain": false}', headers={"Content-Type": content_type})
    assert status == 200, body


def test_a_bodyless_post_needs_no_content_type(api):
    status, body = api.call("POST", "/api/models/M/revert", None, headers={})
    assert status in (200, 409), body
    status, body = api.call("POST", "/api/sync", None, headers={})
    assert status == 202, body
