"""The filtered reads scoring relies on, on a real local Delta table: pyarrow filters still work after a
MERGE (whose files store strings as string_view), and `prune` skips files by the log's statistics."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from connectors.delta import DeltaLocation, DeltaTables


def test_filters_work_on_merged_files_and_prune_skips_files(tmp_path: Path) -> None:
    tables = DeltaTables(DeltaLocation(str(tmp_path)))
    for run in ("a", "b", "c"):
        ids = [f"{run}-{i:03d}" for i in range(100)]
        tables.append("t", pa.table({"id": ids, "run": [run] * 100, "score": list(range(100))}))
    changed = pa.table({"id": ["b-001", "c-002"], "run": ["b", "c"], "score": [500, 600]})
    tables.merge("t", changed, ["id"])  # rewrites two files (string_view strings)
    wanted = pc.field("id").isin(["b-001", "c-002", "a-003"])
    rows = tables.read("t", ["id", "score"], filters=wanted)
    assert rows is not None and sorted(zip(rows["id"].to_pylist(), rows["score"].to_pylist(), strict=True)) == [
        ("a-003", 3),
        ("b-001", 500),
        ("c-002", 600),
    ]
    only_score = tables.read("t", ["score"], filters=pc.field("id") == "b-001")  # filter on a column not read
    assert only_score is not None and only_score.column_names == ["score"] and only_score["score"].to_pylist() == [500]
    pruned = tables.read("t", ["id"], filters=pc.field("run") == "a", prune=[("run", "=", "a")])
    assert pruned is not None and pruned.num_rows == 100
    assert tables.read("t", ["id"], prune=[("run", "=", "zzz")]).num_rows == 0  # type: ignore[union-attr]
