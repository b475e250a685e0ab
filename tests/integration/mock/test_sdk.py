"""Microsoft's own Python SDK (PowerPlatform-Dataverse-Client) against the mock, with MSAL tokens."""

from __future__ import annotations

import time
from typing import Any

import pytest
from azure.core.credentials import AccessToken

from .helpers import token

pytestmark = pytest.mark.integration
DataverseClient = pytest.importorskip("PowerPlatform.Dataverse.client").DataverseClient


class MsalCredential:
    """A TokenCredential backed by MSAL's client-credentials flow against the mock."""

    def __init__(self, info: dict[str, Any]):
        self.info = info
        self.calls = 0

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.calls += 1
        assert scopes == (self.info["resource"] + "/.default",)
        tok = token(self.info)
        return AccessToken(tok["access_token"], int(time.time()) + int(tok["expires_in"]))


@pytest.fixture
def sdk(mock: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    # The SDK uses plain requests (trust_env on), so the mock's CA is trusted via the environment here.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", mock["ca_cert"])
    monkeypatch.setenv("CURL_CA_BUNDLE", mock["ca_cert"])
    cred = MsalCredential(mock)
    client = DataverseClient(mock["url"], cred)
    yield client
    assert cred.calls >= 1


def test_sdk_create_get_update_delete(sdk: Any, mock_server: Any) -> None:
    acc = sdk.records.create("account", {"name": "SDK Co", "numberofemployees": 12})
    assert mock_server.org.get("account", acc)["name"] == "SDK Co"
    sdk.records.update("account", acc, {"numberofemployees": 13})
    got = sdk.records.get("account", acc, select=["name", "numberofemployees"])
    assert got["numberofemployees"] == 13
    sdk.records.delete("account", acc)
    assert mock_server.org.get("account", acc) is None


def test_sdk_query_with_paging(sdk: Any, mock_server: Any) -> None:
    result = sdk.records.list(
        "opportunity", select=["name", "statecode"], filter="statecode eq 0", page_size=100
    )
    rows = list(result)
    expected = [o for o in mock_server.org.rows("opportunity") if o["statecode"] == 0]
    assert len(rows) == len(expected) > 100


def test_sdk_upsert_by_alternate_key(sdk: Any, mock_server: Any) -> None:
    from PowerPlatform.Dataverse.models.upsert import UpsertItem

    oid = mock_server.org.rows("opportunity")[0]["opportunityid"]
    key = {"msdyn_entityid": oid, "msdyn_entitytype": "opportunity"}
    sdk.records.upsert("msdyn_predictivescore", [UpsertItem(alternate_key=key, record={"msdyn_score": 61})])
    sdk.records.upsert("msdyn_predictivescore", [UpsertItem(alternate_key=key, record={"msdyn_score": 62})])
    rows = mock_server.org.rows("msdyn_predictivescore")
    assert [r["msdyn_score"] for r in rows] == [62]


def test_sdk_batch_with_changeset(sdk: Any, mock_server: Any) -> None:
    batch = sdk.batch.new()
    batch.records.create("account", {"name": "Batch SDK 1"})
    with batch.changeset() as cs:
        ref = cs.records.create("account", {"name": "Batch SDK 2"})
        cs.records.update("account", ref, {"numberofemployees": 5})
    result = batch.execute()
    assert not result.has_errors, [(r.status_code, r.error_message) for r in result.responses]
    names = {a["name"]: a for a in mock_server.org.rows("account")}
    assert "Batch SDK 1" in names and names["Batch SDK 2"]["numberofemployees"] == 5


def test_sdk_errors_surface(sdk: Any) -> None:
    from PowerPlatform.Dataverse.core.errors import HttpError

    with pytest.raises(HttpError) as err:
        sdk.records.create("account", {"nosuchcolumn": 1})
    assert err.value.status_code == 400
    with pytest.raises(HttpError) as err:
        sdk.records.get("account", "00000000-0000-0000-0000-000000000001")
    assert err.value.status_code == 404
