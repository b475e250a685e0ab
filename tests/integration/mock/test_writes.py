"""Writes, upsert by alternate key, actions, $batch and change tracking over real HTTPS."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from .helpers import Client

pytestmark = pytest.mark.integration
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def client(mock: dict[str, Any]) -> Client:
    return Client(mock)


def _account(mock_server: Any) -> str:
    return mock_server.org.rows("account")[0]["accountid"]


def test_create_update_delete_with_etags(client: Client, mock_server: Any) -> None:
    acc = _account(mock_server)
    r = client.post(
        "opportunities",
        json={
            "name": "New deal",
            "estimatedvalue": 1234.5,
            "parentaccountid@odata.bind": f"/accounts({acc})",
            "customerid_account@odata.bind": f"accounts({acc})",
        },
    )
    assert r.status_code == 204, r.text
    url = r.headers["OData-EntityId"]
    oid = url.rsplit("(", 1)[1].rstrip(")")
    row = mock_server.org.get("opportunity", oid)
    assert row["_parentaccountid_value"] == acc and row["statecode"] == 0 and row["createdon"]
    got = client.get(url).json()
    etag = got["@odata.etag"]
    assert client.patch(url, json={"name": "x"}, headers={"If-Match": 'W/"1"'}).status_code == 412
    r = client.patch(
        url, json={"budgetstatus": 2}, headers={"If-Match": etag, "Prefer": "return=representation"}
    )
    assert r.status_code == 200 and r.json()["budgetstatus"] == 2
    assert r.json()["@odata.etag"] != etag
    assert client.delete(url).status_code == 204
    r = client.get(url)
    assert r.status_code == 404 and r.json()["error"]["code"] == "0x80040217"
    missing = f"opportunities({uuid.uuid4()})"
    assert client.patch(missing, json={"name": "x"}, headers={"If-Match": "*"}).status_code == 404
    assert client.delete(missing).status_code == 404


def test_create_with_representation_is_201(client: Client) -> None:
    r = client.post(
        "accounts", json={"name": "Rep Co", "industrycode": 7}, headers={"Prefer": "return=representation"}
    )
    assert r.status_code == 201
    body = r.json()
    assert body["name"] == "Rep Co" and body["accountid"] and "OData-EntityId" not in r.headers


def test_payload_errors_are_400(client: Client) -> None:
    cases = [
        (b"{not json", "0x80048d19"),
        (json.dumps({"nosuch": 1}).encode(), "0x80048d19"),
        (json.dumps({"estimatedvalue": "lots"}).encode(), "0x80048d19"),
        (json.dumps({"budgetstatus": 99}).encode(), "0x8004431A"),
        (json.dumps({"closeprobability": 101}).encode(), "0x80044331"),
        (
            json.dumps({"customerid@odata.bind": "/accounts(00000000-0000-0000-0000-000000000001)"}).encode(),
            "0x80048d19",
        ),
        (json.dumps({"name": "x" * 301}).encode(), "0x80044331"),
        (json.dumps([1, 2]).encode(), "0x80048d19"),
    ]
    for body, code in cases:
        r = client.post("opportunities", data=body, headers=JSON)
        assert r.status_code == 400, body
        assert r.json()["error"]["code"] == code, (body, r.text)


def test_upsert_by_alternate_key(client: Client, mock_server: Any) -> None:
    oid = mock_server.org.rows("opportunity")[0]["opportunityid"]
    key = f"msdyn_predictivescores(msdyn_entityid='{oid}',msdyn_entitytype='opportunity')"
    r = client.patch(key, json={"msdyn_score": 70, "msdyn_grade": 1, "msdyn_scoredon": "2026-01-02"})
    assert r.status_code == 204
    assert client.patch(key, json={"msdyn_score": 71}, headers={"If-None-Match": "*"}).status_code == 412
    r = client.patch(key, json={"msdyn_score": 80}, headers={"Prefer": "return=representation"})
    assert r.status_code == 200 and r.json()["msdyn_score"] == 80
    rows = mock_server.org.rows("msdyn_predictivescore")
    assert (
        len(rows) == 1
        and rows[0]["msdyn_entityid"] == oid
        and rows[0]["msdyn_scoredon"].startswith("2026-01-02")
    )
    other = f"msdyn_predictivescores(msdyn_entityid='{uuid.uuid4()}',msdyn_entitytype='opportunity')"
    r = client.patch(other, json={"msdyn_score": 1}, headers={"If-Match": "*"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "0x80060891"
    r = client.post("msdyn_predictivescores", json={"msdyn_entityid": oid, "msdyn_entitytype": "opportunity"})
    assert r.status_code == 412


def test_win_and_lose_opportunity(client: Client, mock_server: Any) -> None:
    opens = [o for o in mock_server.org.rows("opportunity") if o["statecode"] == 0][:2]
    base = client.info["api"]
    r = client.post(
        "WinOpportunity",
        json={
            "Status": 3,
            "OpportunityClose": {
                "subject": "Won",
                "opportunityid@odata.bind": f"{base}opportunities({opens[0]['opportunityid']})",
            },
        },
    )
    assert r.status_code == 204, r.text
    won = mock_server.org.get("opportunity", opens[0]["opportunityid"])
    assert (won["statecode"], won["statuscode"]) == (1, 3) and won["actualclosedate"]
    bpf = [
        b
        for b in mock_server.org.rows("opportunitysalesprocess")
        if b["_opportunityid_value"] == won["opportunityid"]
    ]
    assert bpf[0]["statuscode"] == 2
    r = client.post(
        "LoseOpportunity",
        json={
            "Status": 3,
            "OpportunityClose": {"opportunityid@odata.bind": f"/opportunities({opens[1]['opportunityid']})"},
        },
    )
    assert r.status_code == 400
    r = client.post(
        "LoseOpportunity",
        json={
            "Status": 5,
            "OpportunityClose": {"opportunityid@odata.bind": f"/opportunities({opens[1]['opportunityid']})"},
        },
    )
    assert r.status_code == 204
    r = client.patch(f"opportunities({won['opportunityid']})", json={"name": "edit"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "0x80040515"
    r = client.patch(f"opportunities({opens[1]['opportunityid']})", json={"statecode": 0, "statuscode": 5})
    assert r.status_code == 400


def _batch(parts: list[str], boundary: str = "batch_x") -> tuple[bytes, dict[str, str]]:
    body = "".join(f"--{boundary}\r\n{p}\r\n" for p in parts) + f"--{boundary}--\r\n"
    return body.encode(), {"Content-Type": f'multipart/mixed; boundary="{boundary}"'}


def _op(method: str, url: str, body: Any = None, content_id: str | None = None) -> str:
    head = "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
    if content_id:
        head += f"Content-ID: {content_id}\r\n"
    inner = f"{method} {url} HTTP/1.1\r\n"
    if body is not None:
        inner += "Content-Type: application/json; type=entry\r\n\r\n" + json.dumps(body)
    else:
        inner += "\r\n"
    return head + "\r\n" + inner


def _changeset(ops: list[str], boundary: str = "changeset_y") -> str:
    inner = "".join(f"--{boundary}\r\n{o}\r\n" for o in ops) + f"--{boundary}--"
    return f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n{inner}'


def test_batch_changeset_content_id_and_atomicity(client: Client, mock_server: Any) -> None:
    api = client.info["api"]
    n_acc = len(mock_server.org.rows("account"))
    ok = _changeset(
        [
            _op("POST", f"{api}accounts", {"name": "Batch Co"}, "1"),
            _op(
                "POST",
                "/api/data/v9.2/opportunities",
                {"name": "B1", "parentaccountid@odata.bind": "$1"},
                "2",
            ),
            _op("PATCH", "$2", {"budgetstatus": 1}, "3"),
        ]
    )
    body, headers = _batch([ok, _op("GET", f"{api}accounts?$top=1")])
    r = client.post("$batch", data=body, headers=headers)
    assert r.status_code == 200, r.text
    assert r.text.count("HTTP/1.1 204") == 3 and "HTTP/1.1 200" in r.text
    assert len(mock_server.org.rows("account")) == n_acc + 1
    opp = next(o for o in mock_server.org.rows("opportunity") if o["name"] == "B1")
    assert opp["budgetstatus"] == 1 and opp["_parentaccountid_value"]

    bad = _changeset(
        [
            _op("POST", f"{api}accounts", {"name": "Rolled back"}, "1"),
            _op("POST", f"{api}accounts", {"nosuch": 1}, "2"),
        ]
    )
    body, headers = _batch([bad, _op("GET", f"{api}accounts?$top=1")])
    r = client.post("$batch", data=body, headers=headers)
    assert r.status_code == 400 and "HTTP/1.1 400" in r.text and "HTTP/1.1 200" not in r.text
    assert not any(a["name"] == "Rolled back" for a in mock_server.org.rows("account"))

    body, headers = _batch([bad, _op("GET", f"{api}accounts?$top=1")])
    r = client.post("$batch", data=body, headers={**headers, "Prefer": "odata.continue-on-error"})
    assert r.status_code == 200 and "HTTP/1.1 400" in r.text and "HTTP/1.1 200" in r.text


def test_batch_limits_and_format(client: Client) -> None:
    api = client.info["api"]
    body, headers = _batch([_op("GET", f"{api}accounts?$top=1")] * 1001)
    r = client.post("$batch", data=body, headers=headers)
    assert r.status_code == 400 and r.json()["error"]["message"]
    r = client.post("$batch", data=body.replace(b"\r\n", b"\n")[:2000], headers=headers)
    assert r.status_code == 400 and r.json()["error"]["code"] == "0x80048d19"
    r = client.post("$batch", data=b"x", headers=JSON)
    assert r.status_code == 400


def test_change_tracking_delta(client: Client, mock_server: Any) -> None:
    r = client.get("accounts", params={"$select": "name"}, headers={"Prefer": "odata.track-changes"})
    assert r.status_code == 200 and "odata.track-changes" in r.headers["Preference-Applied"]
    delta = r.json()["@odata.deltaLink"]
    assert "$deltatoken=" in delta
    accs = mock_server.org.rows("account")
    client.patch(f"accounts({accs[0]['accountid']})", json={"name": "Renamed"})
    client.delete(f"accounts({accs[1]['accountid']})")
    new = client.post("accounts", json={"name": "Fresh"}).headers["OData-EntityId"]
    j = client.get(delta).json()
    assert j["@odata.context"].endswith("/$delta")
    changed = {v["accountid"] for v in j["value"] if "accountid" in v}
    deleted = [v for v in j["value"] if v.get("reason") == "deleted"]
    assert changed == {accs[0]["accountid"], new.rsplit("(", 1)[1].rstrip(")")}
    assert [d["id"] for d in deleted] == [accs[1]["accountid"]]
    assert "$deletedEntity" in deleted[0]["@odata.context"]
    again = client.get(j["@odata.deltaLink"]).json()
    assert again["value"] == []
    r = client.get("accounts", params={"$filter": "name eq 'x'"}, headers={"Prefer": "odata.track-changes"})
    assert r.status_code == 400
