"""bench_quality's pure helpers: job ids, the peers' view of the product's columns, the guard's report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bench import bench_quality as q


def test_job_id_from_either_accepted_shape() -> None:
    assert q.job_id_of({"job": {"id": "a1", "status": "queued"}}) == "a1"
    assert q.job_id_of({"jobId": "b2", "job": "/api/jobs/b2"}) == "b2"
    assert q.job_id_of({"error": {}}) is None and q.job_id_of("text") is None


def test_category_text_reads_codes_alike() -> None:
    assert [q._category_text(v) for v in (3, 3.0, np.int64(3), "3", True, 2.5, None)] == [
        "3",
        "3",
        "3",
        "3",
        "1",
        "2.5",
        None,
    ]


META = {
    "spec": {
        "features": [
            {"name": "budgetstatus", "kind": "category", "derived": False},
            {"name": "estimatedvalue", "kind": "number", "derived": False},
            {"name": "d_days_open", "kind": "number", "derived": True},
            {"name": "__stage__", "kind": "category", "derived": True},
        ]
    },
    "leakage": {
        "actualvalue": {"excluded": True, "reasons": ["a", "b"]},
        "estimatedvalue": {"excluded": False, "reasons": []},
    },
}


def test_kept_and_excluded_columns_come_from_the_version_meta() -> None:
    kept, derived = q.kept_columns(META)
    assert [f["name"] for f in kept] == ["budgetstatus", "estimatedvalue"]
    assert [f["name"] for f in derived] == ["d_days_open"]
    assert q.excluded_columns(META) == [{"attribute": "actualvalue", "reason": "a; b"}]


def test_peer_frame_types_option_sets_as_categories_and_tolerates_missing_columns() -> None:
    frame = pd.DataFrame(
        {"budgetstatus": pd.array([0, 2, None], dtype="Int64"), "estimatedvalue": ["10", "x", None]}
    )
    kept, _ = q.kept_columns(META)
    X = q.peer_frame(frame, kept + [{"name": "absent", "kind": "number"}])
    assert X["budgetstatus"].tolist()[:2] == ["0", "2"] and pd.isna(X["budgetstatus"].iloc[2])
    assert X["estimatedvalue"].iloc[0] == 10.0 and np.isnan(X["estimatedvalue"].iloc[1])
    assert X["absent"].isna().all()


def test_a_missing_data_set_file_is_reported_not_raised(tmp_path: Path) -> None:
    ds = q.DataSet("gone", "Gone", tmp_path / "nothing.csv", "mappings/gone.json")
    entry = q.measure_dataset(ds, 100, 1, 0)
    assert "missing" in entry["product_error"] and entry["models"] == []


def test_quick_sizes_pick_the_small_data_sets() -> None:
    assert min(q.QUICK_SIZES) < q.QUICK_LIMIT <= min(q.FULL_SIZES)
    assert set(q.QUICK_SET) <= set(q.DATASETS)


def test_mapping_variants_change_only_what_they_name(tmp_path: Path) -> None:
    import json

    shipped = json.loads((q.ROOT / "mappings/bank_marketing.json").read_text())
    plain = q.DATASETS["bank_marketing"]
    assert plain.mapping_file(str(tmp_path)) == q.ROOT / "mappings/bank_marketing.json"
    variant = json.loads(q.DATASETS["bank_marketing_no_duration"].mapping_file(str(tmp_path)).read_text())
    assert "duration" not in variant["columns"] and "duration" in variant["ignore"]
    assert variant["columns"] == {k: v for k, v in shipped["columns"].items() if k != "duration"}
    shuffled = json.loads(q.DATASETS["ibm_sales_win_loss_shuffled"].mapping_file(str(tmp_path)).read_text())
    assert shuffled["order_by"] is None and shuffled["shuffle_seed"] == 7
