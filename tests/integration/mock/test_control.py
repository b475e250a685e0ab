"""Control plane: faults, stats, clock, simulate, reset, service protection."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from mock_dataverse.server import MockServer

from .helpers import Client

pytestmark = pytest.mark.integration


@pytest.fixture
def client(mock: dict[str, Any]) -> Client:
    return Client(mock)


def test_faults_429_503_and_drop(client: Client) -> None:
    client.control("POST", "/_mock/faults", {"rate_429": 1.0, "retry_after": 7})
    r = client.get("accounts?$top=1")
    assert r.status_code == 429 and r.headers["Retry-After"] == "7"
    assert r.json()["error"]["code"] == "0x80072322"
    # the token endpoint and the control plane are never faulted
    assert client.control("GET", "/_mock/clock")["now"]
    client.control("POST", "/_mock/faults", {"rate_503": 1.0})
    assert client.get("accounts?$top=1").status_code == 503
    client.control("POST", "/_mock/faults", {"rate_drop": 1.0})
    with pytest.raises(requests.ConnectionError):
        client.get("accounts?$top=1")
    client.control("POST", "/_mock/faults", {"rate_500": 1.0, "paths": "opportunities"})
    assert client.get("accounts?$top=1").status_code == 200
    assert client.get("opportunities?$top=1").status_code == 500
    client.control("POST", "/_mock/faults", {"rate_429": 0.5, "seed": 3})
    codes = [client.get("accounts?$top=1").status_code for _ in range(40)]
    assert 0 < codes.count(429) < 40 and set(codes) <= {200, 429}
    r = client.s.post(client.info["url"] + "/_mock/faults", json={"rate_429": 2})
    assert r.status_code == 400


def test_stats_count_requests_tables_statuses_and_batches(client: Client) -> None:
    client.control("POST", "/_mock/stats/reset")
    client.get("accounts?$top=1")
    client.get("nosuch")
    client.post("accounts", json={"name": "Stat Co"})
    s = client.control("GET", "/_mock/stats")
    assert s["requests"] == {"GET": 2, "POST": 1}
    assert s["by_table"]["accounts"] == {"GET": 1, "POST": 1}
    assert s["by_status"] == {"200": 1, "404": 1, "204": 1}
    assert s["writes"] == 1 and s["batch_requests"] == 0


def test_simulate_moves_clock_and_changes_show_in_delta(client: Client, mock_server: Any) -> None:
    before = client.control("GET", "/_mock/clock")["now"]
    delta = client.get(
        "opportunities",
        params={"$select": "statecode"},
        headers={"Prefer": "odata.track-changes,odata.maxpagesize=5000"},
    ).json()
    link = delta.get("@odata.deltaLink")
    while link is None:
        delta = client.get(delta["@odata.nextLink"], headers={"Prefer": "odata.maxpagesize=5000"}).json()
        link = delta.get("@odata.deltaLink")
    report = client.control("POST", "/_mock/simulate", {"days": 30, "seed": 1})
    after = client.control("GET", "/_mock/clock")["now"]
    assert after[:10] > before[:10]
    assert report["won"] + report["lost"] > 0 and report["created"] > 0 and report["advanced"] > 0
    j = client.get(link).json()
    changed = [v for v in j["value"] if "opportunityid" in v]
    assert len(changed) >= report["won"] + report["lost"] + report["created"]
    assert all(v["@odata.etag"] for v in changed)
    r = client.s.post(client.info["url"] + "/_mock/simulate", json={"days": "many"})
    assert r.status_code == 400


def test_reset_restores_seeded_state(client: Client, mock_server: Any) -> None:
    first = sorted(o["opportunityid"] for o in mock_server.org.rows("opportunity"))[:5]
    client.control("POST", "/_mock/simulate", {"days": 5})
    client.control("POST", "/_mock/reset")
    assert sorted(o["opportunityid"] for o in mock_server.org.rows("opportunity"))[:5] == first


def test_service_protection_limit() -> None:
    with MockServer(seed=1, opportunities=100, rate_limit=5) as srv:
        c = Client(srv.info)
        codes = [c.get("accounts?$top=1").status_code for _ in range(7)]
        assert codes[:5] == [200] * 5 and codes[5] == 429
        r = c.get("accounts?$top=1")
        assert int(r.headers["Retry-After"]) >= 1 and r.json()["error"]["code"] == "0x80072322"


def test_token_expiry() -> None:
    import time

    with MockServer(seed=1, opportunities=60, token_ttl=1) as srv:
        c = Client(srv.info)
        assert c.get("accounts?$top=1").status_code == 200
        time.sleep(1.2)
        r = c.get("accounts?$top=1")
        assert r.status_code == 401 and "expired" in r.json()["error"]["message"]
