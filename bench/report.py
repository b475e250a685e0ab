"""Writes BENCHMARKS.md (and summary charts in bench/charts/) from the runner's results document.

`python -m bench.report [bench/out/results.json] [--report BENCHMARKS.md]` rewrites the report from saved
results without measuring anything again. Everything in the report comes from that document: the
numbers, the commands that produced them and the machine they ran on.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import CHARTS_DIR, ECE_BINS, OUT_DIR, ROOT

TIMING_LABELS = {
    "mock_start_s": "mock start (import)",
    "sync_s": "full sync (POST /api/sync to job done)",
    "train_s": "training (POST /api/models to job done)",
    "runner_peak_rss_mib": "function host peak RSS",
    "mock_peak_rss_mib": "mock peak RSS",
}
QUALITY_METRICS = ("auc", "brier", "ece", "precision", "recall", "f1", "threshold")
METRIC_LABELS = {
    "auc": "AUC",
    "brier": "Brier",
    "ece": "ECE",
    "precision": "precision",
    "recall": "recall",
    "f1": "F1",
    "threshold": "threshold",
}


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "n/a"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 100:
            return f"{value:.1f}"
        return f"{value:.{digits}f}"
    return str(value)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> list[str]:
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    for row in rows:
        out.append("| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in row) + " |")
    return out


def _rel(path: str | Path, report_path: Path) -> str:
    p = Path(path)
    if not p.is_absolute():
        p = ROOT / p
    return os.path.relpath(p, report_path.parent)


# ---------------------------------------------------------------- sections


def _quality_runs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in doc.get("runs", []) if r.get("ok") and (r.get("output") or {}).get("datasets")]


def _headline_quality(doc: dict[str, Any]) -> list[str]:
    rows = []
    for run in _quality_runs(doc):
        for ds in run["output"]["datasets"]:
            ours = next((m for m in ds.get("models", []) if m.get("kind") == "product"), None)
            ratios = ds.get("ratio_to_best_peer") or {}
            auc_r, ece_r = ratios.get("auc") or {}, ratios.get("ece") or {}
            if ours is None or ours.get("metrics") is None:
                rows.append(
                    [
                        ds["dataset"],
                        "product not measured: " + str(ds.get("product_error", "?"))[:120],
                        "",
                        "",
                        "",
                        "",
                        "",
                    ]
                )
                continue
            rows.append(
                [
                    ds["dataset"],
                    fmt(ours["metrics"].get("auc")),
                    f"{fmt(auc_r.get('best'))} ({auc_r.get('peer', '?')})",
                    fmt(auc_r.get("ratio")),
                    _edge(auc_r.get("edge")),
                    fmt(ours["metrics"].get("ece")),
                    f"{fmt(ece_r.get('best'))} ({ece_r.get('peer', '?')})",
                    fmt(ece_r.get("ratio")),
                    _edge(ece_r.get("edge")),
                ]
            )
    if not rows:
        return []
    return [
        "### Quality: the product against the best plain peer on the same test records",
        "",
        *table(
            [
                "data set",
                "our AUC",
                "best peer AUC",
                "AUC ratio",
                "AUC edge (95%)",
                "our ECE",
                "best peer ECE",
                "ECE ratio",
                "ECE edge (95%)",
            ],
            rows,
        ),
        "",
        "Ratios above 1 mean the product is better (AUC: ours / best; ECE: best / ours). The edge is how much"
        " better the product is than that peer (AUC: ours - best; ECE: best - ours), with its 95% interval over"
        " 1,000 bootstrap resamples of the test records (both models resampled together): an interval holding"
        " 0 means the test set cannot tell the two apart; `=` marks it.",
        "",
    ]


def _edge(edge: dict[str, Any] | None) -> str:
    """An edge over the best peer as "+0.012 [-0.004, +0.030]", "=" appended when its interval holds 0."""
    if not edge:
        return ""
    tie = " =" if edge["low"] <= 0 <= edge["high"] else ""
    return f"{edge['edge']:+.3f} [{edge['low']:+.3f}, {edge['high']:+.3f}]{tie}"


def _all_comparisons(doc: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for run in doc.get("runs", []):
        for c in (run.get("output") or {}).get("comparisons", []) if run.get("ok") else []:
            rows.append(
                [
                    run["name"],
                    fmt(run["size"]),
                    c.get("what", ""),
                    fmt(c.get("ours")),
                    fmt(c.get("naive")),
                    c.get("unit", ""),
                    (fmt(c.get("ratio"), 2) + "x") if c.get("ratio") is not None else "n/a",
                ]
            )
    return rows


def _quality_section(doc: dict[str, Any], report_path: Path) -> list[str]:
    lines: list[str] = []
    for run in _quality_runs(doc):
        out = run["output"]
        lines += ["## Quality on real data against peers", "", f"Command: `{run['command']}`", ""]
        lines += [f"- {n}" for n in out.get("method", [])]
        lines.append("")
        for ds in out["datasets"]:
            lines += [f"### {ds['dataset']}", ""]
            facts = [
                f"source: {ds.get('source', '?')}",
                f"split: {ds.get('split', '?')}",
                f"train {fmt(ds.get('n_train'))} records (won rate {fmt(ds.get('won_rate_train'))}), "
                f"test {fmt(ds.get('n_test'))} (won rate {fmt(ds.get('won_rate_test'))})",
            ]
            lines += [f"- {f}" for f in facts]
            if ds.get("kept"):
                lines.append(f"- columns the product kept (peers use exactly these): {', '.join(ds['kept'])}")
            excluded = ds.get("excluded") or []
            if excluded:
                lines.append(
                    "- excluded by the product's leakage guard: "
                    + "; ".join(f"`{e.get('attribute')}` ({e.get('reason', '')})" for e in excluded)
                )
            elif ds.get("kept"):
                lines.append("- excluded by the product's leakage guard: nothing")
            t = ds.get("timings") or {}
            if t:
                lines.append(
                    "- pipeline through the function host: "
                    + ", ".join(
                        f"{TIMING_LABELS.get(k, k)} {fmt(v)} {'MiB' if k.endswith('mib') else 's'}"
                        for k, v in t.items()
                    )
                )
            for note in ds.get("notes", []):
                lines.append(f"- {note}")
            lines.append("")
            rows = []
            for m in ds.get("models", []):
                met, spread = m.get("metrics") or {}, m.get("spread") or {}
                cells = [m["model"]]
                for k in QUALITY_METRICS:
                    v = met.get(k)
                    s = spread.get(k)
                    cells.append(fmt(v) + (f" ±{fmt(s / 2)}" if s else ""))
                cells.append(str(m.get("reps", 1)))
                rows.append(cells)
            ratio_cells = ["ours vs best peer"]
            for k in QUALITY_METRICS:
                r = (ds.get("ratio_to_best_peer") or {}).get(k) or {}
                ratio_cells.append(f"{fmt(r.get('ratio'))}x" if r.get("ratio") is not None else "")
            ratio_cells.append("")
            rows.append(ratio_cells)
            lines += table(["model", *(METRIC_LABELS[k] for k in QUALITY_METRICS), "reps"], rows)
            lines.append("")
            reported = next((m.get("reported") for m in ds.get("models", []) if m.get("reported")), None)
            if reported:
                lines.append(
                    "The product's own report (`GET /api/models/{name}/performance`) says: "
                    + ", ".join(f"{k} {fmt(v)}" for k, v in reported.items() if isinstance(v, (int, float)))
                    + "."
                )
                lines.append("")
            for key in ("roc", "calibration"):
                if ds.get("charts", {}).get(key):
                    lines.append(f"![{ds['dataset']} {key}]({_rel(ds['charts'][key], report_path)})")
            lines.append("")
    return lines


def _speed_section(doc: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    by_name: dict[str, list[dict[str, Any]]] = {}
    for run in doc.get("runs", []):
        if run.get("ok") and not (run.get("output") or {}).get("datasets"):
            by_name.setdefault(run["name"], []).append(run)
    if not by_name:
        return lines
    lines += ["## Speed and memory", ""]
    for name, runs in by_name.items():
        lines += [f"### {name}", ""]
        lines += [f"- `{r['command']}`" for r in runs]
        lines.append("")
        rows = []
        for r in runs:
            for res in r["output"].get("results", []):
                spread = res.get("spread") or 0
                rows.append(
                    [
                        fmt(r["size"]),
                        res.get("metric", ""),
                        fmt(res.get("value")),
                        res.get("unit", ""),
                        res.get("reps", 1),
                        fmt(spread) if spread else "",
                        res.get("note", ""),
                    ]
                )
        if rows:
            lines += table(
                ["size", "metric", "value (median)", "unit", "reps", "spread (max-min)", "note"],
                rows,
                "rlrlrrl",
            )
            lines.append("")
        comps = [
            [
                fmt(r["size"]),
                c.get("what", ""),
                fmt(c.get("ours")),
                fmt(c.get("naive")),
                c.get("unit", ""),
                (fmt(c.get("ratio"), 2) + "x") if c.get("ratio") is not None else "n/a",
            ]
            for r in runs
            for c in r["output"].get("comparisons", [])
        ]
        if comps:
            lines += table(
                ["size", "ours vs the naive way", "ours", "naive", "unit", "ratio"], comps, "rlrrlr"
            )
            lines.append("")
        notes = [n for r in runs for n in r["output"].get("notes", [])]
        lines += [f"- {n}" for n in dict.fromkeys(notes)]
        if notes:
            lines.append("")
    return lines


def _runs_section(doc: dict[str, Any]) -> list[str]:
    rows = []
    for r in doc.get("runs", []):
        status = (
            "ok"
            if r.get("ok")
            else ("timed out" if r.get("timed_out") else f"failed (exit {r.get('exit_code')})")
        )
        rows.append(
            [
                r["name"],
                fmt(r["size"]),
                status,
                fmt(r.get("wall_s")),
                fmt(r.get("peak_rss_mib")),
                f"`{r['command']}`",
                f"`{r.get('commit') or doc.get('commit')}`",
            ]
        )
    lines = [
        "## Every run",
        "",
        "Wall time and peak resident memory of each benchmark's own process, measured by the runner "
        "(`os.wait4`; the servers a benchmark starts are separate processes and not included).",
        "",
        *table(["benchmark", "size", "status", "wall s", "peak RSS MiB", "command", "commit"], rows, "lrlrrll"),
        "",
    ]
    for r in doc.get("runs", []):
        if not r.get("ok"):
            lines += [
                f"<details><summary>{r['name']} (size {r['size']}) failed: last lines of {r.get('log')}"
                "</summary>",
                "",
                "```",
                r.get("error_tail", ""),
                "```",
                "",
                "</details>",
                "",
            ]
    return lines


def _machine_section(doc: dict[str, Any]) -> list[str]:
    m = doc.get("machine") or {}
    libs = ", ".join(f"{k} {v}" for k, v in (m.get("libraries") or {}).items())
    lines = [
        "## Machine",
        "",
        f"- CPU: {m.get('cpu_count')} logical cores, {m.get('cpu_model')}",
        f"- memory: {m.get('memory_gib')} GiB",
        f"- OS: {m.get('platform')}",
        f"- Python {m.get('python')}; {libs}",
    ]
    if m.get("blas_env"):
        lines.append(f"- BLAS environment: {m['blas_env']}")
    return [*lines, ""]


# ---------------------------------------------------------------- charts


def _label(model: dict[str, Any]) -> str:
    return "Ours" if model.get("kind") == "product" else str(model.get("model"))


def summary_charts(doc: dict[str, Any], charts_dir: Path = CHARTS_DIR) -> list[Path]:
    """Speed ratios (ours vs naive) and AUC/ECE per data set per model, when there is data for them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    charts_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    comps = [
        (textwrap.fill(f"{run['name']} ({fmt(run['size'])}): {c['what']}", 60), float(c["ratio"]))
        for run in doc.get("runs", [])
        if run.get("ok")
        for c in (run.get("output") or {}).get("comparisons", [])
        if c.get("ratio")
    ]
    if comps:
        from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

        lines_per = [c[0].count("\n") + 1 for c in comps]
        fig, ax = plt.subplots(figsize=(11, 0.32 * sum(lines_per) + 0.25 * len(comps) + 1.2))
        colors = ["#2a7ab0" if c[1] >= 1 else "#c0504d" for c in comps]
        ax.barh([c[0] for c in comps], [c[1] for c in comps], color=colors)
        ax.axvline(1.0, color="black", lw=0.8)
        ax.set_xscale("log")
        lo, hi = min(c[1] for c in comps), max(c[1] for c in comps)
        ticks = [
            t for t in (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000) if lo / 2 <= t <= hi * 2
        ]
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(ScalarFormatter())
        for y, (_, ratio) in enumerate(comps):
            ax.text(ratio, y, f" {ratio:.2f}x", va="center", fontsize=8)
        ax.set_xlabel("ratio, log scale (above 1: ours is better)")
        ax.tick_params(axis="y", labelsize=8)
        ax.invert_yaxis()
        ax.set_title("Ours vs the obvious alternative, same run")
        fig.tight_layout()
        path = charts_dir / "speed_ratios.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    datasets = [ds for run in _quality_runs(doc) for ds in run["output"]["datasets"]]
    if datasets:
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.2 + 0.2 * len(datasets)))
        models = list(dict.fromkeys(_label(m) for ds in datasets for m in ds.get("models", [])))
        width = 0.8 / max(1, len(models))
        for ax, metric in zip(axes, ("auc", "ece"), strict=True):
            for i, model in enumerate(models):
                vals = []
                for ds in datasets:
                    m = next((x for x in ds.get("models", []) if _label(x) == model), None)
                    v = ((m or {}).get("metrics") or {}).get(metric)
                    vals.append(v if isinstance(v, (int, float)) else 0.0)
                ax.bar([j + i * width for j in range(len(datasets))], vals, width, label=model)
            ax.set_xticks([j + width * (len(models) - 1) / 2 for j in range(len(datasets))])
            ax.set_xticklabels([ds["dataset"] for ds in datasets], rotation=15, fontsize=8)
            ax.set_title(f"{METRIC_LABELS[metric]} ({'higher' if metric == 'auc' else 'lower'} is better)")
        axes[0].set_ylim(0.4, 1.0)
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=min(3, len(models)), fontsize=8, frameon=False)
        fig.tight_layout(rect=(0, 0.12, 1, 1))
        path = charts_dir / "quality_summary.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


