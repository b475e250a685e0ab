"""What a backtest costs: `python -m bench.bench_backtest --size N [--months M]`.

The seeded mock org (N opportunities, the generator the tests use) is synced into a lake on Azurite, a model
with the default configuration (2 years of deals) is stored, and `functions.services.backtest.run_backtest`
replays the M monthly cut dates ending at the last full month (default 12), as the queue worker does: the
tables read once, one training (TRAINING_THREADS, default 1) and one scoring per month. Reports seconds per
month (median and slowest), the whole run, the peak resident memory of this process and the median AUC.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import uuid

from bench.common import emit, local_org, log, peak_rss_mib, result, size_arg_parser
from connectors.clock import utcnow
from functions.app_context import AppContext
from functions.services.backtest import run_backtest
from functions.services.sync import run_sync
from functions.settings import load_settings
from local_runner import stack
from modeling.backtest import cut_dates
from modeling.config import ModelConfig

QUICK_SIZES = [1500]
FULL_SIZES = [10_000]
NAME = "Bench_Backtest"


def main() -> None:
    parser = size_arg_parser("backtest cost per month", 1500)
    parser.add_argument("--months", type=int, default=12)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-backtest-") as tmp, local_org(tmp, args.size, args.seed) as org:
        azurite, mock, _ = org
        settings = stack.app_settings(
            azurite, mock.info, LAKE_CONTAINER=f"lake-{uuid.uuid4().hex[:8]}", MODEL_CONTAINER="models-bench"
        )
        ctx = AppContext(load_settings(settings))
        t = time.perf_counter()
        run_sync(ctx.lake, ctx.dataverse, full=True)
        log(f"synced {args.size} opportunities in {time.perf_counter() - t:.1f} s; backtesting {args.months} months")
        ctx.model_store.create_config(NAME, ModelConfig(name=NAME).to_json())
        cuts = [c.date().isoformat() for c in cut_dates({"months": args.months}, utcnow())]
        rss_before = peak_rss_mib()
        report = run_backtest(ctx, NAME, cuts, actor="bench")
    seconds = [float(m["seconds"]) for m in report["months"]]
    trained = [m.get("trainedRows", 0) for m in report["months"]]
    scored = [m.get("scoredRows", m.get("openRows", 0)) for m in report["months"]]
    log(f"seconds per month {seconds}; total {report['seconds']} s")
    emit(
        "backtest",
        {"size": args.size, "months": args.months, "seed": args.seed},
        [
            result("seconds_per_month", statistics.median(seconds), "s", note=f"slowest {max(seconds):.1f} s"),
            result("total_seconds", float(report["seconds"]), "s", note="tables read once, then every month"),
            result("training_rows_per_month", statistics.median(trained), "rows", note=f"max {max(trained)}"),
            result("scored_rows_per_month", statistics.median(scored), "rows", note=f"max {max(scored)}"),
            result("peak_rss_mib", peak_rss_mib(), "MiB", note=f"{rss_before:.0f} MiB before the backtest"),
            result("median_auc", report["summary"]["medianAuc"], ""),
        ],
        notes=[f"months evaluated {report['summary']['evaluated']} of {report['summary']['months']}"],
    )


if __name__ == "__main__":
    main()
