"""The runner (discovery, sizes, output parsing, one real subprocess) and the report writer."""

from __future__ import annotations

import sys
from pathlib import Path

from bench import __main__ as runner
from bench import report
from bench.bench_coldstart import slowest_imports


def test_sizes_come_from_literal_lists_without_importing(tmp_path: Path) -> None:
    script = tmp_path / "bench_x.py"
    script.write_text(
        "import nothing_that_exists\nQUICK_SIZES = [10]\nFULL_SIZES: list[int] = [100, 1_000]\n"
    )
    assert runner.sizes_of(script, "quick") == [10]
    assert runner.sizes_of(script, "full") == [100, 1000]
    (tmp_path / "bench_y.py").write_text("SIZES = compute()\n")
    assert runner.sizes_of(tmp_path / "bench_y.py", "full") == runner.DEFAULT_SIZES["full"]
    assert [runner.short_name(p) for p in runner.discover(tmp_path)] == ["x", "y"]


def test_parse_output_takes_the_last_json_object_line() -> None:
    out = 'log line\n{"name": "a", "results": []}\nnot json {\n{"name": "b", "results": [1]}\n'
    assert runner.parse_output(out) == {"name": "b", "results": [1]}
    assert runner.parse_output("nothing here") is None


def test_run_one_measures_a_real_subprocess(tmp_path: Path) -> None:
    code = "import sys, json; print('x'); print(json.dumps({'name': 'ok'})); sys.stderr.write('log\\n')"
    outcome = runner.run_one([sys.executable, "-c", code], tmp_path / "logs" / "a.log", timeout=60)
    assert outcome["exit_code"] == 0 and not outcome["timed_out"]
    assert runner.parse_output(outcome["stdout"]) == {"name": "ok"}
    assert outcome["peak_rss_mib"] > 1 and outcome["wall_s"] > 0
    assert (tmp_path / "logs" / "a.log").read_text() == "log\n"
    failed = runner.run_one([sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "b.log", timeout=60)
    assert failed["exit_code"] == 3


def test_run_one_stops_a_benchmark_that_runs_too_long(tmp_path: Path) -> None:
    outcome = runner.run_one([sys.executable, "-c", "import time; time.sleep(30)"], tmp_path / "c.log", 0.5)
    assert outcome["timed_out"] and outcome["exit_code"] != 0 and outcome["wall_s"] < 20


def _doc() -> dict:
    metrics = {
        "auc": 0.85,
        "brier": 0.12,
        "ece": 0.02,
        "precision": 0.6,
        "recall": 0.7,
        "f1": 0.65,
        "threshold": 0.3,
    }
    peer = {**metrics, "auc": 0.83, "ece": 0.05}
    quality = {
        "name": "quality",
        "params": {},
        "results": [],
        "comparisons": [],
        "method": ["m1"],
        "datasets": [
            {
                "dataset": "IBM",
                "source": "csv",
                "split": "time",
                "n_train": 80,
                "n_test": 20,
                "kept": ["a", "b"],
                "excluded": [{"attribute": "c", "reason": "leaks"}],
                "models": [
                    {
                        "model": "ours",
                        "kind": "product",
                        "metrics": metrics,
                        "reps": 1,
                        "reported": {"auc": 0.851},
                    },
                    {
                        "model": "Plain HGB",
                        "kind": "peer",
                        "metrics": peer,
                        "reps": 3,
                        "spread": {"auc": 0.004},
                    },
                ],
                "ratio_to_best_peer": {
                    "auc": {"ratio": 0.85 / 0.83, "best": 0.83, "peer": "Plain HGB"},
                    "ece": {
                        "ratio": 2.5,
                        "best": 0.05,
                        "peer": "Plain HGB",
                        "edge": {"edge": 0.03, "low": 0.012, "high": 0.041, "rounds": 1000},
                    },
                },
                "charts": {},
            }
        ],
    }
    speed = {
        "name": "scoring",
        "params": {"size": 1000},
        "results": [
            {
                "metric": "rows_per_s",
                "value": 1234.5,
                "unit": "rows/s",
                "reps": 3,
                "spread": 10.0,
                "note": "n",
            }
        ],
        "comparisons": [
            {"what": "onnx vs sklearn", "ours": 2.0, "naive": 1.0, "unit": "rows/s", "ratio": 2.0}
        ],
        "notes": ["a note"],
    }
    run = {"ok": True, "size": 1000, "wall_s": 1.0, "peak_rss_mib": 100.0, "exit_code": 0}
    return {
        "generated_at": "t",
        "mode": "quick",
        "argv": ["python", "-m", "bench", "--quick"],
        "commit": "abc",
        "machine": {"cpu_count": 2, "libraries": {"numpy": "2"}},
        "runs": [
            {
                **run,
                "name": "quality",
                "command": "python -m bench.bench_quality --size 1000",
                "output": quality,
            },
            {
                **run,
                "name": "scoring",
                "command": "python -m bench.bench_scoring --size 1000",
                "output": speed,
            },
            {
                **run,
                "name": "sync",
                "ok": False,
                "exit_code": 1,
                "output": None,
                "command": "python -m bench.bench_sync --size 1000",
                "error_tail": "Boom",
                "log": "l",
            },
        ],
    }


def test_report_renders_every_section_from_the_results(tmp_path: Path) -> None:
    path = report.write_report(_doc(), tmp_path / "BENCHMARKS.md", tmp_path / "charts")
    text = path.read_text()
    for expected in (
        "## Headline",
        "| IBM | 0.850 | 0.830 (Plain HGB) | 1.024 |  |",  # no edge measured: an empty cell
        "| 2.500 | +0.030 [+0.012, +0.041] |",
        "`c` (leaks)",
        "## Speed and memory",
        "| 1,000 | rows_per_s | 1,234 | rows/s | 3 | 10.000 | n |",
        "2.00x",
        "failed (exit 1)",
        "Boom",
        "## Machine",
        "quick",
        "auc 0.851",
        "0.830 ±0.002",
    ):
        assert expected in text, expected
    assert sorted(p.name for p in (tmp_path / "charts").iterdir()) == [
        "quality_summary.png",
        "speed_ratios.png",
    ]
    assert "![speed_ratios](charts/speed_ratios.png)" in text


def test_merge_keeps_other_runs_and_the_report_names_each_commit(tmp_path: Path) -> None:
    kept = [
        {"script": "bench_quality", "size": 10, "commit": "old", "v": 1},
        {"script": "bench_sync", "size": 5, "commit": "old", "v": 1},
        {"script": "bench_sync", "size": 50, "commit": "old", "v": 1},
    ]
    fresh = [{"script": "bench_sync", "size": 5, "commit": "new", "v": 2}]
    runs = runner.merge_runs(kept, fresh, ["bench_quality", "bench_sync"])
    assert [(r["script"], r["size"], r["v"]) for r in runs] == [
        ("bench_quality", 10, 1),
        ("bench_sync", 5, 2),
        ("bench_sync", 50, 1),
    ]
    doc = _doc()
    doc["runs"][0]["commit"] = "def"
    text = report.write_report(doc, tmp_path / "BENCHMARKS.md", tmp_path / "charts").read_text()
    assert "merging runs made at commits `abc`, `def`" in text
    assert "| `def` |" in text


def test_slowest_imports_sums_self_time_per_package() -> None:
    err = (
        "import time: self [us] | cumulative | imported package\n"
        "import time:       100 |        100 |   numpy.core\n"
        "import time:       300 |        400 | numpy\n"
        "import time:      2000 |       2000 | pandas\n"
    )
    assert [(n, round(s, 6)) for n, s in slowest_imports(err)] == [("pandas", 0.002), ("numpy", 0.0004)]
