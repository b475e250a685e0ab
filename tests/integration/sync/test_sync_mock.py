"""The sync against the mock Dataverse (HTTPS, MSAL) and Azurite: exact copies, incremental changes with
history, faults, a killed run, concurrent runs, the HTTP/queue/timer triggers and retention."""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import uuid
from collections import Counter
from typing import Any

import azure.functions as func
import pytest
from azure.functions.timer import TimerRequest

from connectors.blobs import container_client
from connectors.dataverse import DataverseClient
from connectors.lake import DELETED, ETAG_COLUMN, SYNCED_AT, Lake
from functions.services import sync as sync_service
from functions.services.sync import TABLES, run_sync
from local_runner import stack
from tests.conftest import mock_call, registry

pytestmark = pytest.mark.integration

JSON = {"Content-Type": "application/json"}

SYNCED = [t.logical for t in TABLES]


def _client(info: dict[str, Any], **kw: Any) -> DataverseClient:
    kw.setdefault("backoff_base", 0.05)
    kw.setdefault("backoff_max", 0.5)
    client: DataverseClient = stack.dataverse_client(info, **kw)
    return client


@pytest.fixture
def lake(azurite: Any) -> Lake:
    return Lake(container_client(azurite.connection_string, f"lake-{uuid.uuid4().hex[:10]}"))


def _norm(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, str) and len(value) == 10 and value[4] == "-" and value[7] == "-":
        return value + "T00:00:00Z"
    if isinstance(value, str) and len(value) > 19 and value[10] == "T":
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, int) and not isinstance(value, bool):
        return round(float(value), 4)
    return value


def _key(lake: Lake, table: str) -> str:
    synced = lake.synced(table)
    assert synced, f"{table} was not synced"
    return str(synced["key"])


def assert_lake_equals_mock(lake: Lake, server: Any) -> None:
    """Every synced table's current view holds exactly the mock's rows, every column, every value."""
    for table in SYNCED:
        key = _key(lake, table)
        current = lake.read_current(table)
        lake_rows = {r[key]: r for r in current.to_pylist()}
        mock_rows = {r[key]: r for r in server.org.rows(table)}
        if table == "workflow":
            mock_rows = {k: r for k, r in mock_rows.items() if r.get("category") == 4}
        assert len(lake_rows) == current.num_rows, f"{table}: duplicate ids in the current view"
        assert set(lake_rows) == set(mock_rows), f"{table}: ids differ"
        columns = set(current.column_names) - {ETAG_COLUMN}
        for rid, mrow in mock_rows.items():
            lrow = lake_rows[rid]
            missing = {c for c, v in mrow.items() if v is not None and "@" not in c and c not in columns}
            assert not missing, f"{table}: columns not in the lake: {missing}"
            for c in columns:
                assert _norm(lrow[c]) == _norm(mrow.get(c)), f"{table} {rid} {c}: {lrow[c]!r} != {mrow.get(c)!r}"


def assert_history_clean(lake: Lake) -> None:
    """No row version twice in history, and the last history entry of each id matches the current view."""
    for table in SYNCED:
        key = _key(lake, table)
        hist = lake.read_history(table).to_pylist()
        versions = Counter((r[key], r[ETAG_COLUMN], r[DELETED]) for r in hist)
        dupes = [v for v, n in versions.items() if n > 1]
        assert not dupes, f"{table}: duplicated history rows {dupes[:3]}"
        last: dict[str, dict[str, Any]] = {}
        for r in sorted(hist, key=lambda r: r[SYNCED_AT]):
            last[r[key]] = r
        current = {r[key]: r for r in lake.read_current(table).to_pylist()}
        for rid, r in last.items():
            if r[DELETED]:
                assert rid not in current, f"{table}: {rid} deleted in history but current"
            else:
                assert rid in current and current[rid][ETAG_COLUMN] == r[ETAG_COLUMN], f"{table}: {rid} gap"
        assert set(current) <= set(last), f"{table}: current rows without history"


def test_full_sync_copies_every_table_and_its_metadata(mock: dict, mock_server: Any, lake: Lake) -> None:
    report = run_sync(lake, _client(mock))
    assert report["mode"] == "full" and not report["skipped"]
    assert report["tables"]["opportunity"]["new"] == len(mock_server.org.rows("opportunity"))
    assert_lake_equals_mock(lake, mock_server)
    assert_history_clean(lake)
    labels = lake.read_json("metadata/optionsets.json")
    assert labels["opportunity"]["budgetstatus"]["2"] == "Can Buy"
    attrs = lake.read_json("metadata/attributes/opportunity.json")
    assert any(a["name"] == "_parentaccountid_value" for a in attrs)
    processes = lake.read_json("metadata/processes.json")
    assert [s["stagename"] for s in processes[0]["stages"]][:4] == ["Qualify", "Develop", "Propose", "Close"]
    assert lake.list("reports/sync/") and lake.read_json("state/sync.json")["lastReport"]["runId"] == report["runId"]
    assert lake.synced("opportunity")["delta_link"]
    assert lake.tables.partition_columns("tables/opportunity") == ["statecode"]


