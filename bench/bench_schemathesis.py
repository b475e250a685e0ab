"""schemathesis against the app's own OpenAPI description, over real HTTP through the local runner.

`python -m bench.bench_schemathesis --size N`: Azurite, the mock (1,500 opportunities, seed 7), a full sync and
a trained model `M`, then the schemathesis CLI with at most N examples per operation (the test suite runs
`TEST_BOUNDS`). Every check runs but those `bench/schemathesis.toml` leaves out or relaxes, each with its reason
(the local runner, like Core Tools, does not check function keys).
Reported: operations tested, test cases, failures by check, 5xx responses, the wall time.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import ROOT, emit, log, result, size_arg_parser

QUICK_SIZES = [10]
FULL_SIZES = [60]
SEED = 15
# The bounded run in `make test` (tests/integration/foundation/test_schemathesis.py).
TEST_BOUNDS: dict[str, Any] = {"max_examples": 8, "max_time": 35, "seed": SEED}
CONFIG = Path(__file__).with_name("schemathesis.toml")  # the checks left out or relaxed, each with its reason


@dataclass
class Run:
    exit_code: int
    output: str
    seconds: float
    operations: int = 0
    labels: set[str] = field(default_factory=set)
    test_cases: int = 0
    failures: int = 0
    server_errors: int = 0
    failures_by_check: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)


def command(url: str, report: Path, *, max_examples: int, max_time: int, seed: int) -> list[str]:
    return [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file", str(CONFIG),
        "run",
        f"{url}/api/openapi.json",
        "--checks", "all",
        "--exclude-checks", "ignored_auth",  # bench/schemathesis.toml says why
        "--mode", "all",
        "--phases", "examples,coverage,fuzzing",
        "--max-examples", str(max_examples),
        "--max-time", str(max_time),
        "--seed", str(seed),
        "--workers", "1",
        "--request-timeout", "60",
        "--generation-database", "none",
        "--suppress-health-check", "all",
        "--no-color",
        "--report", "ndjson",
        "--report-ndjson-path", str(report),
    ]  # fmt: skip


def run(url: str, *, report_dir: Path | str, max_examples: int, max_time: int, seed: int = SEED) -> Run:
    """One schemathesis CLI run against `url`; its figures read from the NDJSON event report."""
    report = Path(report_dir) / "schemathesis.ndjson"
    cmd = command(url, report, max_examples=max_examples, max_time=max_time, seed=seed)
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=max_time * 4 + 120)
    outcome = Run(proc.returncode, proc.stdout + proc.stderr, time.perf_counter() - started)
    if report.is_file():
        _read_events(report, outcome)
    return outcome


def _read_events(report: Path, outcome: Run) -> None:
    operations: set[str] = set()
    for line in report.read_text().splitlines():
        event = json.loads(line)
        scenario = event.get("ScenarioFinished")
        if not scenario:
            continue
        recorder = scenario.get("recorder") or {}
        label = recorder.get("label")
        if label:
            operations.add(label)
        for interaction in (recorder.get("interactions") or {}).values():
            outcome.test_cases += 1
            status = ((interaction or {}).get("response") or {}).get("status_code")
            if status is not None:
                key = f"{status // 100}xx"
                outcome.statuses[key] = outcome.statuses.get(key, 0) + 1
                outcome.server_errors += status >= 500
        for checks in (recorder.get("checks") or {}).values():
            for check in checks or []:
                if str(check.get("status", "")).lower() == "failure":
                    name = check.get("name", "?")
                    outcome.failures_by_check[name] = outcome.failures_by_check.get(name, 0) + 1
                    outcome.failures += 1
    outcome.labels = operations
    outcome.operations = len(operations)


def main(argv: list[str] | None = None) -> int:
    from bench import fuzzing
    from local_runner import stack

    args = size_arg_parser(__doc__.split("\n\n")[0], default_size=FULL_SIZES[0]).parse_args(argv)
    max_examples = max(1, args.size)
    max_time = max(60, max_examples * 5)
    with tempfile.TemporaryDirectory(prefix="bench-st-") as tmp:
        azurite = stack.start_azurite(tmp)
        mock = None
        try:
            mock = stack.start_mock(["--opportunities", "1500", "--seed", "7"])
            settings = stack.unique_settings(azurite, mock.info, tag="st")
            with fuzzing.prepared_runner(settings, tmp) as (runner, _):
                log(f"schemathesis: at most {max_examples} examples per operation, {max_time} s budget")
                outcome = run(runner.url, report_dir=tmp, max_examples=max_examples, max_time=max_time)
        finally:
            for proc in (mock, azurite):
                if proc is not None:
                    proc.stop()
    note = f"schemathesis exit {outcome.exit_code}; statuses {json.dumps(outcome.statuses, sort_keys=True)}"
    results = [
        result("operations", outcome.operations, "operations", note="all described but the document itself"),
        result("test_cases", outcome.test_cases, "requests"),
        result("failures", outcome.failures, "failures", note=json.dumps(outcome.failures_by_check, sort_keys=True)),
        result("server_errors", outcome.server_errors, "responses", note="5xx"),
        result("wall_s", round(outcome.seconds, 1), "s", note=note),
    ]
    emit("schemathesis", {"size": max_examples, "max_time_s": max_time, "seed": SEED}, results, [])
    return 0 if outcome.exit_code == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
