"""Cold import time of `function_app`: what a Functions worker pays before the first invocation.

`python -m bench.bench_coldstart --size N`: N fresh interpreter processes each import `function_app`
once (the size is the number of repetitions). Reported: the import alone (timed inside the child), the
whole process (interpreter start + import, timed outside), an empty interpreter for reference, peak RSS
after the import, and the slowest top-level imports from one `-X importtime` run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from bench.common import ROOT, Stat, emit, log, result, size_arg_parser, stat_result

QUICK_SIZES = [5]
FULL_SIZES = [15]

CHILD = (
    "import resource, time, json\n"
    "t = time.perf_counter()\n"
    "import function_app\n"
    "d = time.perf_counter() - t\n"
    "n = len(function_app.app.get_functions())\n"
    "print(json.dumps({'import_s': d, 'functions': n,"
    " 'rss_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))\n"
)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def run_child(code: str, extra: list[str] | None = None) -> tuple[float, str, str]:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, *(extra or []), "-c", code],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"child exited {proc.returncode}: {proc.stderr.strip()[-800:]}")
    return wall, proc.stdout, proc.stderr


def slowest_imports(stderr: str, top: int = 8) -> list[tuple[str, float]]:
    """Packages by the import time spent in their own modules (self time summed per top-level package)
    from `-X importtime` lines (`import time: <self us> | <cumulative us> | <indent><module>`)."""
    totals: dict[str, float] = {}
    for line in stderr.splitlines():
        if not line.startswith("import time:") or line.count("|") != 2:
            continue
        own, _, raw = line.removeprefix("import time:").split("|")
        if not own.strip().isdigit():
            continue
        root = raw.strip().split(".")[0]
        totals[root] = totals.get(root, 0.0) + int(own) / 1e6
    return sorted(totals.items(), key=lambda kv: -kv[1])[:top]


def main(argv: list[str] | None = None) -> int:
    args = size_arg_parser(__doc__.split("\n\n")[0], default_size=FULL_SIZES[0]).parse_args(argv)
    reps = max(1, args.size)
    log(f"cold start: {reps} fresh processes importing function_app")
    run_child(CHILD)  # warm the bytecode cache once, so every measured run is a cold process, warm disk
    imports, walls, rss, empty = [], [], [], []
    functions = 0
    for _ in range(reps):
        wall, out, _ = run_child(CHILD)
        doc = json.loads(out.strip().splitlines()[-1])
        imports.append(doc["import_s"])
        rss.append(doc["rss_mib"])
        functions = doc["functions"]
        walls.append(wall)
        empty.append(run_child("pass")[0])
    _, _, err = run_child("import function_app", ["-X", "importtime"])
    slow = slowest_imports(err)
    results = [
        stat_result(
            "import_function_app_s", Stat(tuple(imports)), "s", note=f"{functions} functions registered"
        ),
        stat_result(
            "process_start_plus_import_s", Stat(tuple(walls)), "s", note="fresh interpreter, timed outside"
        ),
        stat_result("empty_interpreter_s", Stat(tuple(empty)), "s", note="python -c pass, for reference"),
        result(
            "peak_rss_after_import_mib",
            Stat(tuple(rss)).median,
            "MiB",
            reps=len(rss),
            spread=Stat(tuple(rss)).spread,
        ),
    ]
    notes = (
        [
            "Import time by package (self time, one -X importtime run): "
            + ", ".join(f"{name} {sec:.2f} s" for name, sec in slow)
        ]
        if slow
        else []
    )
    emit("coldstart", {"size": reps, "python": sys.version.split()[0]}, results, [], notes=notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
