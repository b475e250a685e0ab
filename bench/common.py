"""Shared benchmark helpers: the JSON result shape (docs/CONTRACTS.md "Benchmarks"), repetition
statistics, peak memory, machine facts, and the quality metrics every model is judged by.

Metrics are computed here, by the benchmark, for the product and for every peer alike from predicted
probabilities on the same test records: the product's self-reported metrics are shown beside them, never
instead of them. AUC, Brier, precision and recall come from scikit-learn (well-kept, and what every
reader can reproduce); expected calibration error has no scikit-learn function, so it is written out
below (10 equal-width bins over [0, 1], weighted by the share of records in each bin).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CHARTS_DIR = ROOT / "bench" / "charts"
OUT_DIR = ROOT / "bench" / "out"
DATASETS_DIR = ROOT.parent / "shared" / "datasets"
ECE_BINS = 10
LIBRARIES = (
    "numpy",
    "pandas",
    "scikit-learn",
    "scipy",
    "onnx",
    "onnxruntime",
    "skl2onnx",
    "pyarrow",
    "azure-functions",
    "azure-storage-blob",
    "msal",
    "requests",
    "matplotlib",
)


# ---------------------------------------------------------------- repetitions and the JSON shape


@dataclass(frozen=True)
class Stat:
    values: tuple[float, ...]

    @property
    def reps(self) -> int:
        return len(self.values)

    @property
    def median(self) -> float:
        return float(statistics.median(self.values)) if self.values else float("nan")

    @property
    def spread(self) -> float:
        """max - min over the repetitions (0 for one)."""
        return float(max(self.values) - min(self.values)) if self.values else 0.0


def measure(fn: Callable[[], Any], reps: int = 3, warmup: int = 0) -> Stat:
    """Wall-clock seconds of `fn()` over `reps` runs (after `warmup` unrecorded runs)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, reps)):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return Stat(tuple(times))


def result(
    metric: str, value: float | None, unit: str, *, reps: int = 1, spread: float = 0.0, note: str = ""
) -> dict[str, Any]:
    v = None if value is None or not np.isfinite(value) else float(value)
    return {
        "metric": metric,
        "value": v,
        "unit": unit,
        "reps": reps,
        "median": v,
        "spread": float(spread),
        "note": note,
    }


def stat_result(metric: str, stat: Stat, unit: str, note: str = "") -> dict[str, Any]:
    return result(metric, stat.median, unit, reps=stat.reps, spread=stat.spread, note=note)


def comparison(
    what: str, ours: float, naive: float, unit: str, *, higher_is_better: bool = True
) -> dict[str, Any]:
    """A ratio above 1 always means ours is better (ours/naive for rates, naive/ours for times)."""
    if higher_is_better:
        ratio = ours / naive if naive else float("nan")
    else:
        ratio = naive / ours if ours else float("nan")
    return {
        "what": what,
        "ours": float(ours),
        "naive": float(naive),
        "unit": unit,
        "ratio": None if not np.isfinite(ratio) else round(float(ratio), 4),
        "higher_is_better": higher_is_better,
    }


def emit(
    name: str,
    params: dict[str, Any],
    results: Sequence[dict[str, Any]],
    comparisons: Sequence[dict[str, Any]] = (),
    **extra: Any,
) -> dict[str, Any]:
    """Prints the one JSON line the runner collects, and returns it."""
    doc = {
        "name": name,
        "params": params,
        "results": list(results),
        "comparisons": list(comparisons),
        **extra,
    }
    sys.stdout.write(json.dumps(doc, default=_json_default) + "\n")
    sys.stdout.flush()
    return doc


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def size_arg_parser(description: str, default_size: int) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--size", type=int, default=default_size, help="problem size (records)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions per measurement")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def log(message: str) -> None:
    """Progress goes to stderr: stdout carries only the JSON result."""
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


