"""The lake on a real Azurite: streamed parts, manifests swapped with ETags, reads, GC, leases."""

from __future__ import annotations

import threading
import uuid

import pyarrow as pa
import pytest

from connectors.blobs import container_client
from connectors.lake import Lake, LeaseBusy, ManifestConflict, rows_to_table, schema_from_attributes

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


def test_streamed_parts_manifest_and_reads(lake: Lake) -> None:
    schema = schema_from_attributes(ATTRS, key="accountid")
    assert schema.names[0] == "accountid" and "_etag" in schema.names
    with lake.part_writer("tables/account/current/v1", schema, max_rows=2500) as w:
        for page in range(5):
            w.write(rows_to_table(_rows(1000, page * 1000), schema))
    assert len(w.parts) == 2 and w.rows == 5000  # rolled at 2,500 rows: 3 + 2 row groups
    etag = lake.commit_manifest(
        "account",
        {
            "version": 1,
            "current": w.parts,
            "history": [],
            "schema": {f.name: str(f.type) for f in schema},
            "rows": 5000,
        },
        None,
    )
    t = lake.read_current("account")
    assert t.num_rows == 5000
    assert t.schema.field("createdon").type == pa.timestamp("us", tz="UTC")
    assert t.column("_etag")[3].as_py() == 'W/"3"'
    assert t.column("revenue")[7].as_py() is None and t.column("isgood")[2].as_py() is True
    only = lake.read_current("account", columns=["accountid", "name"])
    assert only.column_names == ["accountid", "name"]
    # a stale ETag cannot swap the manifest
    lake.commit_manifest("account", {"version": 2, "current": w.parts, "history": [], "schema": {}}, etag)
    with pytest.raises(ManifestConflict):
        lake.commit_manifest("account", {"version": 3, "current": [], "history": [], "schema": {}}, etag)
    with pytest.raises(ManifestConflict):
        lake.commit_manifest("account", {"version": 3}, None)


def test_absent_table_reads_empty_and_gc_removes_unlisted(lake: Lake) -> None:
    assert lake.read_current("nothing").num_rows == 0
    schema = schema_from_attributes(ATTRS, key="accountid")
    lake.write_parquet("tables/account/current/v9/part-00000.parquet", rows_to_table(_rows(3), schema))
    lake.write_parquet("tables/account/current/v1/part-00000.parquet", rows_to_table(_rows(3), schema))
    lake.commit_manifest(
        "account",
        {
            "version": 1,
            "current": ["tables/account/current/v1/part-00000.parquet"],
            "history": [],
            "schema": {f.name: str(f.type) for f in schema},
        },
        None,
    )
    assert lake.collect_garbage("account") == 1
    assert lake.list("tables/account/current/") == ["tables/account/current/v1/part-00000.parquet"]
    assert lake.read_current("account").num_rows == 3
    assert lake.delete_prefix("tables/") == 2


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
    assert info.value.status == 409 and info.value.code == "SyncInProgress"
    release.set()
    t.join()
    with lake.lease("sync", duration=15, wait=2) as held:  # free again once released
        assert held.id
