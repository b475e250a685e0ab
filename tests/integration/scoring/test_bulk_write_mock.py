"""The write path (connectors.dataverse_bulk through the real DataverseClient) against the mock over HTTPS:
parallel UpsertMultiple at the org's x-ms-dop-hint past a concurrency limit of 2, so real 0x80072326 429s
are answered with Retry-After and retried, and every row lands exactly once."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from connectors.dataverse_bulk import upsert_rows
from local_runner import stack
from tests.conftest import mock_call

pytestmark = pytest.mark.integration


@pytest.fixture
def org(mock: dict[str, Any]) -> Iterator[dict[str, Any]]:
    mock_call(mock, "POST", "/_mock/limits", {"concurrent": 2, "dop_hint": 4})
    mock_call(mock, "POST", "/_mock/cost", {"request_ms": 150, "sleep": True})  # requests overlap
    yield mock
    mock_call(mock, "POST", "/_mock/reset")


def test_parallel_upsert_multiple_past_the_concurrency_limit_writes_every_row_once(
    org: dict[str, Any], mock_server: Any
) -> None:
    client = stack.dataverse_client(org)
    ids = [o["opportunityid"] for o in mock_server.org.rows("opportunity")[:1200]]
    rows = [
        (
            {"msdyn_entityid": o, "msdyn_entitytype": "opportunity"},
            {"msdyn_entityid": o, "msdyn_entitytype": "opportunity", "msdyn_score": i % 101},
        )
        for i, o in enumerate(ids)
    ]
    client.who_am_i()  # learns x-ms-dop-hint
    out = upsert_rows(
        client, "msdyn_predictivescores", "msdyn_predictivescore", rows, max_parallelism=8, batch_size=100
    )
    assert out.method == "UpsertMultiple" and out.parallelism == 4 and out.requests == 12
    assert not out.failures and not out.transient
    stats = mock_call(org, "GET", "/_mock/stats")
    assert stats["by_status"].get("429", 0) >= 1 and client.stats["throttled"] >= 1, "the limit was hit"
    assert stats["bulk_targets"] == 1200
    got = {r["msdyn_entityid"]: r["msdyn_score"] for r in mock_server.org.rows("msdyn_predictivescore")}
    assert got == {o: i % 101 for i, o in enumerate(ids)}
