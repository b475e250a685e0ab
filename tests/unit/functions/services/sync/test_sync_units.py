"""Unit tests of the sync's pure parts and decisions (no servers): the current view's key lookups, one row
per key in a MERGE source, the Delta location of a connection string, the container purge, retention and
the daily upkeep (on a real Delta table in a local directory)."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from typing import Any

import pyarrow as pa
import pytest

from connectors.delta import DeltaLocation, location_from_connection_string
from connectors.lake import Lake, delete_all_except
from functions.services.sync.commit import _last_per_key
from functions.services.sync.extract import _Known
from functions.services.sync.retention import prune_reports, retention, upkeep
from tests.unit.fakes import FakeContainer


class FakeModels:
    def __init__(self, container: FakeContainer):
        self.container = container
        self.audits: list[dict[str, Any]] = []

    def audit(self, action: str, **kw: Any) -> dict[str, Any]:
        self.audits.append({"action": action, **kw})
        return self.audits[-1]


def _container(names: list[str]) -> FakeContainer:
    c = FakeContainer()
    for n in names:
        c.upload_blob(n, b"{}")
    return c


@pytest.fixture
def lake(tmp_path: Any) -> Lake:
    return Lake(FakeContainer(), DeltaLocation(str(tmp_path / "delta")))  # type: ignore[arg-type]


def test_known_keys_lookup_and_absent() -> None:
    known = _Known(pa.array(["a", "b", "c"]), pa.array(["e1", "e2", None]))
    pos, tags = known.lookup(["c", "x", "a"])
    assert (pos >= 0).tolist() == [True, False, True] and tags == [None, None, "e1"]
    assert known.absent({"a", "c"}) == ["b"]
    empty = _Known(pa.array([], pa.string()), pa.array([], pa.string()))
    assert (empty.lookup(["a"])[0] >= 0).tolist() == [False] and empty.absent({"a"}) == []


def test_merge_source_keeps_the_last_row_per_key() -> None:
    rows = pa.table({"id": ["a", "b", "a"], "_deleted": [False, False, True]})
    out = _last_per_key(rows, "id")
    assert out.to_pylist() == [{"id": "b", "_deleted": False}, {"id": "a", "_deleted": True}]
    unique = pa.table({"id": ["x", "y"]})
    assert _last_per_key(unique, "id") is unique


def test_delta_location_of_azurite_and_azure() -> None:
    azurite = location_from_connection_string(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=k==;"
        "BlobEndpoint=http://127.0.0.1:10123/devstoreaccount1;",
        "lake",
    )
    assert azurite.root == "az://lake" and azurite.storage_options == {"use_emulator": "true"}
    assert os.environ["AZURITE_BLOB_STORAGE_URL"] == "http://127.0.0.1:10123"
    azure = location_from_connection_string(
        "AccountName=contoso;AccountKey=abc==;EndpointSuffix=core.windows.net", "lake"
    )
    assert azure.storage_options == {"account_name": "contoso", "account_key": "abc=="}
    assert azure.uri("tables/opportunity") == "az://lake/tables/opportunity"


def test_delete_all_except_keeps_the_prefixes() -> None:
    container = _container(["audit/2026/a.json", "configs/m.json", "versions/m/1/x"])
    assert delete_all_except(container, ("audit/",)) == 2  # type: ignore[arg-type]
    assert container.list_blob_names() == ["audit/2026/a.json"]


def test_retention_purges_lake_and_models_once_when_due(tmp_path: Any) -> None:
    lake = Lake(
        _container(["history/opportunity/x", "jobs/1.json", "metadata/optionsets.json"]), DeltaLocation(str(tmp_path))
    )  # type: ignore[arg-type]
    lake.lease = lambda *a, **kw: contextlib.nullcontext()  # type: ignore[method-assign]
    models = FakeModels(_container(["configs/m.json", "aliases/m.json", "audit/x.json"]))
    since = "2026-01-01"
    early = retention(
        lake, org_status="deleted", since=since, now=dt.datetime(2026, 1, 30, tzinfo=dt.UTC), models=models
    )  # type: ignore[arg-type]
    assert early["refused"] and not early["purged"]
    assert "configs/m.json" in models.container.list_blob_names() and not models.audits
    due = dt.datetime(2026, 1, 31, tzinfo=dt.UTC)
    done = retention(lake, org_status="deleted", since=since, now=due, models=models)  # type: ignore[arg-type]
    assert done["purged"] and done["blobs"] == 2 and done["modelBlobs"] == 2
    assert lake.list("") == ["jobs/1.json", "retention/purged.json"]
    assert models.container.list_blob_names() == ["audit/x.json"]
    assert [a["action"] for a in models.audits] == ["retention_purge"]
    assert models.audits[0]["detail"]["modelBlobs"] == 2
    again = retention(lake, org_status="deleted", since=since, now=due, models=models)  # type: ignore[arg-type]
    assert again.get("already") and len(models.audits) == 1


def test_retention_after_an_earlier_lake_only_purge_still_purges_models(tmp_path: Any) -> None:
    lake = Lake(_container(["jobs/1.json"]), DeltaLocation(str(tmp_path)))  # type: ignore[arg-type]
    lake.write_json("retention/purged.json", {"purgedAt": "2026-02-01T00:00:00Z", "blobs": 9})
    models = FakeModels(_container(["versions/m/0001/model.onnx"]))
    now = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    out = retention(lake, org_status="expired", since="2026-01-01", now=now, models=models)  # type: ignore[arg-type]
    assert out["purged"] and out["modelBlobs"] == 1 and out["blobs"] == 9
    assert not models.container.list_blob_names() and lake.read_json("retention/purged.json")["modelBlobs"] == 1


def test_upkeep_compacts_and_vacuums_once_a_day_and_prunes_old_reports(lake: Lake) -> None:
    for i in range(4):  # four small appends: four files to compact
        lake.tables.append("tables/account", pa.table({"accountid": [f"a{i}"], "name": [f"n{i}"]}))
    lake.write_json("reports/sync/20260101T000000Z-old.json", {})
    lake.write_json("reports/sync/20261130T000000Z-new.json", {})
    now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    assert upkeep(lake, ["account"], now=now - dt.timedelta(days=1)) == {}  # a new lake starts the clock
    done = upkeep(lake, ["account"], now=now)
    assert done["tables"]["tables/account"]["filesRemoved"] == 4
    assert done["tables"]["tables/account"]["filesAdded"] == 1
    assert done["reportsDeleted"] == 1 and lake.list("reports/sync/") == ["reports/sync/20261130T000000Z-new.json"]
    assert lake.read_current("account").num_rows == 4  # compaction keeps every row
    assert upkeep(lake, ["account"], now=now + dt.timedelta(hours=1)) == {}  # not due again yet
    assert upkeep(lake, ["account"], now=now + dt.timedelta(hours=25))["at"] == "2026-12-02T01:00:00Z"


def test_prune_reports_keeps_recent_ones(lake: Lake) -> None:
    lake.write_json("reports/sync/20261115T000000Z-a.json", {})
    assert prune_reports(lake, dt.datetime(2026, 12, 1, tzinfo=dt.UTC), days=30) == 0
    assert prune_reports(lake, dt.datetime(2026, 12, 1, tzinfo=dt.UTC), days=10) == 1


def test_a_sync_message_for_another_lake_is_raised_not_acknowledged() -> None:
    """It used to be logged and acknowledged (so lost); now the host retries it and finally keeps it in the
    poison queue, and the job it names is not touched."""
    from types import SimpleNamespace

    from functions.services.sync.run import SyncMessageError, run_job

    started: list[str] = []
    ctx = SimpleNamespace(settings=SimpleNamespace(lake_container="lake-a"), jobs=SimpleNamespace(start=started.append))
    with pytest.raises(SyncMessageError, match="lake-b"):
        run_job(ctx, {"jobId": "j1", "full": False, "lake": "lake-b"})  # type: ignore[arg-type]
    assert started == []


def test_partition_filter_names_exactly_the_partitions_of_the_replaced_rows() -> None:
    from functions.services.sync.commit import partition_filter

    assert partition_filter({0}) == "t.`statecode` IN (0)"
    assert partition_filter({2, 0, None}) == "t.`statecode` IN (0, 2) OR t.`statecode` IS NULL"
    assert partition_filter(set()) == "false"  # only new rows: no target row can match


def test_known_keys_give_the_partition_of_each_row() -> None:
    known = _Known(pa.array(["a", "b"]), pa.array(["e1", "e2"]), pa.array([0, 2], pa.int64()))
    assert known.states_at(known.positions(["b", "zz"])) == {2}
    assert _Known(pa.array(["a"]), pa.array(["e"])).states_at([0]) == set()  # no partition column


def test_forget_clears_every_threads_opened_tables_and_ended_threads_are_dropped(tmp_path: Any) -> None:
    import threading

    from connectors.delta import DeltaTables

    tables = DeltaTables(DeltaLocation(str(tmp_path)))
    tables.append("t", pa.table({"id": ["a"]}))
    opened: list[Any] = []
    worker = threading.Thread(target=lambda: opened.append(tables.open("t")))
    worker.start()
    worker.join()
    tables.open("t")
    assert len(tables._caches) == 2
    tables.forget()
    assert all(not cache for _, cache in tables._caches)
    tables._local = threading.local()  # as a new thread would see it
    tables.open("t")
    assert len(tables._caches) == 2  # the ended worker's cache was dropped


def test_recover_creates_the_view_a_dead_first_sync_never_wrote(lake: Lake) -> None:
    from functions.services.sync.commit import recover

    ts = pa.array([dt.datetime(2026, 12, 1, tzinfo=dt.UTC)] * 3, pa.timestamp("us", tz="UTC"))
    history = pa.table(
        {
            "id": ["a", "b", "c"],
            "statecode": pa.array([0, 1, None], pa.int64()),
            "_etag": ["1", "2", "3"],
            "_synced_at": ts,
            "_deleted": [False, False, True],
            "_sync_id": ["s1"] * 3,
        }
    )
    info = {"sync_id": "s1", "synced_at": "2026-12-01T00:00:00Z", "delta_link": "L", "mode": "full", "rows": "3"}
    lake.tables.append("history/t", history, metadata={**info, "key": "id", "entity_set": "ts"})
    assert recover(lake, "t") is True
    rows = sorted(lake.read_current("t").to_pylist(), key=lambda r: r["id"])
    assert [(r["id"], r["statecode"]) for r in rows] == [("a", 0), ("b", 1)]  # the deletion row is not a row
    assert "_deleted" not in rows[0] and lake.tables.partition_columns("tables/t") == ["statecode"]
    assert lake.tables.last_commit("tables/t", having="sync_id")["sync_id"] == "s1"
    assert recover(lake, "t") is False  # applied: nothing to do twice


class _BusyLake:
    """A lake whose sync lease another (live) sync holds."""

    @contextlib.contextmanager
    def lease(self, name: str, **_: Any) -> Any:
        from connectors.lake import LeaseBusy

        raise LeaseBusy(f"locks/{name}.lock is leased by another run")
        yield


def test_a_sync_job_that_finds_another_sync_running_does_not_read_as_succeeded() -> None:
    from connectors.blobs import JsonBlobs
    from connectors.jobs import JobStore
    from functions.app_context import AppContext
    from functions.services.sync import run as sync_run
    from tests.unit.fakes import unit_settings

    ctx = AppContext(unit_settings())
    ctx.__dict__["jobs"] = JobStore(JsonBlobs(FakeContainer()))  # type: ignore[arg-type]
    ctx.__dict__["lake"] = _BusyLake()
    job = ctx.jobs.create("sync", {"full": False})
    assert sync_run.run_job(ctx, {"jobId": job["id"], "full": False, "lake": "lake"}) is None
    ended = ctx.jobs.get(job["id"])
    assert ended["status"] == "failed" and ended["error"]["code"] == "SyncInProgress", ended
    assert "another sync is running" in ended["error"]["message"]


def test_a_poisoned_sync_message_fails_its_job_and_another_lakes_is_kept(monkeypatch: Any) -> None:
    """A sync whose every delivery died used to stay `running` for ever; now the poison trigger ends it
    `failed` (WorkerLost). A message of another lake raises there too, so the host keeps it."""
    import json

    import azure.functions as func

    from connectors.blobs import JsonBlobs
    from connectors.jobs import JobStore
    from functions.app_context import AppContext
    from functions.services.sync.run import SyncMessageError
    from tests.conftest import registry
    from tests.unit.fakes import unit_settings

    ctx = AppContext(unit_settings())
    ctx.__dict__["jobs"] = JobStore(JsonBlobs(FakeContainer()))  # type: ignore[arg-type]
    job = ctx.jobs.create("sync", {"full": False})
    ctx.jobs.start(job["id"])
    poison = registry()["sync_poison"].get_user_function()
    monkeypatch.setattr("functions.sync.get_context", lambda: ctx)
    with pytest.raises(SyncMessageError):
        poison(func.QueueMessage(body=json.dumps({"jobId": job["id"], "lake": "another"}).encode()))
    assert ctx.jobs.get(job["id"])["status"] == "running"
    poison(func.QueueMessage(body=json.dumps({"jobId": job["id"], "lake": ctx.settings.lake_container}).encode()))
    poison(func.QueueMessage(body=b"not ours"))  # logged and dropped
    ended = ctx.jobs.get(job["id"])
    assert ended["status"] == "failed" and ended["error"]["code"] == "WorkerLost", ended
