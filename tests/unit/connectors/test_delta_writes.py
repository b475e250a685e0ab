"""Streamed appends and commit metadata on a real local Delta table: a stream split by partition still
writes full row groups (a reader fetches a column once per row group), and `last_commit(having=)` finds
the newest commit carrying a key behind maintenance commits that carry none."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from connectors import delta, delta_stream
from connectors.delta import DeltaLocation, DeltaTables


def _stream(rows: int, batch: int) -> pa.RecordBatchReader:
    table = pa.table({"id": [f"r{i:06d}" for i in range(rows)], "state": [i % 3 for i in range(rows)]})
    return pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=batch))


def test_a_partitioned_stream_writes_whole_row_groups(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(delta_stream, "ROW_GROUP_ROWS", 1000)
    tables = DeltaTables(DeltaLocation(str(tmp_path)))
    tables.append_stream("t", _stream(9000, batch=600), partition_by="state")  # 200 rows a partition a batch
    files = tables.open("t").file_uris()  # type: ignore[union-attr]
    assert len(files) == 3
    for uri in files:
        meta = pq.ParquetFile(uri).metadata
        sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        assert sum(sizes) == 3000 and all(n >= 1000 for n in sizes[:-1]), sizes
    rows = tables.read("t")
    assert rows is not None and rows.num_rows == 9000 and len(set(rows["id"].to_pylist())) == 9000


def test_last_commit_looks_past_commits_without_the_key(tmp_path: Path) -> None:
    tables = DeltaTables(DeltaLocation(str(tmp_path)))
    tables.append("t", pa.table({"id": ["a"]}), metadata={"sync_id": "s1"})
    tables.append("t", pa.table({"id": ["b"]}), metadata={"sync_id": "s2"})
    for _ in range(10):  # commits with no sync id, deeper than the first look
        tables.append("t", pa.table({"id": ["c"]}))
    assert tables.last_commit("t", having="sync_id")["sync_id"] == "s2"
    assert tables.last_commit("t", having="sync_id", depth=5) == {}
    assert "sync_id" not in tables.last_commit("t")


def test_a_pinned_table_sees_its_own_commits_without_rereading_the_log(tmp_path: Path) -> None:
    ours, other = DeltaTables(DeltaLocation(str(tmp_path))), DeltaTables(DeltaLocation(str(tmp_path)))
    ours.append("t", pa.table({"id": ["a"], "state": [0]}))
    with ours.pinned():
        assert ours.read("t").num_rows == 1  # type: ignore[union-attr]
        other.append("t", pa.table({"id": ["x"], "state": [0]}))  # a writer that does not hold the lease
        assert ours.read("t").num_rows == 1  # type: ignore[union-attr]  # not re-read within the block
        ours.append("t", pa.table({"id": ["b"], "state": [0]}))  # a commit of our own: conflict-checked
        ours.append_stream("t", _stream(5, batch=5))  # a write transaction: refreshed after it
        assert ours.read("t").num_rows == 8  # type: ignore[union-attr]
        ours.merge("t", pa.table({"id": ["a"], "state": [2]}), ["id"])
        assert sorted(ours.read("t")["id"].to_pylist()) == sorted(["a", "x", "b"] + [f"r{i:06d}" for i in range(5)])  # type: ignore[index]
    other.append("t", pa.table({"id": ["y"], "state": [0]}))
    assert "y" in ours.read("t")["id"].to_pylist()  # type: ignore[index]  # outside the block: up to date


def test_a_versions_last_commit_is_read_once(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    reads: list[int] = []
    real = delta._last_commit
    monkeypatch.setattr(delta, "_last_commit", lambda table, *a: reads.append(table.version()) or real(table, *a))
    tables = DeltaTables(DeltaLocation(str(tmp_path)))
    tables.append("t", pa.table({"id": ["a"]}), metadata={"sync_id": "s1"})
    assert tables.last_commit("t", having="sync_id")["sync_id"] == "s1"
    assert tables.last_commit("t", having="sync_id")["sync_id"] == "s1"
    assert reads == [0]
    tables.append("t", pa.table({"id": ["b"]}), metadata={"sync_id": "s2"})
    assert tables.last_commit("t", having="sync_id")["sync_id"] == "s2"
    tables.forget()  # e.g. after the table's blobs were deleted: read again
    assert tables.last_commit("t", having="sync_id")["sync_id"] == "s2"
    assert reads == [0, 1, 1]
