"""Sync benchmark: full syncs of N opportunities (plus their accounts, users, BPF instances, stages and
processes) from the local mock over HTTPS into Delta tables on Azurite, each followed by an incremental sync
after the mock simulated a day (about 1.4% of opportunities new, changed or deleted).

`python -m bench.bench_sync --size N [--reps R] [--days D] [--workers W]`. Azurite and the mock run as child
processes (stopped by PID); the syncs run in this process, so `peak_rss_mib` is the syncs' own peak (plus
the interpreter). Every repetition syncs into a fresh container (full, then incremental) against the same
mock, so full and incremental times come from the same run under the same machine load; the published
numbers are medians with their spread (max - min).
Goals (issue 4): full sync of 100,000 opportunities <= 60 s and <= 500 MB; incremental <= 1/10 of full.
"""

from __future__ import annotations

import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

from bench.common import comparison, emit, local_org, log, peak_rss_mib, result, size_arg_parser
from connectors.blobs import container_client
from connectors.lake import Lake
from functions.services.sync import run_sync
from local_runner import stack
from tests.conftest import mock_call

QUICK_SIZES = [10_000]
FULL_SIZES = [100_000]


# A fresh interpreter's resident memory after importing what the sync imports, then after delta-rs's first
# write and MERGE of a 1,000-row local table: the library's fixed cost (its runtime, its code pages), paid
# once per process whatever the org's size.
_FIXED_COST = """
import json, sys, tempfile
import pyarrow as pa
def rss():
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) / 1024 for line in fh if line.startswith("VmRSS"))
import functions.services.sync
from deltalake import DeltaTable, write_deltalake
imported = rss()
path = tempfile.mkdtemp() + "/t"
rows = pa.table({"id": [str(i) for i in range(1000)], "v": list(range(1000))})
write_deltalake(path, rows)
DeltaTable(path).merge(rows, "t.id = s.id", source_alias="s", target_alias="t").when_matched_update_all().execute()
print(json.dumps({"imported": imported, "after": rss()}))
"""


def _delta_fixed_cost() -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", _FIXED_COST], capture_output=True, text=True, check=True, timeout=120)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def _stat(values: list[float]) -> tuple[float, float]:
    return statistics.median(values), max(values) - min(values)


def main() -> None:
    parser = size_arg_parser("full and incremental sync from the mock into the lake", 100_000)
    parser.add_argument("--days", type=int, default=1, help="days the mock simulates before the incremental")
    parser.add_argument("--workers", type=int, default=3, help="tables synced in parallel")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    reps = max(1, args.reps)
    results: list[dict[str, Any]] = []
    comparisons, notes = [], []
    with (
        tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp,
        local_org(tmp, args.size, args.seed or 7) as (az, mock, _),
    ):
        info = mock.info
        client = stack.dataverse_client(info)
        rss0 = peak_rss_mib()
        fulls: list[float] = []
        incs: list[float] = []
        ratios: list[float] = []
        shares: list[float] = []
        rows = pages = 0
        rss_first = 0.0
        inc: dict[str, Any] = {}
        for rep in range(reps):
            lake = Lake(container_client(az.connection_string, f"bench-{uuid.uuid4().hex[:8]}"))
            t = time.perf_counter()
            full = run_sync(lake, client, workers=args.workers, temp_dir=tmp)
            full_s = time.perf_counter() - t
            if rep == 0:
                rss_first = peak_rss_mib()  # the first full sync's peak (later reps only add to it)
            rows = sum(s["fetched"] for s in full["tables"].values())
            pages = full["totals"]["pages"]
            # a new seed per repetition: the mock's generator would repeat ids for a repeated seed
            mock_call(info, "POST", "/_mock/simulate", {"days": args.days, "seed": 1000 + rep})
            t = time.perf_counter()
            inc = run_sync(lake, client, workers=args.workers, temp_dir=tmp)
            inc_s = time.perf_counter() - t
            opp = inc["tables"]["opportunity"]
            touched = opp["new"] + opp["changed"] + opp["deleted"]
            share = touched / max(1, full["tables"]["opportunity"]["fetched"])
            fulls.append(full_s)
            incs.append(inc_s)
            ratios.append(full_s / inc_s)
            shares.append(share)
            log(
                f"rep {rep + 1}/{reps}: full {full_s:.2f} s ({rows} rows), incremental {inc_s:.3f} s "
                f"({touched} opportunities touched, {share:.2%}), full/incremental {full_s / inc_s:.1f}"
            )
            per_table = {t: (s["fetchS"], s["commitS"]) for t, s in inc["tables"].items()}
            log(f"  incremental per table (fetch s, commit s): {per_table}")
        rss_all = peak_rss_mib()
        fixed = _delta_fixed_cost()
        full_m, full_sp = _stat(fulls)
        inc_m, inc_sp = _stat(incs)
        ratio_m, ratio_sp = _stat(ratios)
        share_m = statistics.median(shares)
        results += [
            result(
                "full_sync_s",
                full_m,
                "s",
                reps=reps,
                spread=full_sp,
                note=f"{rows} rows in 6 tables, {pages} pages",
            ),
            result("full_sync_rows_per_s", rows / full_m, "rows/s", reps=reps),
            result(
                "peak_rss_mib",
                rss_first,
                "MiB",
                note=f"whole process during the first full sync; {rss0:.0f} MiB before it",
            ),
            result(
                "delta_fixed_cost_mib",
                fixed["after"] - fixed["imported"],
                "MiB",
                note=f"a fresh process's first Delta write + MERGE of 1,000 rows (after imports: "
                f"{fixed['imported']:.0f} MiB); paid once per process, whatever the org's size",
            ),
            result(
                "peak_rss_all_reps_mib",
                rss_all,
                "MiB",
                note=f"whole process after {reps} full + incremental syncs (allocator pools grow)",
            ),
            result(
                "incremental_sync_s",
                inc_m,
                "s",
                reps=reps,
                spread=inc_sp,
                note=f"after {args.days} simulated day(s): {share_m:.2%} of opportunities "
                f"new/changed/deleted (median); last run's totals {inc['totals']}",
            ),
            result(
                "full_over_incremental",
                ratio_m,
                "x",
                reps=reps,
                spread=ratio_sp,
                note="per repetition, full and incremental from the same run; goal >= 10",
            ),
            result("incremental_changed_share", share_m * 100, "%", reps=reps),
        ]
        comparisons.append(
            comparison("incremental vs full sync time", inc_m, full_m, "s", higher_is_better=False)
        )
        notes.append(
            f"goals: full <= 60 s ({full_m:.1f}), peak <= 500 MiB ({rss_first:.0f}), "
            f"incremental <= full/10 (median {inc_m:.2f} s vs {full_m / 10:.2f} s; per-rep ratios "
            f"{', '.join(f'{r:.1f}' for r in ratios)})"
        )
    emit(
        "sync",
        {"size": args.size, "days": args.days, "workers": args.workers, "reps": reps},
        results,
        comparisons,
        notes=notes,
    )


if __name__ == "__main__":
    main()