# ---------------------------------------------------------------- machine facts


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": _memory_gib(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "libraries": {},
        "blas_env": {
            k: os.environ[k]
            for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS")
            if k in os.environ
        },
    }
    for name in LIBRARIES:
        try:
            info["libraries"][name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            info["libraries"][name] = "missing"
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


# ---------------------------------------------------------------- quality metrics


def _check(y: Any, p: Any) -> tuple[np.ndarray, np.ndarray]:
    ya = np.asarray(y).astype(int).ravel()
    pa = np.asarray(p, dtype=float).ravel()
    if ya.shape != pa.shape:
        raise ValueError(f"labels ({ya.shape[0]}) and probabilities ({pa.shape[0]}) differ in length")
    if len(ya) == 0:
        raise ValueError("no records to evaluate")
    if not np.all(np.isfinite(pa)) or pa.min() < 0 or pa.max() > 1:
        raise ValueError("probabilities must be finite and within [0, 1]")
    if not set(np.unique(ya)) <= {0, 1}:
        raise ValueError("labels must be 0 (lost) or 1 (won)")
    return ya, pa


def calibration_table(y: Any, p: Any, bins: int = ECE_BINS) -> list[dict[str, float]]:
    """Equal-width bins over [0, 1] (the last bin includes 1.0); empty bins are left out."""
    ya, pa = _check(y, p)
    idx = np.minimum((pa * bins).astype(int), bins - 1)
    table = []
    for b in range(bins):
        mask = idx == b
        n = int(mask.sum())
        if n:
            table.append(
                {
                    "lo": b / bins,
                    "hi": (b + 1) / bins,
                    "n": n,
                    "mean_p": float(pa[mask].mean()),
                    "won_rate": float(ya[mask].mean()),
                }
            )
    return table


def expected_calibration_error(y: Any, p: Any, bins: int = ECE_BINS) -> float:
    """ECE = sum over bins of (records in bin / all records) * |mean predicted - observed won rate|, over
    calibration_table's bins; per bin that is |sum of p - sum of y| / all records."""
    ya, pa = _check(y, p)
    idx = np.minimum((pa * bins).astype(int), bins - 1)
    gap = np.bincount(idx, weights=pa, minlength=bins) - np.bincount(idx, weights=ya, minlength=bins)
    return float(np.abs(gap).sum() / len(ya))


EDGE_ROUNDS = 1000


def paired_edge(
    y: Any, p_ours: Any, p_peer: Any, metric: str, *, rounds: int = EDGE_ROUNDS, seed: int = 0
) -> dict[str, float]:
    """How much better ours is than a peer on `metric` ("auc" or "ece") on the same records, and the 95%
    interval of that edge over `rounds` bootstrap resamples of the records (ours and the peer resampled
    together). The edge is positive when ours is better: AUC ours - peer, ECE peer - ours. An interval
    that holds 0 means this test set cannot tell the two apart."""
    from sklearn.metrics import roc_auc_score

    ya, pa = _check(y, p_ours)
    _, pb = _check(y, p_peer)
    if metric == "auc":

        def edge(i: np.ndarray) -> float:
            return float(roc_auc_score(ya[i], pa[i]) - roc_auc_score(ya[i], pb[i]))
    elif metric == "ece":

        def edge(i: np.ndarray) -> float:
            return expected_calibration_error(ya[i], pb[i]) - expected_calibration_error(ya[i], pa[i])
    else:
        raise ValueError(f"paired_edge measures auc or ece, not {metric!r}")
    rng = np.random.default_rng(seed)
    n = len(ya)
    draws = []
    for _ in range(rounds):
        i = rng.integers(0, n, n)
        if 0 < ya[i].sum() < n:
            draws.append(edge(i))
    lo, hi = np.percentile(draws, [2.5, 97.5]) if draws else (float("nan"), float("nan"))
    return {"edge": edge(np.arange(n)), "low": float(lo), "high": float(hi), "rounds": len(draws)}


def f1_optimal_threshold(y: Any, p: Any) -> float:
    """The probability cut that maximises F1 on (y, p); ties go to the highest cut (fewer positives)."""
    from sklearn.metrics import precision_recall_curve

    ya, pa = _check(y, p)
    if ya.sum() == 0:
        return 0.5
    precision, recall, thresholds = precision_recall_curve(ya, pa)
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    f1 = f1[:-1]  # the last point has no threshold
    best = np.flatnonzero(f1 == f1.max())
    return float(thresholds[best[-1]])


def evaluate(y: Any, p: Any, threshold: float) -> dict[str, float]:
    """AUC, Brier, ECE, and precision / recall / F1 / accuracy when scoring >= threshold means won."""
    from sklearn.metrics import brier_score_loss, precision_score, recall_score, roc_auc_score

    ya, pa = _check(y, p)
    pred = (pa >= threshold).astype(int)
    both = len(np.unique(ya)) == 2
    precision = float(precision_score(ya, pred, zero_division=0))
    recall = float(recall_score(ya, pred, zero_division=0))
    return {
        "auc": float(roc_auc_score(ya, pa)) if both else float("nan"),
        "brier": float(brier_score_loss(ya, pa)),
        "ece": expected_calibration_error(ya, pa),
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "accuracy": float((pred == ya).mean()),
        "threshold": float(threshold),
        "n": int(len(ya)),
        "won_rate": float(ya.mean()),
    }


HIGHER_IS_BETTER = {
    "auc": True,
    "brier": False,
    "ece": False,
    "precision": True,
    "recall": True,
    "f1": True,
    "accuracy": True,
}


def ratio_to_best(ours: float, peers: Sequence[float], metric: str) -> tuple[float | None, int | None]:
    """(ratio, index of the best peer); above 1 means ours is better than the best peer."""
    vals = [v for v in peers if v is not None and np.isfinite(v)]
    if not vals or ours is None or not np.isfinite(ours):
        return None, None
    hib = HIGHER_IS_BETTER[metric]
    best = max(vals) if hib else min(vals)
    index = list(peers).index(best)
    if hib:
        return (ours / best if best else None), index
    return (best / ours if ours else None), index


@contextlib.contextmanager
def local_org(
    tmp: str, size: int, seed: int, *, timeout: float = 300.0, mock_args: Sequence[str] | None = None
) -> Iterator[tuple[Any, Any, float]]:
    """Azurite and the mock (`size` opportunities, `seed`; or started with `mock_args`, e.g. a data set's
    import) as child processes for one benchmark, stopped by PID however it ends. Yields (azurite, mock, the
    mock's start-up seconds)."""
    from local_runner import stack

    azurite = stack.start_azurite(tmp)
    mock = None
    args = list(mock_args) if mock_args is not None else ["--seed", str(seed), "--opportunities", str(size)]
    try:
        t0 = time.perf_counter()
        mock = stack.start_mock(args, log_path=f"{tmp}/mock.log", timeout=timeout)
        started = time.perf_counter() - t0
        log(f"mock ({' '.join(args[:2])}) up in {started:.1f} s")
        yield azurite, mock, started
    finally:
        if mock is not None:
            mock.stop()
        azurite.stop()
