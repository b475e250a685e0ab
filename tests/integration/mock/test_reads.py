"""Reads, paging, metadata and auth against the mock over real HTTPS with MSAL tokens."""

from __future__ import annotations

from typing import Any

import pytest

from .helpers import Client, session, token

pytestmark = pytest.mark.integration


@pytest.fixture
def client(mock: dict[str, Any]) -> Client:
    return Client(mock)


def test_msal_token_and_wrong_secret(mock: dict[str, Any]) -> None:
    ok = token(mock)
    assert ok["token_type"] == "Bearer" and ok["access_token"]
    bad = token(mock, secret="wrong")
    assert bad["error"] == "invalid_client"


def test_api_requires_token(mock: dict[str, Any]) -> None:
    r = session(mock).get(mock["api"] + "opportunities")
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "0x80044302"
    assert "Bearer" in r.headers["WWW-Authenticate"]


def test_paging_with_maxpagesize_walks_every_row(client: Client, mock_server: Any) -> None:
    total = len(mock_server.org.rows("opportunity"))
    url: str | None = "opportunities?$select=name"
    seen: list[str] = []
    pages = 0
    while url:
        r = client.get(url, headers={"Prefer": "odata.maxpagesize=400"})
        assert r.status_code == 200
        j = r.json()
        assert len(j["value"]) <= 400
        seen += [row["opportunityid"] for row in j["value"]]
        url = j.get("@odata.nextLink")
        pages += 1
        assert url is None or "$skiptoken=" in url
    assert len(seen) == total == len(set(seen))
    assert pages == -(-total // 400)


def test_filter_select_orderby_count_annotations(client: Client, mock_server: Any) -> None:
    r = client.get(
        "opportunities",
        params={
            "$select": "name,estimatedvalue,statecode,_parentaccountid_value,estimatedclosedate",
            "$filter": "statecode eq 0 and (estimatedvalue gt 20000 or budgetstatus eq 3) "
            "and not contains(name,'zzz')",
            "$orderby": "estimatedvalue desc",
            "$count": "true",
        },
        headers={"Prefer": 'odata.include-annotations="*"'},
    )
    assert r.status_code == 200, r.text
    j = r.json()
    rows = mock_server.org.rows("opportunity")
    expected = [
        x
        for x in rows
        if x["statecode"] == 0 and ((x["estimatedvalue"] or 0) > 20000 or x["budgetstatus"] == 3)
    ]
    assert j["@odata.count"] == len(expected) == len(j["value"])
    vals = [v["estimatedvalue"] for v in j["value"] if v["estimatedvalue"] is not None]
    assert vals == sorted(vals, reverse=True)
    first = j["value"][0]
    assert first["@odata.etag"].startswith('W/"')
    assert first["statecode@OData.Community.Display.V1.FormattedValue"] == "Open"
    assert first["_parentaccountid_value@Microsoft.Dynamics.CRM.lookuplogicalname"] == "account"
    assert set(first) >= {"opportunityid", "name", "estimatedvalue"}
    assert "budgetstatus" not in first


def test_lookup_guid_and_date_literals(client: Client, mock_server: Any) -> None:
    opp = next(o for o in mock_server.org.rows("opportunity") if o["_parentaccountid_value"])
    acc = opp["_parentaccountid_value"]
    r = client.get(
        "opportunities", params={"$filter": f"_parentaccountid_value eq {acc} and createdon ge 2000-01-01"}
    )
    ids = {x["opportunityid"] for x in r.json()["value"]}
    assert opp["opportunityid"] in ids
    assert ids == {
        o["opportunityid"] for o in mock_server.org.rows("opportunity") if o["_parentaccountid_value"] == acc
    }


def test_bad_queries_are_400_with_dataverse_shape(client: Client) -> None:
    for params in (
        {"$skip": "10"},
        {"$filter": "statecode eq"},
        {"$select": "nosuchcolumn"},
        {"$filter": "statecode eq 'abc'"},
        {"$orderby": "name sideways"},
        {"$top": "-1"},
    ):
        r = client.get("opportunities", params=params)
        assert r.status_code == 400, params
        assert set(r.json()["error"]) >= {"code", "message"}
    r = client.get("nosuchset")
    assert r.status_code == 404 and r.json()["error"]["code"] == "0x8006088a"


def test_expand_single_valued_navigation(client: Client) -> None:
    r = client.get(
        "opportunitysalesprocesses",
        params={
            "$select": "_activestageid_value,traversedpath",
            "$expand": "activestageid($select=stagename,stagecategory)",
            "$top": "3",
        },
    )
    assert r.status_code == 200, r.text
    for row in r.json()["value"]:
        assert row["activestageid"]["stagename"] in ("Qualify", "Develop", "Propose", "Close")
        assert row["traversedpath"].split(",")[-1] == row["_activestageid_value"]


def test_metadata_entitydefinitions_and_optionsets(client: Client) -> None:
    r = client.get(
        "EntityDefinitions",
        params={
            "$select": "LogicalName,EntitySetName,PrimaryIdAttribute",
            "$filter": "LogicalName eq 'opportunity'",
        },
    )
    assert r.json()["value"][0]["EntitySetName"] == "opportunities"
    one = client.get("EntityDefinitions(LogicalName='msdyn_predictivescore')").json()
    assert one["EntitySetName"] == "msdyn_predictivescores"
    attrs = client.get("EntityDefinitions(LogicalName='opportunity')/Attributes").json()["value"]
    by = {a["LogicalName"]: a for a in attrs}
    assert by["estimatedvalue"]["AttributeType"] == "Money"
    assert by["estimatedclosedate"]["Format"] == "DateOnly"
    assert by["new_channel"]["IsCustomAttribute"] is True
    status = client.get(
        "EntityDefinitions(LogicalName='opportunity')/Attributes/Microsoft.Dynamics.CRM.StatusAttributeMetadata",
        params={"$select": "LogicalName", "$expand": "OptionSet"},
    ).json()["value"][0]
    assert {o["Value"]: o["State"] for o in status["OptionSet"]["Options"]}[3] == 1
    ch = client.get(
        "EntityDefinitions(LogicalName='opportunity')/Attributes(LogicalName='new_channel')"
        "/Microsoft.Dynamics.CRM.PicklistAttributeMetadata",
        params={"$expand": "OptionSet"},
    ).json()
    labels = {o["Value"]: o["Label"]["UserLocalizedLabel"]["Label"] for o in ch["OptionSet"]["Options"]}
    assert labels[100000001] == "Partner"
    dm = client.get(
        "EntityDefinitions(LogicalName='opportunity')/Attributes/Microsoft.Dynamics.CRM.BooleanAttributeMetadata",
        params={"$expand": "OptionSet"},
    ).json()["value"][0]
    assert dm["OptionSet"]["TrueOption"]["Value"] == 1
    csdl = client.get("$metadata")
    assert csdl.status_code == 200 and 'Namespace="Microsoft.Dynamics.CRM"' in csdl.text
    svc = client.get("").json()
    assert any(v["name"] == "opportunities" for v in svc["value"])
    who = client.get("WhoAmI").json()
    assert who["UserId"]