def test_incremental_after_simulate_records_new_changed_and_deleted(mock: dict, mock_server: Any, lake: Lake) -> None:
    client = _client(mock)
    run_sync(lake, client)
    before = {r["opportunityid"] for r in mock_server.org.rows("opportunity")}
    mock_call(mock, "POST", "/_mock/simulate", {"days": 10})
    after = {r["opportunityid"] for r in mock_server.org.rows("opportunity")}
    report = run_sync(lake, client)
    opp = report["tables"]["opportunity"]
    assert opp["mode"] == "incremental"
    assert opp["new"] == len(after - before) > 0
    assert opp["deleted"] == len(before - after)
    assert opp["changed"] > 0
    assert_lake_equals_mock(lake, mock_server)
    assert_history_clean(lake)
    hist = lake.read_history("opportunity")
    assert hist.num_rows == len(before) + opp["new"] + opp["changed"] + opp["deleted"]


def test_forced_full_resync_of_an_unchanged_org_changes_nothing(mock: dict, mock_server: Any, lake: Lake) -> None:
    client = _client(mock)
    run_sync(lake, client)
    rows = lake.read_history("opportunity").num_rows
    report = run_sync(lake, client, full=True)
    assert report["totals"]["new"] == report["totals"]["changed"] == report["totals"]["deleted"] == 0
    assert lake.read_history("opportunity").num_rows == rows
    assert_lake_equals_mock(lake, mock_server)


def test_faults_give_identical_result_and_honour_retry_after(mock: dict, mock_server: Any, lake: Lake) -> None:
    mock_call(
        mock,
        "POST",
        "/_mock/faults",
        {"rate_429": 0.2, "rate_503": 0.2, "rate_drop": 0.05, "retry_after": 1, "seed": 11},
    )
    waits: list[float] = []
    import time as _time

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        _time.sleep(seconds)

    client = _client(mock, sleep=sleep, max_retries=12)
    report = run_sync(lake, client, page_size=500)
    mock_call(mock, "POST", "/_mock/faults", {})
    stats = mock_call(mock, "GET", "/_mock/stats")
    throttled = int(stats["by_status"].get("429", 0))
    assert throttled > 0 and int(stats["by_status"].get("503", 0)) > 0
    assert client.stats["throttled"] == throttled
    assert client.stats["retry_after_waits"] == [1.0] * throttled  # exactly the server's Retry-After
    assert waits.count(1.0) >= throttled
    assert client.stats["dropped"] > 0
    assert report["retries"] >= throttled
    assert_lake_equals_mock(lake, mock_server)
    assert_history_clean(lake)


class _Killed(Exception):
    pass


class _DyingClient:
    """A real client that 'dies' after `pages` collection pages (as if the process was killed)."""

    def __init__(self, client: DataverseClient, pages: int):
        self._client, self._left = client, pages

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def _wrap(self, it: Any) -> Any:
        for page in it:
            if self._left <= 0:
                raise _Killed("killed")
            self._left -= 1
            yield page

    def iter_pages(self, *a: Any, **kw: Any) -> Any:
        return self._wrap(self._client.iter_pages(*a, **kw))

    def iter_delta(self, *a: Any, **kw: Any) -> Any:
        return self._wrap(self._client.iter_delta(*a, **kw))


def test_killed_sync_rerun_has_no_duplicates_or_gaps(mock: dict, mock_server: Any, lake: Lake) -> None:
    client = _client(mock)
    with pytest.raises(_Killed):  # killed during the very first full sync
        run_sync(lake, _DyingClient(client, 2), page_size=500, workers=1)
    assert not lake.synced("opportunity")
    run_sync(lake, client, page_size=500)
    mock_call(mock, "POST", "/_mock/simulate", {"days": 5})
    with pytest.raises(_Killed):  # killed during an incremental sync
        run_sync(lake, _DyingClient(client, 3), page_size=500, workers=1)

    # killed between a table's history commit and its MERGE into the current view
    mock_call(mock, "POST", "/_mock/simulate", {"days": 2})
    real_merge = lake.tables.merge

    def dying_merge(*a: Any, **kw: Any) -> Any:
        raise _Killed("killed during commit")

    lake.tables.merge = dying_merge  # type: ignore[method-assign]
    with pytest.raises(_Killed):
        run_sync(lake, client, page_size=500, workers=1)
    lake.tables.merge = real_merge  # type: ignore[method-assign]
    missed = lake.synced("opportunity")
    assert int(missed["rows"]) > 0  # the history holds the run; the current view does not yet
    assert lake.tables.last_commit("tables/opportunity", having="sync_id")["sync_id"] != missed["sync_id"]
    mock_call(mock, "POST", "/_mock/simulate", {"days": 3})
    report = run_sync(lake, client, page_size=500)
    assert report["tables"]["opportunity"]["recovered"] is True
    assert_lake_equals_mock(lake, mock_server)
    assert_history_clean(lake)