# ---------------------------------------------------------------- the document


def render(doc: dict[str, Any], report_path: Path, charts: Sequence[Path] = ()) -> str:
    mode = doc.get("mode", "full")
    argv = " ".join(doc.get("argv", ["python", "-m", "bench"]))
    runs = doc.get("runs", [])
    failed = [r for r in runs if not r.get("ok")]
    commits = sorted({str(r.get("commit") or doc.get("commit")) for r in runs})
    at = (
        f"at commit `{doc.get('commit')}`"
        if len(commits) <= 1
        else "merging runs made at commits " + ", ".join(f"`{c}`" for c in commits) + " (see Every run)"
    )
    lines = [
        "# Benchmarks",
        "",
        f"Written by `{argv}` on {doc.get('generated_at')} {at} "
        f"({mode} run: {len(runs) - len(failed)} of {len(runs)} benchmark runs succeeded). "
        "Every number below comes from those runs; nothing is edited by hand.",
        "",
        "Reproduce: `make bench` (the full run, as `python -m bench`), `make bench BENCH_ARGS=--quick` "
        "(small sizes, a few minutes), or one benchmark alone: `python -m bench --only quality` or "
        "`.venv/bin/python -m bench.bench_quality --size 5000` (each script prints one JSON object; see "
        'docs/CONTRACTS.md "Benchmarks"). `python -m bench.report` rewrites this file from '
        "`bench/out/results.json`.",
        "",
    ]
    if mode != "full":
        lines += [
            f"> This is a **{mode}** run with small sizes; the full run (`make bench`) publishes the "
            "numbers at 10,000 and 100,000 opportunities.",
            "",
        ]
    lines += ["## Headline", ""]
    lines += _headline_quality(doc)
    comps = _all_comparisons(doc)
    if comps:
        lines += [
            "### Speed: ours against the obvious naive alternative, measured in the same run",
            "",
            *table(["benchmark", "size", "what", "ours", "naive", "unit", "ratio"], comps, "lrlrrlr"),
            "",
        ]
    for path in charts:
        lines.append(f"![{path.stem}]({_rel(path, report_path)})")
    lines.append("")
    lines += _quality_section(doc, report_path)
    lines += _speed_section(doc)
    lines += _runs_section(doc)
    lines += _machine_section(doc)
    lines += [
        "## Method",
        "",
        "- Fixed seeds; stochastic steps are repeated and reported as the median with the spread "
        "(max - min over the repetitions; `±` in quality tables is half of it).",
        f"- Expected calibration error: {ECE_BINS} equal-width probability bins over [0, 1], "
        "sum over bins of (share of test records in the bin) x |mean predicted probability - won rate|.",
        "- Quality is measured on the most recent 20% of closed records (by close date); the product, "
        "the peers and the metrics see exactly the same training and test records. Nothing the "
        "benchmark fits is tuned on the test records; the one exception is the product's own published "
        "threshold, which the product picks on its test records (so its precision, recall and F1 are "
        "optimistic). Leakage columns are excluded by the product's own guard; the peers use the "
        "columns it kept.",
        "- Memory is the peak resident set size of a process (Linux `ru_maxrss`).",
        "",
    ]
    return "\n".join(lines)


def write_report(
    doc: dict[str, Any], report_path: Path = ROOT / "BENCHMARKS.md", charts_dir: Path = CHARTS_DIR
) -> Path:
    charts = summary_charts(doc, charts_dir)
    report_path.write_text(render(doc, report_path, charts))
    return report_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report")
    parser.add_argument("results", nargs="?", type=Path, default=OUT_DIR / "results.json")
    parser.add_argument("--report", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    if not args.results.exists():
        raise SystemExit(f"{args.results} does not exist: run `python -m bench` first")
    write_report(json.loads(args.results.read_text()), args.report)
    print(args.report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
