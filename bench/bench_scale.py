"""How the pipeline's costs grow with the org: full sync, training and a scoring run with write-back of an
org of N opportunities, each timed and measured for peak memory in a process of its own.

`python -m bench.bench_scale --size N`: Azurite and the mock (N opportunities, seeded) run as child
processes; then three phases run one after the other, each as `python -m bench.bench_scale --phase P`
in a fresh interpreter, so each phase's peak RSS is its own (os.wait4 rusage), not the sum of what came
before: `sync` (a full sync into the lake on Azurite), `train` (the default model from the lake, then
published), `score` (a scoring run of every eligible open opportunity: plan, the batches drained from the
real Azurite queue by worker threads, upserts to the mock). Goals at 1,000,000 opportunities (issue 11):
sync < 3 min, training < 10 min in < 4 GB, scoring < 10 min. The mock holds 1,000,000 opportunities in
about 6.5 GiB and takes minutes to start; BENCHMARKS.md reports the 10k-100k-1M growth.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any

from bench.common import emit, local_org, log, result
from local_runner import stack

QUICK_SIZES = [2000]
FULL_SIZES = [10_000, 100_000]
SCALE_SIZES = [10_000, 100_000, 1_000_000]  # `--size 1000000` is run by hand (see BENCHMARKS.md)
WORKERS = 2


def _context(settings_file: str) -> Any:
    from functions.app_context import AppContext
    from functions.settings import load_settings

    with open(settings_file) as fh:
        return AppContext(load_settings(json.load(fh)))


def phase_sync(ctx: Any) -> dict[str, Any]:
    from functions.services.sync import run_sync

    report = run_sync(ctx.lake, ctx.dataverse, full=True)
    return {"rows": report["totals"]["fetched"], "pages": report["totals"]["pages"]}


def phase_train(ctx: Any) -> dict[str, Any]:
    from functions.services.training import train
    from modeling.config import ModelConfig

    ctx.model_store.create_config("Scale", ModelConfig(name="Scale").to_json())
    summary = train(ctx, "Scale", reason="bench", actor="bench")
    ctx.model_store.publish("Scale")
    return {"auc": summary.get("auc"), "counts": summary.get("counts")}


def phase_score(ctx: Any) -> dict[str, Any]:
    from bench.bench_scoring_e2e import drain
    from functions.services import scoring
    from functions.services.jobs import get_job

    plan = scoring.plan_run(ctx, actor="bench")
    stats = drain(ctx, plan["runId"], WORKERS)
    job = get_job(ctx, plan["runId"])  # a scoring job's status and report come from its batches
    report = job.get("result") or {}
    return {
        "eligible": plan.get("eligible"),
        "batches": plan.get("batches"),
        "status": job.get("status"),
        "written": report.get("written"),
        "writeRequests": report.get("writeRequests"),
        "handled": stats.get("handled"),
    }


PHASES = {"sync": phase_sync, "train": phase_train, "score": phase_score}


def _run_phase(name: str, settings_file: str, out_file: str) -> tuple[float, float, dict[str, Any]]:
    """One phase in a fresh interpreter: (seconds, peak RSS MiB of that process, its result)."""
    started = time.perf_counter()
    cmd = [sys.executable, "-m", "bench.bench_scale", "--phase", name, "--settings", settings_file, "--out", out_file]
    proc = subprocess.Popen(cmd, cwd=stack.ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"phase {name} failed with {os.waitstatus_to_exitcode(status)}")
    with open(out_file) as fh:
        return seconds, usage.ru_maxrss / 1024, json.load(fh)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--phase", choices=sorted(PHASES))
    parser.add_argument("--settings")
    parser.add_argument("--out")
    parser.add_argument("--reps", type=int, default=1)  # accepted for the runner; each size runs once
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--phases", nargs="+", default=["sync", "train", "score"], choices=sorted(PHASES))
    args = parser.parse_args()
    if args.phase:  # a child: one phase against the stack the parent started
        output = PHASES[args.phase](_context(args.settings))
        with open(args.out, "w") as fh:
            json.dump(output, fh, default=str)
        return
    results, notes = [], []
    with (
        tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp,
        local_org(tmp, args.size, args.seed, timeout=3600) as (azurite, mock, mock_s),
    ):
        settings_file = f"{tmp}/settings.json"
        with open(settings_file, "w") as fh:
            json.dump(stack.app_settings(azurite, mock.info, SCORING_QUEUE="scale-scoring"), fh)
        for name in args.phases:
            seconds, peak, out = _run_phase(name, settings_file, f"{tmp}/{name}.json")
            log(f"{name}: {seconds:.1f} s, peak {peak:.0f} MiB, {out}")
            results += [
                result(f"{name}_s", seconds, "s", note=json.dumps(out, default=str)),
                result(f"{name}_peak_rss_mib", peak, "MiB", note="the phase's own process"),
            ]
        mock_rss = _rss_mib(mock.process.pid)
        notes.append(f"mock start-up {mock_s:.0f} s, mock RSS after the run {mock_rss:.0f} MiB")
    emit("scale", {"size": args.size, "workers": WORKERS}, results, [], notes=notes)


def _rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024


if __name__ == "__main__":
    main()