def test_two_syncs_started_together_one_skips(mock: dict, lake: Lake, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    reports: list[dict[str, Any]] = []
    barrier = threading.Barrier(2)

    def go() -> None:
        client = _client(mock)
        barrier.wait()
        reports.append(run_sync(lake, client))

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(r["skipped"] for r in reports) == [False, True]
    skipped = next(r for r in reports if r["skipped"])
    assert "another sync is running" in skipped["reason"]
    assert any("skipped: another sync is running" in rec.getMessage() for rec in caplog.records)


def _ctx(settings_values: dict[str, str], **overrides: str) -> Any:
    from functions.app_context import AppContext, set_context
    from functions.settings import load_settings

    ctx = AppContext(load_settings({**settings_values, **overrides}))
    set_context(ctx)
    return ctx


def test_http_queue_and_timer_triggers(mock: dict, mock_server: Any, settings_values: dict[str, str]) -> None:
    from functions.app_context import set_context

    ctx = _ctx(settings_values)
    try:
        start = registry()["start_sync"].get_user_function()
        bad = start(func.HttpRequest("POST", "http://localhost/api/sync", headers=JSON, body=b'{"full": "yes"}'))
        assert bad.status_code == 400
        resp = start(func.HttpRequest("POST", "http://localhost/api/sync", headers=JSON, body=b'{"full": true}'))
        assert resp.status_code == 202
        job = json.loads(resp.get_body())["job"]
        assert job["status"] == "queued" and job["params"]["full"] is True
        message = {"jobId": job["id"], "full": True, "lake": ctx.settings.lake_container}
        registry()["sync_worker"].get_user_function()(func.QueueMessage(body=json.dumps(message).encode()))
        done = ctx.jobs.get(job["id"])
        assert done["status"] == "succeeded", done
        assert done["result"]["tables"]["opportunity"]["new"] == len(mock_server.org.rows("opportunity"))
        get_job = registry()["get_job"].get_user_function()
        shown = json.loads(
            get_job(func.HttpRequest("GET", "http://x/api/jobs/x", route_params={"id": job["id"]}, body=b"")).get_body()
        )
        assert shown["result"]["runId"] == done["result"]["runId"]
        # the timer runs an incremental sync
        assert registry()["sync_timer"].get_user_function()(TimerRequest(past_due=False)) is None
        state = ctx.lake.read_json("state/sync.json")
        assert state["lastReport"]["mode"] == "incremental"
    finally:
        set_context(None)


def test_retention_purges_30_days_after_expiry_on_the_mock_clock(mock: dict, settings_values: dict[str, str]) -> None:
    from functions.app_context import set_context

    ctx = _ctx(settings_values)
    try:
        sync_service.run_checked(ctx, full=False)
        assert ctx.lake.synced("opportunity")
        ctx.jobs.create("sync", {})
        # models trained on the org's data: derived data, purged with it (the audit log stays)
        store = ctx.model_store
        store.blobs.write("configs/m1.json", {"name": "m1"})
        store.blobs.write("aliases/m1.json", {"published": 1})
        ctx.model_container.upload_blob("versions/m1/0001/model.onnx", b"onnx")
        store.blobs.write("versions/m1/0001/meta.json", {"metrics": {}})
        store.audit("create", actor="tester", model="m1")
    finally:
        set_context(None)
    today = mock_call(mock, "GET", "/_mock/clock")["now"][:10]
    ctx = _ctx(settings_values, ORG_STATUS="expired", ORG_STATUS_SINCE=today)
    try:
        refused = sync_service.run_checked(ctx, full=False)
        assert refused["skipped"] and refused["retention"]["purged"] is False
        assert ctx.lake.synced("opportunity")  # nothing purged before 30 days
        assert ctx.model_store.blobs.read("configs/m1.json")
        mock_call(mock, "POST", "/_mock/simulate", {"days": 29})
        assert sync_service.run_checked(ctx, full=False)["retention"]["purged"] is False
        mock_call(mock, "POST", "/_mock/simulate", {"days": 2})
        purged = sync_service.run_checked(ctx, full=False)["retention"]
        assert purged["purged"] is True and purged["blobs"] > 0 and purged["modelBlobs"] == 4
        left = ctx.lake.list("")
        assert left and all(p.startswith(("jobs/", "locks/", "retention/")) for p in left)
        assert ctx.lake.read_current("opportunity").num_rows == 0
        models_left = list(ctx.model_container.list_blob_names())
        assert models_left and all(p.startswith("audit/") for p in models_left)
        actions = [e["action"] for e in ctx.model_store.audit_log()]
        assert actions == ["retention_purge", "create"]
        record = ctx.model_store.audit_log()[0]
        assert record["actor"] == "retention" and record["detail"]["modelBlobs"] == 4
        # a later trigger finds the marker: nothing purged or audited twice
        again = sync_service.run_checked(ctx, full=False)["retention"]
        assert again["purged"] is True and again.get("already") is True
        assert len(ctx.model_store.audit_log()) == 2
    finally:
        set_context(None)
