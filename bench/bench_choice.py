"""What the validation fold can see of the test: every candidate of the product on each shared data set, its
validation AUC (what the choice reads) beside its test AUC and ECE (what the benchmark reads).

`python -m bench.bench_choice [--only KEY ...]`: each data set of bench/bench_quality.py goes through the
mock and `services.sync` into a lake on Azurite (no function host: only the lake is needed), then
`modeling.train.train_model` trains one version per candidate (`candidates=[name]`, so the test figures are
the candidate's own, with the calibration it would get) on the same time split the product uses. With
`--no-winsorising` every candidate is trained a second time with the attributes' winsorising off (numbers
beyond the training 0.5%..99.5% range are then not clipped, so a linear model extrapolates): a counterfactual
of the product's feature preparation, measured and not shipped.

Output: one JSON object (stdout); stderr shows one line per candidate. A data set whose validation ranks a
candidate last while its test ranks it first is one where no validation-based choice can follow the drift.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any
from unittest import mock

from bench.bench_quality import DATASETS, FULL_SIZES, ORG_SEED, DataSet
from bench.common import emit, local_org, log
from modeling.choice import CANDIDATES


def lake_tables(ds: DataSet, size: int, tmp: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The data set as the product's lake holds it after a full sync: (tables, metadata)."""
    from connectors.blobs import container_client
    from connectors.lake import Lake
    from functions.services.sync import run_sync
    from functions.services.training import load_metadata, load_tables
    from local_runner import stack

    with local_org(tmp, size, ORG_SEED, timeout=900, mock_args=ds.mock_args(size, tmp)) as (azurite, org, _):
        lake = Lake(container_client(azurite.connection_string, f"choice{uuid.uuid4().hex[:8]}"))
        run_sync(lake, stack.dataverse_client(org.info), workers=3, temp_dir=tmp)
        return load_tables(lake), load_metadata(lake)


@contextlib.contextmanager
def winsorising(on: bool) -> Iterator[None]:
    """The product's feature spec as built (on), or with no attribute winsorised (off: the counterfactual)."""
    if on:
        yield
        return
    import modeling.train
    from modeling.features import build_spec

    def unclipped(*args: Any, **kwargs: Any) -> dict[str, Any]:
        spec = build_spec(*args, **kwargs)
        for f in spec["features"]:
            if not f.get("derived") and f.get("clip") is not None:
                f["clip"] = None
        return spec

    with mock.patch.object(modeling.train, "build_spec", unclipped):
        yield


def measure(ds: DataSet, size: int, variants: Sequence[bool]) -> dict[str, Any]:
    from modeling.config import validate_with_metadata
    from modeling.dataset import build_training_frame
    from modeling.train import train_model

    with tempfile.TemporaryDirectory(prefix=f"bench-choice-{ds.key}-") as tmp:
        t = time.perf_counter()
        tables, metadata = lake_tables(ds, size, tmp)
        log(f"{ds.key}: synced in {time.perf_counter() - t:.1f} s")
    now = datetime.now(UTC)
    config = validate_with_metadata({"name": "Choice"}, metadata, now=now)
    data = build_training_frame(tables, metadata, config, now)
    rows = []
    for clipped in variants:
        for name in CANDIDATES:
            with winsorising(clipped):
                meta = train_model(data, config, candidates=[name], explain=False).meta
            if meta["candidate"] != name:  # no derived feature kept: the same model as its attributes twin
                continue
            m = meta["metrics"]
            row = {
                "candidate": name,
                "winsorised": clipped,
                "validation_auc": meta["candidates"][name]["validation_auc"],
                "test_auc": m["auc"],
                "test_ece": m["ece"],
                "test_ece_uncalibrated": m["ece_uncalibrated"],
                "calibration": meta["calibration"]["method"],
            }
            rows.append(row)
            log(f"{ds.key}: {row}")
    return {"dataset": ds.title, "key": ds.key, "counts": data.counts, "candidates": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=FULL_SIZES[0], help="synthetic org size")
    parser.add_argument("--only", nargs="*", choices=sorted(DATASETS), help="data sets (default: all)")
    parser.add_argument("--no-winsorising", action="store_true", help="also train without winsorising")
    args = parser.parse_args(argv)
    keys = args.only or list(DATASETS)
    variants = (True, False) if args.no_winsorising else (True,)
    out = []
    for key in keys:
        ds = DATASETS[key]
        if ds.file is not None and not ds.file.exists():
            out.append({"dataset": ds.title, "key": key, "error": f"{ds.file} is missing"})
            continue
        out.append(measure(ds, args.size, variants))
    emit("choice", {"size": args.size, "no_winsorising": args.no_winsorising}, [], datasets=out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
