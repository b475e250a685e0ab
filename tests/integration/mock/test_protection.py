"""Service protection over real HTTPS: the request count, the combined execution time and the concurrent
requests per user, each a 429 with its own code and Retry-After; x-ms-dop-hint; the cost model's sleep."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from .helpers import Client

pytestmark = pytest.mark.integration


@pytest.fixture
def client(mock: dict[str, Any]) -> Iterator[Client]:
    c = Client(mock)
    yield c
    c.control("POST", "/_mock/reset")  # limits and costs back to the defaults for the next module


def test_request_count_limit(client: Client) -> None:
    client.control("POST", "/_mock/limits", {"requests": 3, "window_s": 60})
    codes = [client.get("WhoAmI") for _ in range(4)]
    assert [r.status_code for r in codes] == [200, 200, 200, 429]
    err = codes[-1]
    assert err.json()["error"]["code"] == "0x80072322" and "limit of 3" in err.json()["error"]["message"]
    assert 1 <= int(err.headers["Retry-After"]) <= 61
    assert codes[0].headers["x-ms-ratelimit-burst-remaining-xrm-requests"] == "2"


def test_execution_time_limit(client: Client) -> None:
    client.control("POST", "/_mock/limits", {"execution_ms": 5})
    client.control("POST", "/_mock/cost", {"request_ms": 4})
    assert client.get("WhoAmI").status_code == 200  # nothing spent yet
    answers = [client.get("WhoAmI") for _ in range(2)]  # >= 8 ms spent after the second
    r = answers[-1]
    assert r.status_code == 429 and r.json()["error"]["code"] == "0x80072321"
    assert "Combined execution time" in r.json()["error"]["message"] and int(r.headers["Retry-After"]) >= 1


def test_concurrency_limit_and_dop_hint(client: Client) -> None:
    client.control("POST", "/_mock/limits", {"concurrent": 2, "dop_hint": 3})
    client.control("POST", "/_mock/cost", {"request_ms": 400, "sleep": True})  # each request is in flight 0.4 s
    results: list[Any] = []

    def call() -> None:
        results.append(client.get("WhoAmI"))

    threads = [threading.Thread(target=call) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(r.status_code for r in results)
    assert statuses.count(200) >= 2 and 429 in statuses, statuses
    refused = next(r for r in results if r.status_code == 429)
    assert refused.json()["error"]["code"] == "0x80072326" and refused.headers["Retry-After"] == "1"
    assert all(r.headers["x-ms-dop-hint"] == "3" for r in results if r.status_code == 200)


def test_injected_throttles_of_each_kind(client: Client) -> None:
    for kind, code in (
        ("rate_429", "0x80072322"),
        ("rate_429_time", "0x80072321"),
        ("rate_429_concurrency", "0x80072326"),
    ):
        client.control("POST", "/_mock/faults", {kind: 1.0, "retry_after": 2})
        r = client.get("WhoAmI")
        assert r.status_code == 429 and r.json()["error"]["code"] == code and r.headers["Retry-After"] == "2"
    client.control("POST", "/_mock/faults", {})


def test_cost_model_sleep_and_settings(client: Client) -> None:
    client.control("POST", "/_mock/cost", {"request_ms": 300, "sleep": True})
    t = time.perf_counter()
    assert client.get("WhoAmI").status_code == 200
    assert time.perf_counter() - t >= 0.3
    for bad in ({"request_ms": -1}, {"sleep": 1}, {"nosuch": 1}, {"request_ms": "5"}):
        r = client.s.post(client.info["url"] + "/_mock/cost", json=bad)
        assert r.status_code == 400, bad
    for bad in ({"dop_hint": 0}, {"requests": 1.5}, {"concurrent": True}):
        r = client.s.post(client.info["url"] + "/_mock/limits", json=bad)
        assert r.status_code == 400, bad
    client.control("POST", "/_mock/reset")
    assert client.control("GET", "/_mock/cost")["sleep"] is False
    assert client.control("GET", "/_mock/limits")["requests"] == 6000
