"""Sync benchmark: a full sync of N opportunities (plus their accounts, users, BPF instances, stages and
processes) from the local mock over HTTPS into Parquet on Azurite, then an incremental sync after the mock
simulated a day (about 1% of rows changed).

`python -m bench.bench_sync --size N [--days D]`. Azurite and the mock run as child processes (stopped by
PID); the sync runs in this process, so `peak_rss_mib` is the sync's own peak (plus the interpreter).
Goals (issue 4): full sync of 100,000 opportunities <= 60 s and <= 500 MB; incremental <= 1/10 of full.
"""

from __future__ import annotations

import logging
import tempfile
import time
import uuid

from bench.common import comparison, emit, log, peak_rss_mib, result, size_arg_parser
from connectors.auth import token_provider_from
from connectors.blobs import container_client
from connectors.dataverse import DataverseClient
from connectors.lake import Lake
from functions.services.sync import run_sync
from local_runner import stack
from tests.conftest import mock_call

QUICK_SIZES = [10_000]
FULL_SIZES = [100_000]


def main() -> None:
    parser = size_arg_parser("full and incremental sync from the mock into the lake", 100_000)
    parser.add_argument("--days", type=int, default=1, help="days the mock simulates before the incremental")
    parser.add_argument("--workers", type=int, default=3, help="tables synced in parallel")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    results, comparisons, notes = [], [], []
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp:
        az = stack.start_azurite(tmp)
        mock = None
        try:
            t0 = time.perf_counter()
            mock = stack.start_mock(
                ["--seed", str(args.seed or 7), "--opportunities", str(args.size)],
                log_path=f"{tmp}/mock.log",
                timeout=300,
            )
            log(f"mock with {args.size} opportunities up in {time.perf_counter() - t0:.1f} s")
            info = mock.info
            provider = token_provider_from(
                authority=info["authority"],
                client_id=info["client_id"],
                scope=info["resource"].rstrip("/") + "/.default",
                client_secret=info["client_secret"],
                ca_bundle=info["ca_cert"],
            )
            client = DataverseClient(info["url"], provider, ca_bundle=info["ca_cert"])
            lake = Lake(container_client(az.connection_string, f"bench-{uuid.uuid4().hex[:8]}"), temp_dir=tmp)
            rss0 = peak_rss_mib()
            t = time.perf_counter()
            full = run_sync(lake, client, workers=args.workers)
            full_s = time.perf_counter() - t
            rss_full = peak_rss_mib()
            rows = sum(s["rows"] for s in full["tables"].values())
            log(f"full sync: {full_s:.1f} s, {rows} rows, peak RSS {rss_full:.0f} MiB")
            sim = mock_call(info, "POST", "/_mock/simulate", {"days": args.days, "seed": 1})
            t = time.perf_counter()
            inc = run_sync(lake, client, workers=args.workers)
            inc_s = time.perf_counter() - t
            opp = inc["tables"]["opportunity"]
            touched = opp["new"] + opp["changed"] + opp["deleted"]
            share = touched / max(1, full["tables"]["opportunity"]["rows"])
            log(f"incremental sync: {inc_s:.2f} s, opportunities touched {touched} ({share:.2%})")
            for name, rep in (("full", full), ("incremental", inc)):
                per_table = {t: s["duration_s"] for t, s in rep["tables"].items()}
                log(f"{name}: metadata {rep['metadata_s']} s, tables {per_table}")
            results += [
                result(
                    "full_sync_s",
                    full_s,
                    "s",
                    note=f"{rows} rows in 6 tables, {full['totals']['pages']} pages",
                ),
                result("full_sync_rows_per_s", rows / full_s, "rows/s"),
                result(
                    "peak_rss_mib", rss_full, "MiB", note=f"whole process; {rss0:.0f} MiB before the sync"
                ),
                result(
                    "incremental_sync_s",
                    inc_s,
                    "s",
                    note=f"after {args.days} simulated day(s): {touched} opportunities new/changed/deleted "
                    f"({share:.2%}); all tables {inc['totals']}",
                ),
                result("incremental_changed_share", share * 100, "%"),
            ]
            comparisons.append(
                comparison("incremental vs full sync time", inc_s, full_s, "s", higher_is_better=False)
            )
            notes.append(f"simulate report: {sim}")
            notes.append(
                f"goals: full <= 60 s ({full_s:.1f}), peak <= 500 MiB ({rss_full:.0f}), "
                f"incremental <= full/10 ({inc_s:.2f} vs {full_s / 10:.2f})"
            )
        finally:
            if mock is not None:
                mock.stop()
            az.stop()
    emit(
        "sync",
        {"size": args.size, "days": args.days, "workers": args.workers},
        results,
        comparisons,
        notes=notes,
    )


if __name__ == "__main__":
    main()
