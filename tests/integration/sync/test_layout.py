"""The segmented current view on Azurite + the mock: an incremental sync rewrites only the files that hold
changed rows, writes nothing for unchanged tables, keeps small files bounded, migrates a lake written in
the earlier one-folder layout, and stays plain Parquet that pandas reads from the manifest alone."""

from __future__ import annotations

import io
import uuid
from typing import Any

import pandas as pd
import pytest

from connectors.blobs import container_client
from connectors.lake import Lake
from functions.services.sync import ACTIVE, INACTIVE, MAX_SMALL_FILES, run_sync
from tests.conftest import mock_call
from tests.integration.sync.test_sync_mock import _client, assert_history_clean, assert_lake_equals_mock

pytestmark = pytest.mark.integration


@pytest.fixture
def lake(azurite: Any) -> Lake:
    return Lake(container_client(azurite.connection_string, f"lake-{uuid.uuid4().hex[:10]}"))


def _files(lake: Lake, table: str) -> list[dict[str, Any]]:
    return list((lake.manifest(table) or {})["files"])


def test_incremental_rewrites_only_touched_files(mock: dict, mock_server: Any, lake: Lake) -> None:
    client = _client(mock)
    run_sync(lake, client, file_rows=400)
    before = {t: _files(lake, t) for t in ("opportunity", "account", "processstage")}
    opp = before["opportunity"]
    assert {f["segment"] for f in opp} == {ACTIVE, INACTIVE}
    assert all(f["rows"] <= 400 for f in opp) and len(opp) > 3
    # every file holds only its segment's rows
    for f in opp:
        states = set(lake.read_parquet(f["path"], columns=["statecode"]).column(0).to_pylist())
        assert states == {0} if f["segment"] == ACTIVE else 0 not in states
    history_before = {t: list(lake.manifest(t)["history"]) for t in before}
    blobs_before = set(lake.list("tables/account/")) | set(lake.list("index/account/"))

    mock_call(mock, "POST", "/_mock/simulate", {"days": 2})
    report = run_sync(lake, client, file_rows=400)
    assert report["tables"]["opportunity"]["changed"] > 0
    after = _files(lake, "opportunity")
    kept = [f for f in opp if f in after]
    assert kept and all(f["segment"] == INACTIVE for f in kept)  # closed deals untouched, byte for byte
    assert report["tables"]["opportunity"]["files_kept"] == len(kept)
    # tables the delta left alone: same files, no history part, no new blob at all
    for table in ("account", "processstage"):
        assert _files(lake, table) == before[table]
        assert lake.manifest(table)["history"] == history_before[table]
        assert report["tables"][table]["files_written"] == 0
    assert set(lake.list("tables/account/")) | set(lake.list("index/account/")) == blobs_before
    assert_lake_equals_mock(lake, mock_server)
    assert_history_clean(lake)
    _assert_plain_parquet(lake)


def test_small_files_stay_bounded_over_many_runs(mock: dict, mock_server: Any, lake: Lake) -> None:
    client = _client(mock)
    run_sync(lake, client, file_rows=2000)
    for _ in range(4):
        mock_call(mock, "POST", "/_mock/simulate", {"days": 1})
        run_sync(lake, client, file_rows=2000)
        for segment in (ACTIVE, INACTIVE):
            small = [
                f for f in _files(lake, "opportunity") if f["segment"] == segment and f["rows"] < 2000 // 4
            ]
            assert len(small) <= MAX_SMALL_FILES + 1
    assert_lake_equals_mock(lake, mock_server)
    assert_history_clean(lake)


def test_lake_in_the_earlier_layout_is_migrated(mock: dict, mock_server: Any, lake: Lake) -> None:
    client = _client(mock)
    run_sync(lake, client)
    for table in ("opportunity", "opportunitysalesprocess"):  # as written before: no file list, no index
        manifest, etag = lake.manifest_with_etag(table)
        assert manifest is not None
        for f in manifest.pop("files"):
            lake.delete(f["keys"])
        manifest.pop("layout")
        lake.commit_manifest(table, manifest, etag)
    mock_call(mock, "POST", "/_mock/simulate", {"days": 3})
    run_sync(lake, client)
    assert {f["segment"] for f in _files(lake, "opportunity")} == {ACTIVE, INACTIVE}
    assert_lake_equals_mock(lake, mock_server)
    assert_history_clean(lake)
    # a lost key index: the sync reads the keys from the data file it indexes
    lake.delete(_files(lake, "opportunity")[0]["keys"])
    mock_call(mock, "POST", "/_mock/simulate", {"days": 2})
    run_sync(lake, client)
    assert_lake_equals_mock(lake, mock_server)
    assert_history_clean(lake)


def _assert_plain_parquet(lake: Lake) -> None:
    """pandas alone, from the manifest's lists, reads what `read_current` returns (one row per id)."""
    manifest = lake.manifest("opportunity")
    assert manifest is not None

    def frame(paths: list[str]) -> pd.DataFrame:
        return pd.concat(
            [pd.read_parquet(io.BytesIO(lake.container.download_blob(p).readall())) for p in paths],
            ignore_index=True,
        )

    plain = frame(manifest["current"])
    ours = lake.read_current("opportunity").to_pandas()
    assert plain["opportunityid"].is_unique and len(plain) == len(ours) == manifest["rows"]
    key, columns = "opportunityid", sorted(ours.columns)
    pd.testing.assert_frame_equal(
        plain.sort_values(key).reset_index(drop=True)[columns],
        ours.sort_values(key).reset_index(drop=True)[columns],
        check_dtype=False,
    )
    assert len(frame(manifest["history"])) == manifest["history_rows"]
