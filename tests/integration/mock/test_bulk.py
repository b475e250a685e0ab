"""The bound bulk messages over real HTTPS: CreateMultiple, UpdateMultiple, UpsertMultiple, all or nothing,
with Dataverse's error bodies, and every bad input a 4xx naming what was wrong."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from mock_dataverse.bulk import MAX_TARGETS

from .helpers import Client

pytestmark = pytest.mark.integration
PS = "Microsoft.Dynamics.CRM.msdyn_predictivescore"
UPSERT = "msdyn_predictivescores/Microsoft.Dynamics.CRM.UpsertMultiple"


@pytest.fixture
def client(mock: dict[str, Any]) -> Client:
    return Client(mock)


def _opps(mock_server: Any, n: int) -> list[str]:
    return [r["opportunityid"] for r in mock_server.org.rows("opportunity")[:n]]


def _score(oid: str, score: int, **extra: Any) -> dict[str, Any]:
    return {
        "@odata.type": PS,
        "@odata.id": f"msdyn_predictivescores(msdyn_entityid='{oid}',msdyn_entitytype='opportunity')",
        "msdyn_score": score,
        **extra,
    }


def _scores(mock_server: Any) -> dict[str, int]:
    return {r["msdyn_entityid"]: r["msdyn_score"] for r in mock_server.org.rows("msdyn_predictivescore")}


def test_upsert_multiple_creates_then_updates_by_alternate_key(client: Client, mock_server: Any) -> None:
    ids = _opps(mock_server, 3)
    r = client.post(UPSERT, json={"Targets": [_score(o, 10 + i) for i, o in enumerate(ids)]})
    assert r.status_code == 204 and not r.content, r.text
    created = {r["msdyn_entityid"]: r["msdyn_predictivescoreid"] for r in mock_server.org.rows("msdyn_predictivescore")}
    assert set(created) == set(ids)
    # key attributes in the body instead of @odata.id find the same rows
    body = [{"@odata.type": PS, "msdyn_entityid": o, "msdyn_entitytype": "opportunity", "msdyn_score": 90} for o in ids]
    r = client.post(UPSERT, json={"Targets": body})
    assert r.status_code == 204
    after = {r["msdyn_entityid"]: r["msdyn_predictivescoreid"] for r in mock_server.org.rows("msdyn_predictivescore")}
    assert after == created, "updated in place"
    assert _scores(mock_server) == {o: 90 for o in ids}
    assert r.headers["x-ms-dop-hint"].isdigit()


def test_a_bad_target_rolls_every_target_back_with_the_single_requests_error(client: Client, mock_server: Any) -> None:
    ids = _opps(mock_server, 3)
    client.post(UPSERT, json={"Targets": [_score(o, 50) for o in ids]})
    bad = [_score(ids[0], 51), _score(ids[1], 52, msdyn_grade=9), _score(ids[2], 53)]
    r = client.post(UPSERT, json={"Targets": bad})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "0x8004431A" and "msdyn_grade" in r.json()["error"]["message"]
    assert _scores(mock_server) == {o: 50 for o in ids}, "all or nothing"


def test_create_multiple_and_update_multiple(client: Client, mock_server: Any) -> None:
    t = "Microsoft.Dynamics.CRM.opportunity"
    r = client.post(
        "opportunities/Microsoft.Dynamics.CRM.CreateMultiple",
        json={"Targets": [{"@odata.type": t, "name": f"Bulk {i}"} for i in range(4)]},
    )
    assert r.status_code == 200, r.text
    ids = r.json()["Ids"]
    assert [mock_server.org.get("opportunity", i)["name"] for i in ids] == [f"Bulk {i}" for i in range(4)]
    upd = [{"@odata.type": t, "opportunityid": i, "closeprobability": 40} for i in ids]
    r = client.post("opportunities/Microsoft.Dynamics.CRM.UpdateMultiple", json={"Targets": upd})
    assert r.status_code == 204 and not r.content
    assert {mock_server.org.get("opportunity", i)["closeprobability"] for i in ids} == {40}
    upd.append({"@odata.type": t, "opportunityid": str(uuid.uuid4()), "closeprobability": 1})
    r = client.post("opportunities/Microsoft.Dynamics.CRM.UpdateMultiple", json={"Targets": upd})
    assert r.status_code == 404 and r.json()["error"]["code"] == "0x80040217"


@pytest.mark.parametrize(
    ("path", "body", "status", "needle"),
    [
        (UPSERT, {"Targets": [{"msdyn_score": 1, "msdyn_entityid": "a", "msdyn_entitytype": "b"}]}, 400, "@odata.type"),
        (UPSERT, {"Targets": [{"@odata.type": "Microsoft.Dynamics.CRM.account"}]}, 400, "takes 'Microsoft"),
        (UPSERT, {"Targets": {}}, 400, "must be an array"),
        (UPSERT, {"Targets": []}, 400, "at least one"),
        (UPSERT, {"Targets": [1]}, 400, "Targets[0] must be a JSON object"),
        (UPSERT, {"Targets": [], "Extra": 1}, 400, "'Extra'"),
        (UPSERT, [], 400, "JSON object"),
        (UPSERT, {"Targets": [{"@odata.type": PS, "@odata.id": "accounts(1)"}]}, 400, "does not address"),
        (UPSERT, {"Targets": [{"@odata.type": PS, "@odata.id": 5}]}, 400, "must be a string"),
        (UPSERT, {"Targets": [{"@odata.type": PS, "@odata.id": "msdyn_predictivescores(nokey='x')"}]}, 400, "key"),
        (UPSERT, {"Targets": [{"@odata.type": PS, "nosuch": 1}]}, 400, "nosuch"),
        (
            "msdyn_predictivescores/Microsoft.Dynamics.CRM.UpdateMultiple",
            {"Targets": [{"@odata.type": PS}]},
            400,
            "must name its row",
        ),
        ("accounts/Microsoft.Dynamics.CRM.CreateMultiple", {"Targets": [{"@odata.type": "x"}]}, 400, "not supported"),
        ("nosuchset/Microsoft.Dynamics.CRM.CreateMultiple", {"Targets": []}, 404, "nosuchset"),
        ("msdyn_predictivescores/Microsoft.Dynamics.CRM.DeleteMultiple", {"Targets": []}, 404, "DeleteMultiple"),
    ],
)
def test_bad_bulk_requests_are_4xx_naming_the_problem(
    client: Client, path: str, body: Any, status: int, needle: str
) -> None:
    r = client.post(path, json=body)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]["message"]


def test_bulk_request_limits(client: Client, mock_server: Any) -> None:
    r = client.post(UPSERT, data=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "0x80048d19"
    r = client.get(UPSERT)
    assert r.status_code == 405
    too_many = {"Targets": [{"@odata.type": PS}] * (MAX_TARGETS + 1)}
    r = client.post(UPSERT, json=too_many)
    assert r.status_code == 400 and f"{MAX_TARGETS:,}" in r.json()["error"]["message"]
    assert not mock_server.org.rows("msdyn_predictivescore")


def test_bulk_counts_one_request_and_is_cheaper_per_operation(client: Client, mock_server: Any) -> None:
    client.control("POST", "/_mock/stats/reset")
    ids = _opps(mock_server, 200)
    client.post(UPSERT, json={"Targets": [_score(o, 1) for o in ids]})
    bulk = client.control("GET", "/_mock/stats")
    cost = client.control("GET", "/_mock/cost")
    assert bulk["bulk_requests"] == 1 and bulk["bulk_targets"] == 200 and bulk["requests"] == {"POST": 1}
    assert bulk["modelled_ms"] == pytest.approx(cost["request_ms"] + 200 * cost["bulk_operation_ms"], abs=0.1)
    assert cost["bulk_operation_ms"] < cost["operation_ms"]
