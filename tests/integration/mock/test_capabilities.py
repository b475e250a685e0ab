"""What clients read before their first query, over real HTTPS: sdkmessages and sdkmessagefilters, and
EntityDefinitions(...)/Keys, relationships and typed Attributes for every table of the mock."""

from __future__ import annotations

from typing import Any

import pytest

from mock_dataverse.metadata import CAST

from .helpers import Client

pytestmark = pytest.mark.integration


@pytest.fixture
def client(mock: dict[str, Any]) -> Client:
    return Client(mock)


def _filters(client: Client, flt: str, **params: str) -> list[dict[str, Any]]:
    r = client.get(
        "sdkmessagefilters",
        params={
            "$select": "sdkmessagefilterid,primaryobjecttypecode",
            "$expand": "sdkmessageid($select=name)",
            "$filter": flt,
            **params,
        },
    )
    assert r.status_code == 200, r.text
    return r.json()["value"]


def test_filters_say_which_table_takes_which_bulk_message(client: Client) -> None:
    rows = _filters(client, "primaryobjecttypecode eq 'msdyn_predictivescore'")
    names = {r["sdkmessageid"]["name"] for r in rows}
    assert {"Create", "Update", "Upsert", "CreateMultiple", "UpdateMultiple", "UpsertMultiple"} <= names
    assert set(rows[0]) == {"@odata.etag", "sdkmessagefilterid", "primaryobjecttypecode", "sdkmessageid"}
    assert set(rows[0]["sdkmessageid"]) >= {"name", "sdkmessageid"}
    # the dataverse-api client's query: both bulk messages of a core table that has neither
    flt = (
        "(sdkmessageid/name eq 'CreateMultiple' or sdkmessageid/name eq 'UpdateMultiple') "
        "and primaryobjecttypecode eq 'account'"
    )
    assert _filters(client, flt) == []
    # Microsoft's documented query, with parameter aliases
    found = _filters(
        client,
        "sdkmessageid/name eq @message and primaryobjecttypecode eq @table",
        **{"@message": "'UpsertMultiple'", "@table": "'msdyn_predictivescore'"},
    )
    assert len(found) == 1


def test_sdkmessages_and_a_disabled_message(client: Client) -> None:
    r = client.get("sdkmessages", params={"$select": "name", "$filter": "name eq 'UpsertMultiple'"})
    assert r.status_code == 200 and [m["name"] for m in r.json()["value"]] == ["UpsertMultiple"]
    client.control("POST", "/_mock/messages", {"disable": ["msdyn_predictivescore/UpsertMultiple"]})
    assert (
        _filters(client, "sdkmessageid/name eq 'UpsertMultiple' and primaryobjecttypecode eq 'msdyn_predictivescore'")
        == []
    )
    r = client.post(
        "msdyn_predictivescores/Microsoft.Dynamics.CRM.UpsertMultiple",
        json={"Targets": [{"@odata.type": "Microsoft.Dynamics.CRM.msdyn_predictivescore"}]},
    )
    assert r.status_code == 400 and "not supported" in r.json()["error"]["message"]
    r = client.s.post(client.info["url"] + "/_mock/messages", json={"disable": ["account/NoSuchMessage"]})
    assert r.status_code == 400 and "account/NoSuchMessage" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"$filter": "sdkmessageid/nosuch eq 'x'"}, "nosuch"),
        ({"$filter": "name eq @undefined"}, "@undefined"),
        ({"$expand": "sdkmessageid($select=nosuch)"}, "nosuch"),
        ({"$select": "nosuch"}, "nosuch"),
    ],
)
def test_bad_queries_on_the_message_tables_are_400(client: Client, params: dict[str, str], needle: str) -> None:
    r = client.get("sdkmessagefilters", params=params)
    assert r.status_code == 400 and needle in r.json()["error"]["message"], r.text


def test_the_message_tables_are_read_only(client: Client) -> None:
    r = client.post("sdkmessagefilters", json={"name": "x"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "0x80040220"


def test_keys_and_relationships(client: Client) -> None:
    base = "EntityDefinitions(LogicalName='msdyn_predictivescore')"
    keys = client.get(base + "/Keys", params={"$select": "SchemaName,KeyAttributes"}).json()["value"]
    assert [k["KeyAttributes"] for k in keys] == [["msdyn_entityid", "msdyn_entitytype"]]
    assert set(keys[0]) == {"SchemaName", "KeyAttributes", "MetadataId", "@odata.type"}
    n1 = client.get("EntityDefinitions(LogicalName='opportunity')/ManyToOneRelationships").json()["value"]
    by_nav = {r["ReferencingEntityNavigationPropertyName"]: r for r in n1}
    assert by_nav["parentaccountid"]["SchemaName"] == "opportunity_parent_account"
    assert by_nav["customerid_contact"]["ReferencedEntity"] == "contact"
    assert {"systemuser", "team"} <= {r["ReferencedEntity"] for r in n1 if r["ReferencingAttribute"] == "ownerid"}
    one_n = client.get(
        "EntityDefinitions(LogicalName='account')/OneToManyRelationships",
        params={"$select": "SchemaName,ReferencingEntity", "$filter": "ReferencingEntity eq 'opportunity'"},
    )
    assert {r["SchemaName"] for r in one_n.json()["value"]} == {
        "opportunity_parent_account",
        "opportunity_customer_accounts",
    }
    assert client.get(base + "/ManyToManyRelationships").json()["value"] == []
    r = client.get("EntityDefinitions(LogicalName='nosuch')/Keys")
    assert r.status_code == 404
    r = client.get(base + "/Keys", params={"$select": "Nope"})
    assert r.status_code == 400 and "Nope" in r.json()["error"]["message"]


def test_attributes_with_select_and_every_cast_for_every_table(client: Client, mock_server: Any) -> None:
    for logical, table in mock_server.org.schema.items():
        base = f"EntityDefinitions(LogicalName='{logical}')/Attributes"
        r = client.get(base, params={"$select": "LogicalName,AttributeType"})
        assert r.status_code == 200, (logical, r.text)
        assert {a["LogicalName"] for a in r.json()["value"]} == {a.name for a in table.attrs.values()}
        for cast in sorted({CAST[a.type] for a in table.attrs.values()}):
            got = client.get(f"{base}/Microsoft.Dynamics.CRM.{cast}", params={"$select": "LogicalName"})
            assert got.status_code == 200, (logical, cast, got.text)
            want = {a.name for a in table.attrs.values() if CAST[a.type] == cast}
            assert {a["LogicalName"] for a in got.json()["value"]} == want
            assert all(a["@odata.type"] == f"#Microsoft.Dynamics.CRM.{cast}" for a in got.json()["value"])
    r = client.get("EntityDefinitions(LogicalName='account')/Attributes/Microsoft.Dynamics.CRM.NoSuchMetadata")
    assert r.status_code == 400
