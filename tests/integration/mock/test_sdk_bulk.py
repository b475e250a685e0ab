"""Microsoft's PowerPlatform-Dataverse-Client against the mock's new surfaces: its bulk calls
(CreateMultiple, UpdateMultiple, UpsertMultiple), alternate keys, relationships and typed columns."""

from __future__ import annotations

from typing import Any

import pytest

from .test_sdk import sdk  # noqa: F401 - the SDK client fixture

pytestmark = pytest.mark.integration


def test_sdk_create_multiple_and_update_multiple(sdk: Any, mock_server: Any, mock: dict[str, Any]) -> None:  # noqa: F811
    ids = sdk.records.create("opportunity", [{"name": f"SDK bulk {i}", "closeprobability": i} for i in range(5)])
    assert len(ids) == 5
    assert [mock_server.org.get("opportunity", i)["name"] for i in ids] == [f"SDK bulk {i}" for i in range(5)]
    sdk.records.update("opportunity", ids, {"closeprobability": 77})
    assert {mock_server.org.get("opportunity", i)["closeprobability"] for i in ids} == {77}
    from tests.conftest import mock_call

    stats = mock_call(mock, "GET", "/_mock/stats")
    assert stats["bulk_requests"] == 2 and stats["bulk_targets"] == 10


def test_sdk_upsert_multiple_by_alternate_key(sdk: Any, mock_server: Any) -> None:  # noqa: F811
    from PowerPlatform.Dataverse.models.upsert import UpsertItem

    oids = [o["opportunityid"] for o in mock_server.org.rows("opportunity")[:3]]
    items = [
        UpsertItem(
            alternate_key={"msdyn_entityid": o, "msdyn_entitytype": "opportunity"}, record={"msdyn_score": 40 + i}
        )
        for i, o in enumerate(oids)
    ]
    sdk.records.upsert("msdyn_predictivescore", items)
    sdk.records.upsert(
        "msdyn_predictivescore",
        items[:2] + [UpsertItem(alternate_key=items[2].alternate_key, record={"msdyn_score": 99})],
    )
    got = {r["msdyn_entityid"]: r["msdyn_score"] for r in mock_server.org.rows("msdyn_predictivescore")}
    assert got == {oids[0]: 40, oids[1]: 41, oids[2]: 99}


def test_sdk_bulk_error_surfaces_and_rolls_back(sdk: Any, mock_server: Any) -> None:  # noqa: F811
    from PowerPlatform.Dataverse.core.errors import HttpError

    before = len(mock_server.org.rows("opportunity"))
    with pytest.raises(HttpError) as err:
        sdk.records.create("opportunity", [{"name": "ok"}, {"name": "bad", "budgetstatus": 99}])
    assert err.value.status_code == 400 and "budgetstatus" in str(err.value)
    assert len(mock_server.org.rows("opportunity")) == before


def test_sdk_reads_keys_relationships_and_columns(sdk: Any) -> None:  # noqa: F811
    keys = sdk.tables.get_alternate_keys("msdyn_predictivescore")
    assert [k.key_attributes for k in keys] == [["msdyn_entityid", "msdyn_entitytype"]]
    rels = sdk.tables.list_table_relationships("opportunity")
    names = {r["SchemaName"] for r in rels}
    assert {"opportunity_parent_account", "lk_opportunitysalesprocess_opportunityid"} <= names
    cols = sdk.tables.list_columns("msdyn_predictivescore")
    assert {"msdyn_score", "msdyn_scorereasons"} <= {
        c["LogicalName"] if isinstance(c, dict) else c.logical_name for c in cols
    }


def test_sdk_reads_the_message_filters(sdk: Any) -> None:  # noqa: F811
    rows = list(
        sdk.records.list(
            "sdkmessagefilter",
            select=["sdkmessagefilterid", "primaryobjecttypecode"],
            filter="sdkmessageid/name eq 'UpsertMultiple' and primaryobjecttypecode eq 'msdyn_predictivescore'",
            expand=["sdkmessageid($select=name)"],
        )
    )
    assert len(rows) == 1 and rows[0]["sdkmessageid"]["name"] == "UpsertMultiple"


@pytest.mark.parametrize(
    ("fault", "code"),
    [("rate_429", "0x80072322"), ("rate_429_time", "0x80072321"), ("rate_429_concurrency", "0x80072326")],
)
def test_sdk_sees_each_throttle_with_its_retry_after(sdk: Any, mock: dict[str, Any], fault: str, code: str) -> None:  # noqa: F811
    from PowerPlatform.Dataverse.core.errors import HttpError

    from tests.conftest import mock_call

    sdk.tables.get("opportunity")  # metadata cached before the faults start
    mock_call(mock, "POST", "/_mock/faults", {fault: 1.0, "retry_after": 3, "paths": "opportunities"})
    with pytest.raises(HttpError) as err:
        sdk.records.create("opportunity", [{"name": "throttled"}])
    assert err.value.status_code == 429 and err.value.is_transient
    assert err.value.details["retry_after"] == 3 and err.value.details["service_error_code"] == code
