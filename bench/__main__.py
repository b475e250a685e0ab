"""`python -m bench [--quick] [--only NAME ...] [--reps R]` (what `make bench` runs).

Discovers every `bench/bench_*.py`, runs each alone as a subprocess once per size
(`python -m bench.<script> --size N`), collects the one JSON object each prints, measures the
subprocess's own wall time and peak memory (`os.wait4` rusage: the script's process, not the servers it
starts), saves everything to `bench/out/results.json` and writes BENCHMARKS.md with charts in
bench/charts/. Sizes come from literal `QUICK_SIZES` / `FULL_SIZES` lists in each script, read with
`ast` so the runner never imports a benchmark. A failing or timed-out benchmark is reported, never fatal
to the others. See docs/CONTRACTS.md "Benchmarks".
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import OUT_DIR, ROOT, machine_info

BENCH_DIR = ROOT / "bench"
DEFAULT_SIZES = {"quick": [1000], "full": [10_000, 100_000]}
DEFAULT_TIMEOUT_S = {"quick": 600, "full": 3 * 3600}


def discover(bench_dir: Path = BENCH_DIR) -> list[Path]:
    return sorted(p for p in bench_dir.glob("bench_*.py") if p.is_file())


def short_name(path: Path) -> str:
    return path.stem.removeprefix("bench_")


def sizes_of(path: Path, mode: str) -> list[int]:
    """The script's literal QUICK_SIZES / FULL_SIZES, else the runner's defaults."""
    wanted = "QUICK_SIZES" if mode == "quick" else "FULL_SIZES"
    try:
        tree = ast.parse(path.read_text())
    except (OSError, SyntaxError):
        return list(DEFAULT_SIZES[mode])
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets, value_node = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value_node = [node.target], node.value
        else:
            continue
        if not any(isinstance(t, ast.Name) and t.id == wanted for t in targets):
            continue
        try:
            value = ast.literal_eval(value_node)
        except ValueError:
            continue
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, int) for v in value):
            return [int(v) for v in value]
    return list(DEFAULT_SIZES[mode])


def parse_output(stdout: str) -> dict[str, Any] | None:
    """The last stdout line that parses as a JSON object (scripts may print logs before it)."""
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                doc = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(doc, dict):
                return doc
    try:
        doc = json.loads(stdout)
        return doc if isinstance(doc, dict) else None
    except json.JSONDecodeError:
        return None


def run_one(cmd: list[str], log_path: Path, timeout: float) -> dict[str, Any]:
    """Runs one benchmark; returns exit code, wall seconds, peak RSS of its process and its stdout."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryFile() as out, open(log_path, "wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        timed_out = threading.Event()

        def _kill() -> None:
            timed_out.set()
            try:
                os.kill(proc.pid, signal.SIGTERM)
                time.sleep(10)
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        timer = threading.Timer(timeout, _kill)
        timer.daemon = True
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        out.seek(0)
        stdout = out.read().decode(errors="replace")
    return {
        "exit_code": proc.returncode,
        "timed_out": timed_out.is_set(),
        "wall_s": round(wall, 3),
        "peak_rss_mib": round(usage.ru_maxrss / 1024.0, 1),
        "stdout": stdout,
    }


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def run_all(
    mode: str,
    only: list[str],
    reps: int | None,
    timeout: float,
    out_dir: Path,
    on_run: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Runs the benchmarks; `on_run(doc_so_far)` after each one (the report is kept current)."""
    scripts = discover()
    if only:
        wanted = {o.removeprefix("bench_").removesuffix(".py") for o in only}
        unknown = wanted - {short_name(p) for p in scripts}
        if unknown:
            raise SystemExit(
                f"unknown benchmark(s): {', '.join(sorted(unknown))}; "
                f"available: {', '.join(short_name(p) for p in scripts)}"
            )
        scripts = [p for p in scripts if short_name(p) in wanted]
    runs: list[dict[str, Any]] = []
    for path in scripts:
        for size in sizes_of(path, mode):
            cmd = [sys.executable, "-m", f"bench.{path.stem}", "--size", str(size)]
            if reps is not None:
                cmd += ["--reps", str(reps)]
            shown = " ".join(["python", *cmd[1:]])
            sys.stderr.write(f"[bench] {shown} ...\n")
            sys.stderr.flush()
            log_path = out_dir / "logs" / f"{path.stem}-{size}.log"
            outcome = run_one(cmd, log_path, timeout)
            doc = parse_output(outcome.pop("stdout"))
            ok = outcome["exit_code"] == 0 and doc is not None
            run = {
                "script": path.stem,
                "name": (doc or {}).get("name", short_name(path)),
                "size": size,
                "command": shown,
                "commit": _git_commit(),
                "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "ok": ok,
                **outcome,
                "output": doc,
                "log": str(log_path.relative_to(ROOT)),
            }
            if not ok:
                run["error_tail"] = _tail(log_path)
            runs.append(run)
            if on_run is not None:
                on_run(_document(mode, runs))
            state = (
                "ok" if ok else ("timed out" if outcome["timed_out"] else f"FAILED ({outcome['exit_code']})")
            )
            sys.stderr.write(
                f"[bench]   {state} in {outcome['wall_s']:.1f} s, peak {outcome['peak_rss_mib']} MiB\n"
            )
    return _document(mode, runs)


def merge_runs(kept: list[dict[str, Any]], fresh: list[dict[str, Any]], order: list[str]) -> list[dict[str, Any]]:
    """Fresh runs replace kept runs of the same (script, size); the rest are kept; sorted as discovered."""
    new = {(r["script"], r["size"]) for r in fresh}
    rank = {s: i for i, s in enumerate(order)}
    runs = [r for r in kept if (r["script"], r["size"]) not in new] + list(fresh)
    return sorted(runs, key=lambda r: (rank.get(r["script"], len(rank)), r["size"]))


def _document(mode: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": mode,
        "argv": ["python", "-m", "bench", *sys.argv[1:]],
        "commit": _git_commit(),
        "machine": machine_info(),
        "runs": list(runs),
    }


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: the whole suite in a few minutes")
    parser.add_argument("--only", nargs="+", default=[], metavar="NAME", help="e.g. quality coldstart")
    parser.add_argument("--reps", type=int, default=None, help="repetitions passed to every script")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per benchmark run")
    parser.add_argument("--report", type=Path, default=ROOT / "BENCHMARKS.md", help="report to write")
    parser.add_argument(
        "--list", action="store_true", help="list the benchmarks and their sizes, run nothing"
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the other benchmarks' runs from bench/out/results.json (with --only: rerun just those; "
        "the report names each run's commit)",
    )
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    if args.list:
        for path in discover():
            print(f"{short_name(path):20s} quick {sizes_of(path, 'quick')}  full {sizes_of(path, 'full')}")
        return 0
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    results_path = OUT_DIR / "results.json"
    from bench.report import write_report

    kept: list[dict[str, Any]] = []
    if args.merge and results_path.exists():
        previous = json.loads(results_path.read_text())
        if previous.get("mode") == mode:
            kept = [dict(r, commit=r.get("commit") or previous.get("commit")) for r in previous.get("runs", [])]

    order = [p.stem for p in discover()]

    def merged(doc: dict[str, Any]) -> dict[str, Any]:
        return {**doc, "runs": merge_runs(kept, doc["runs"], order), "merged": bool(kept)}

    def save(doc: dict[str, Any]) -> None:
        doc = merged(doc)
        results_path.write_text(json.dumps(doc, indent=1))
        write_report(doc, args.report)

    doc = run_all(mode, args.only, args.reps, args.timeout or DEFAULT_TIMEOUT_S[mode], OUT_DIR, on_run=save)
    save(doc)
    doc = merged(doc)
    failed = [r for r in doc["runs"] if not r["ok"]]
    sys.stderr.write(
        f"[bench] {len(doc['runs']) - len(failed)} of {len(doc['runs'])} runs ok; "
        f"results in {results_path.relative_to(ROOT)}, report in {args.report}\n"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
