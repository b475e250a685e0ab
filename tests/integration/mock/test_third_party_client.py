"""A widely used third-party client, `dataverse-api` (PyPI, github.com/MarcusRisanger/Dataverse-API), end
to end against the mock over HTTPS with an MSAL token: it reads each table's keys, sdkmessagefilters,
entity-set properties and relationships before anything else, then pages, creates, updates and bulk-creates.
(Its `$batch` mode writes bare LF line endings, which Dataverse refuses, so the mock refuses them too.)"""

from __future__ import annotations

from typing import Any

import pytest

from .helpers import session, token

pytestmark = pytest.mark.integration
dataverse_api = pytest.importorskip("dataverse_api.dataverse")


@pytest.fixture
def client(mock: dict[str, Any]) -> Any:
    s = session(mock)
    s.headers["Authorization"] = "Bearer " + token(mock)["access_token"]
    return dataverse_api.DataverseClient(session=s, environment_url=mock["url"] + "/")


def test_metadata_read_before_the_first_query(client: Any) -> None:
    opp = client.entity("opportunity")
    assert (opp.entity_set_name, opp.primary_id_attr) == ("opportunities", "opportunityid")
    assert opp.supports_create_multiple and opp.supports_update_multiple
    assert {"parentaccountid", "customerid_account", "msdyn_predictivescoreid"} <= set(opp.relationships.single_valued)
    assert "lk_opportunitysalesprocess_opportunityid" in opp.relationships.collection_valued
    scores = client.entity("msdyn_predictivescore")
    assert scores.alternate_keys == {"msdyn_entityid_msdyn_entitytype": ["msdyn_entityid", "msdyn_entitytype"]}
    account = client.entity("account")
    assert not account.supports_create_multiple
    from dataverse_api.errors import DataverseError

    with pytest.raises(DataverseError, match="CreateMultiple is not supported"):
        account.create([{"name": "x"}], mode="multiple")


def test_pages_through_opportunities(client: Any, mock_server: Any) -> None:
    opp = client.entity("opportunity")
    responses = opp.read(select=["name", "statecode"], filter="statecode eq 0", page_size=100, return_responses=True)
    rows = [r for resp in responses for r in resp.json()["value"]]
    expected = {o["opportunityid"] for o in mock_server.org.rows("opportunity") if o["statecode"] == 0}
    assert len(responses) > 1 and {r["opportunityid"] for r in rows} == expected and len(rows) == len(expected)


def test_creates_updates_and_bulk_creates(client: Any, mock_server: Any) -> None:
    opp = client.entity("opportunity")
    created = opp.create([{"name": "Third party 1"}, {"name": "Third party 2"}])
    assert [r.status_code for r in created] == [204, 204]
    ids = [r.headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")") for r in created]
    opp.upsert([{"opportunityid": i, "closeprobability": 12} for i in ids])
    assert [mock_server.org.get("opportunity", i)["closeprobability"] for i in ids] == [12, 12]
    before = len(mock_server.org.rows("opportunity"))
    bulk = opp.create([{"name": f"Bulk third party {i}"} for i in range(120)], mode="multiple", batch_size=50)
    assert [r.status_code for r in bulk] == [200, 200, 200]
    assert sum(len(r.json()["Ids"]) for r in bulk) == 120 == len(mock_server.org.rows("opportunity")) - before
    scores = client.entity("msdyn_predictivescore")
    key = {"msdyn_entityid": ids[0], "msdyn_entitytype": "opportunity"}
    scores.upsert([{**key, "msdyn_score": 64}], altkey_name="msdyn_entityid_msdyn_entitytype")
    assert [r["msdyn_score"] for r in mock_server.org.rows("msdyn_predictivescore")] == [64]
