"""The lake on a real Azurite: Delta tables written through the Lake API and read back by deltalake and
DuckDB alone (no product code), MERGE with deletes, time travel, concurrent writers, leases."""

from __future__ import annotations

import threading
import uuid

import duckdb
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from connectors.blobs import container_client
from connectors.lake import Lake, LeaseBusy, rows_to_table, schema_from_attributes
from functions.http import status_of

pytestmark = pytest.mark.integration

ATTRS = [
    {"name": "accountid", "type": "Uniqueidentifier"},
    {"name": "name", "type": "String"},
    {"name": "revenue", "type": "Money"},
    {"name": "numberofemployees", "type": "Integer"},
    {"name": "isgood", "type": "Boolean"},
    {"name": "createdon", "type": "DateTime"},
    {"name": "_ownerid_value", "type": "Owner"},
]


@pytest.fixture
def lake(azurite):
    return Lake(container_client(azurite.connection_string, f"lake-{uuid.uuid4().hex[:10]}"))


def _rows(n: int, start: int = 0) -> list[dict]:
    return [
        {
            "@odata.etag": f'W/"{i}"',
            "accountid": str(uuid.UUID(int=i)),
            "name": f"acc {i} 'quoted'",
            "revenue": i * 10.5 if i % 7 else None,
            "numberofemployees": i,
            "isgood": i % 2 == 0,
            "createdon": "2024-01-02" if i % 3 else "2024-01-02T03:04:05Z",
            "_ownerid_value": str(uuid.UUID(int=10_000 + i)),
            "name@OData.Community.Display.V1.FormattedValue": "ignored",
        }
        for i in range(start, start + n)
    ]


def test_merge_with_deletes_and_plain_readers(lake: Lake) -> None:
    schema = schema_from_attributes(ATTRS, key="accountid")
    lake.tables.append("tables/account", rows_to_table(_rows(5), schema), metadata={"sync_id": "s1"})
    changes = rows_to_table(_rows(2, start=4), schema).append_column("_deleted", pa.array([True, False]))
    counts = lake.tables.merge(
        "tables/account", changes, ["accountid"], delete_column="_deleted", metadata={"sync_id": "s2"}
    )
    assert counts["num_target_rows_deleted"] == 1 and counts["num_target_rows_inserted"] == 1
    current = lake.read_current("account")
    assert current.num_rows == 5 and "_deleted" not in current.column_names
    assert current.schema.field("createdon").type == pa.timestamp("us", tz="UTC")
    assert lake.tables.last_commit("tables/account")["sync_id"] == "s2"
    # deltalake alone opens it (with the storage options any tool would use) and travels back a version
    uri, options = lake.tables.uri("tables/account"), lake.tables.location.storage_options
    assert DeltaTable(uri, storage_options=options, version=0).to_pyarrow_table().num_rows == 5
    dataset = DeltaTable(uri, storage_options=options).to_pyarrow_dataset()  # noqa: F841 - DuckDB reads it
    assert duckdb.sql("select count(*), count(distinct accountid) from dataset").fetchall() == [(5, 5)]
    only = lake.read_current("account", columns=["accountid", "name", "nothere"])
    assert only.column_names == ["accountid", "name"]
    assert lake.read_current("never").num_rows == 0 and lake.read_history("never").num_rows == 0


def test_new_columns_are_added_to_the_schema(lake: Lake) -> None:
    lake.tables.append("tables/t", pa.table({"id": ["a"], "v": [1]}))
    lake.tables.merge("tables/t", pa.table({"id": ["b"], "v": [2], "w": ["new"]}), ["id"])
    rows = sorted(lake.read_current("t").to_pylist(), key=lambda r: r["id"])
    assert rows == [{"id": "a", "v": 1, "w": None}, {"id": "b", "v": 2, "w": "new"}]


def test_concurrent_merges_are_retried_not_lost(lake: Lake) -> None:
    lake.tables.append("tables/t", pa.table({"id": ["seed"], "v": [0]}))
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        try:
            lake.tables.merge("tables/t", pa.table({"id": [f"w{i}"], "v": [i]}), ["id"])
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert sorted(lake.read_current("t").column("id").to_pylist()) == ["seed", "w0", "w1", "w2", "w3"]


def test_lease_is_exclusive(lake: Lake) -> None:
    entered = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with lake.lease("sync", duration=15):
            entered.set()
            release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    assert entered.wait(10)
    with pytest.raises(LeaseBusy) as info:
        with lake.lease("sync", duration=15, wait=0):
            pass
    assert status_of(info.value) == 409 and info.value.code == "SyncInProgress"
    release.set()
    t.join()
    with lake.lease("sync", duration=15, wait=2) as held:  # free again once released
        assert held.id
