"""Unit tests (fake containers, no I/O) for the current view's segments, part sizes, the container purge
and the retention decisions, including the model container purge."""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from connectors.lake import Lake, delete_all_except
from functions.services.sync import ACTIVE, INACTIVE, _segments, retention


class FakeContainer:
    """The few ContainerClient calls the lake makes, on a dict."""

    def __init__(self, blobs: dict[str, bytes] | None = None):
        self.blobs: dict[str, bytes] = dict(blobs or {})

    def upload_blob(self, name: str, data: Any, **_: Any) -> None:
        self.blobs[name] = data.read() if hasattr(data, "read") else bytes(data)

    def list_blob_names(self, name_starts_with: str = "") -> list[str]:
        return sorted(n for n in self.blobs if n.startswith(name_starts_with))

    def delete_blobs(self, *names: str) -> None:
        for n in names:
            self.blobs.pop(n, None)


class FakeModels:
    def __init__(self, container: FakeContainer):
        self.container = container
        self.audits: list[dict[str, Any]] = []

    def audit(self, action: str, **kw: Any) -> dict[str, Any]:
        self.audits.append({"action": action, **kw})
        return self.audits[-1]


class FakeLake:
    """What `retention` uses of a Lake: JSON blobs, listing, deletes and the lease."""

    def __init__(self, names: list[str]):
        self.docs: dict[str, Any] = {}
        self.names = list(names)

    def read_json(self, path: str) -> Any:
        return self.docs.get(path)

    def write_json(self, path: str, doc: Any, **_: Any) -> str:
        self.docs[path] = doc
        return "etag"

    def list(self, prefix: str) -> list[str]:
        return [n for n in self.names if n.startswith(prefix)]

    def delete_paths(self, paths: list[str]) -> int:
        self.names = [n for n in self.names if n not in paths]
        return len(paths)

    def lease(self, *a: Any, **kw: Any) -> Any:
        import contextlib

        return contextlib.nullcontext()


def test_segments_split_on_statecode_and_keep_nulls_active() -> None:
    t = pa.table({"id": ["a", "b", "c", "d"], "statecode": pa.array([0, 1, None, 2], pa.int64())})
    parts = _segments(t)
    assert parts[ACTIVE].column("id").to_pylist() == ["a", "c"]
    assert parts[INACTIVE].column("id").to_pylist() == ["b", "d"]
    no_state = pa.table({"id": ["x", "y"]})
    assert list(_segments(no_state)) == [ACTIVE] and _segments(no_state)[ACTIVE].num_rows == 2


def test_part_writer_never_exceeds_max_rows(tmp_path: Any) -> None:
    container = FakeContainer()
    lake = Lake(container, temp_dir=str(tmp_path))  # type: ignore[arg-type]
    schema = pa.schema([pa.field("id", pa.int64())])
    with lake.part_writer("t/current/1/active", schema, max_rows=400) as w:
        for start in range(0, 1000, 300):  # pages of 300 rows (the last one 100)
            w.write(pa.table({"id": list(range(start, min(start + 300, 1000)))}, schema=schema))
    assert w.part_rows == [400, 400, 200] and w.rows == 1000
    ids: list[int] = []
    for path in w.parts:
        ids += pq.read_table(io.BytesIO(container.blobs[path])).column("id").to_pylist()
    assert ids == list(range(1000))


def test_delete_all_except_keeps_the_prefixes() -> None:
    container = FakeContainer({"audit/2026/a.json": b"{}", "configs/m.json": b"{}", "versions/m/1/x": b""})
    assert delete_all_except(container, ("audit/",)) == 2  # type: ignore[arg-type]
    assert list(container.blobs) == ["audit/2026/a.json"]


def test_retention_purges_lake_and_models_once_when_due() -> None:
    lake = FakeLake(["tables/opportunity/manifest.json", "jobs/1.json", "metadata/optionsets.json"])
    models = FakeModels(
        FakeContainer({"configs/m.json": b"{}", "aliases/m.json": b"{}", "audit/x.json": b""})
    )
    since = "2026-01-01"
    early = retention(
        lake,  # type: ignore[arg-type]
        org_status="deleted",
        since=since,
        now=dt.datetime(2026, 1, 30, tzinfo=dt.UTC),
        models=models,
    )
    assert early is not None and early["refused"] and not early["purged"]
    assert "configs/m.json" in models.container.blobs and not models.audits
    due = dt.datetime(2026, 1, 31, tzinfo=dt.UTC)
    done = retention(lake, org_status="deleted", since=since, now=due, models=models)  # type: ignore[arg-type]
    assert done is not None and done["purged"] and done["blobs"] == 2 and done["model_blobs"] == 2
    assert lake.names == ["jobs/1.json"]
    assert list(models.container.blobs) == ["audit/x.json"]
    assert [a["action"] for a in models.audits] == ["retention_purge"]
    assert models.audits[0]["detail"]["model_blobs"] == 2
    again = retention(lake, org_status="deleted", since=since, now=due, models=models)  # type: ignore[arg-type]
    assert again is not None and again.get("already") and len(models.audits) == 1


def test_retention_after_an_earlier_lake_only_purge_still_purges_models() -> None:
    lake = FakeLake(["jobs/1.json"])
    lake.docs["retention/purged.json"] = {"purged_at": "2026-02-01T00:00:00Z", "blobs": 9}
    models = FakeModels(FakeContainer({"versions/m/0001/model.onnx": b"x"}))
    now = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    out = retention(lake, org_status="expired", since="2026-01-01", now=now, models=models)  # type: ignore[arg-type]
    assert out is not None and out["purged"] and out["model_blobs"] == 1 and out["blobs"] == 9
    assert not models.container.blobs and lake.docs["retention/purged.json"]["model_blobs"] == 1
    assert retention(lake, org_status="active", since=None, now=now, models=models) is None  # type: ignore[arg-type]


def test_old_view_lookups() -> None:
    from functions.services.sync import _Old

    class Files:
        def parquet_files(self, paths: list[str]) -> dict[str, Any]:
            out = {}
            for p in paths:
                ids = ["a", "b"] if p.endswith("0.parquet") else ["c", "d"]
                buf = io.BytesIO()
                pq.write_table(pa.table({"id": ids, "_etag": [f"e-{i}" for i in ids]}), buf)
                out[p] = pq.ParquetFile(pa.BufferReader(buf.getvalue()))
            return out

    manifest = {
        "files": [
            {"path": "k/0.parquet", "keys": "i/0.parquet", "rows": 2, "segment": INACTIVE},
            {"path": "k/1.parquet", "keys": "i/1.parquet", "rows": 2, "segment": ACTIVE},
        ]
    }
    old = _Old(Files(), manifest, "id")  # type: ignore[arg-type]
    assert not old.legacy
    assert old.positions(pa.array(["c", "x", "a", "c"])).to_pylist() == [2, None, 0, None]
    assert old.tags.take(pa.array([2])).to_pylist() == ["e-c"]
    assert old.holds(["d", "zz"]) == [True, False]
    assert old.files_holding({"d", "zz"}) == {1} and old.files_holding({"a", "c"}) == {0, 1}
    assert old.absent_from({"a", "b", "c"}) == ["d"]
    assert old.key_paths() == ["i/0.parquet", "i/1.parquet"]
    legacy = _Old(Files(), {"current": ["t/0.parquet"]}, "id")  # type: ignore[arg-type]
    assert legacy.legacy and legacy.files[0]["rows"] == 2 and legacy.files[0]["segment"] == "mixed"
