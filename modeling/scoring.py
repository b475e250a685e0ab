"""Scoring math shared with training: calibration, ONNX inference, grades, trends and reasons.

Reasons: for every record and *fact*, the impact is the change in calibrated win probability when the
fact's inputs are set together to their training baselines (median / most frequent value; "no history"
for past win rates), computed with onnxruntime in large stacked batches (stack-pitfalls Q4 (c)). A fact
is one attribute, or inputs describing the same thing (FACT_GROUPS: a past win rate and its count, days
in stage and its ratio to won deals): one sentence, one summed (joint) impact, so a fact is never both a
positive and a negative reason, nor shown twice. Each sentence uses per-value win rates from the training
data (insights.value_win_rates) or the counts behind a past win rate. Reasons that carry no information (an
empty value, no past deals) are shown only when they move the probability by NO_INFO_MIN_IMPACT or more.

Speed: the ONNX graph is split once into its feature part (string one-hot, imputing, scaling) and its
model part (trees or linear); records are prepared once, perturbed as float32 matrices in numpy and only
the model part runs on the perturbed rows (`fast`; the plain path perturbs the string feed and runs the
whole graph, used when a graph cannot be split).
Trend tolerance: a change of at most TREND_TOLERANCE points is Steady.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
from onnx import TensorProto, helper

from modeling.config import grade_for as _grade_for
from modeling.errors import ModelMetaError
from modeling.features import MISSING, inapplicable, model_columns, prepare_with_report
from modeling.insights import display_value, value_keys

log = logging.getLogger(__name__)

TREND_TOLERANCE = 3
REASONS_MAX_CHARS = 10_000
TOP_REASONS = 5
MIN_IMPACT = 5e-4  # a reason must move the win probability by at least 0.05 points
NO_INFO_MIN_IMPACT = 0.01  # an empty value / no past deals is a reason only when it moves P by >= 1 point
STACK_ROWS = 250_000  # perturbed rows per onnxruntime run (bounds memory with wide one-hot models)
MODEL_OPS = ("TreeEnsembleClassifier", "LinearClassifier")
IMPROVING, STEADY, DECLINING, NOT_ENOUGH_INFO = 0, 1, 2, 3
# Inputs that describe one fact (first present = the reason's attribute and sentence); impacts are joint.
FACT_GROUPS: tuple[tuple[str, ...], ...] = (
    ("d_owner_win_rate", "d_owner_closed"),
    ("d_account_win_rate", "d_account_closed"),
    ("d_similar_win_rate", "d_similar_closed"),
    ("d_stage_time_vs_won", "d_days_in_stage"),
)
# Past win rates whose "no history" value is the training win rate (their baseline at training)
PAST_RATES = ("d_owner_win_rate", "d_account_win_rate", "d_similar_win_rate", "d_account_same_value_win_rate")
PAST_COUNTS = ("d_owner_closed", "d_account_closed", "d_similar_closed")
# Past-win-rate features whose reason states the counts behind the rate (frame columns from modeling.dataset):
# feature -> (won column, closed column, what the deals are)
COUNT_REASONS = {
    "d_similar_win_rate": ("d_similar_won", "d_similar_closed", "similar past deals"),
    "d_similar_closed": ("d_similar_won", "d_similar_closed", "similar past deals"),
    "d_account_win_rate": ("d_account_won", "d_account_closed", "past deals with this account"),
    "d_account_closed": ("d_account_won", "d_account_closed", "past deals with this account"),
    "d_owner_win_rate": ("d_owner_won", "d_owner_closed", "past deals of this owner"),
    "d_owner_closed": ("d_owner_won", "d_owner_closed", "past deals of this owner"),
}


def count_sentence(won: float, closed: float, what: str, global_rate: float, rate: float | None = None) -> str:
    """ "7 of 9 similar past deals were won (all: 29%)". With no such deal closed but a smoothed `rate` that
    differs from the global rate (similar deals: broader matches), that rate is stated instead."""
    if not math.isfinite(closed) or closed < 1:
        if rate is not None and math.isfinite(rate) and abs(rate - global_rate) >= 0.005:
            return f"No {what} closed yet; broader matches: about {rate:.0%} won (all: {global_rate:.0%})"
        return f"No {what} closed yet (all: {global_rate:.0%} won)"
    won_i, closed_i = int(won + 0.5), int(closed + 0.5)
    return f"{won_i:,} of {closed_i:,} {what} were won (all: {global_rate:.0%})"


AGAINST_MIN_GAP = 0.03  # a rate within 3 points of the overall rate is "about average": no clause


def direction(rate: float | None, global_rate: float | None) -> int:
    """+1 / -1 when a rate is clearly above / below the overall rate (by AGAINST_MIN_GAP), else 0."""
    if rate is None or global_rate is None or not math.isfinite(rate):
        return 0
    return 1 if rate >= global_rate + AGAINST_MIN_GAP else -1 if rate <= global_rate - AGAINST_MIN_GAP else 0


def against_note(rate: float | None, global_rate: float | None, points: float) -> str:
    """A clause for a reason whose rate points the other way than its impact on this deal's score.

    A value can be won less often than average overall and still raise this deal's score (its effect
    depends on the deal's other values, e.g. a large amount in a stage where large deals do well); the
    clause says so with the points, so a seller never reads "12% were won (all: 29%)" as a plus."""
    d = direction(rate, global_rate)
    if d == 0 or (d > 0) == (points > 0):
        return ""
    n = round(abs(points))
    by = "less than 1 point" if n < 1 else f"{n} point{'s' if n != 1 else ''}"
    return f"; with this deal's other values it {'raises' if points > 0 else 'lowers'} the score by {by}"


def calibrate(p: np.ndarray, calibration: Mapping[str, Any]) -> np.ndarray:
    """The model's probability -> calibrated probability. Methods (meta["calibration"]["method"]):
    "platt": sigmoid(a * logit(p) + b); "isotonic": piecewise-linear through the fitted points
    ("x", "y"); "blend": weight * platt + (1 - weight) * isotonic; "none": p unchanged."""
    raw = np.asarray(p, dtype=float)
    method = calibration.get("method", "platt")
    if method == "none":
        return raw
    q = np.clip(raw, 1e-6, 1 - 1e-6)
    z = calibration.get("a", 1.0) * np.log(q / (1 - q)) + calibration.get("b", 0.0)
    platt = 1.0 / (1.0 + np.exp(-z))
    if method == "platt":
        return platt
    xs = np.asarray(calibration.get("x", [0.0, 1.0]), dtype=float)
    iso = np.interp(raw, xs, np.asarray(calibration.get("y", [0.0, 1.0]), dtype=float))
    if method == "isotonic":
        return iso
    w = float(calibration.get("weight", 0.5))
    return w * platt + (1.0 - w) * iso


def session(onnx_bytes: bytes, threads: int = 0) -> ort.InferenceSession:
    """onnxruntime session on the CPU; `threads` = intra-op threads (0: onnxruntime's default, one per
    physical core)."""
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(onnx_bytes, sess_options=opts, providers=["CPUExecutionProvider"])


def raw_probabilities(sess: ort.InferenceSession, feed: Mapping[str, np.ndarray]) -> np.ndarray:
    """P(won) from the ONNX `probabilities` output (never the `label` output: stack-pitfalls Q3.5)."""
    out = sess.run(["probabilities"], dict(feed))[0]
    return np.asarray(out)[:, 1].astype(float)


def grade_for(score: int, ranges: Sequence[int]) -> int:
    return _grade_for(score, ranges)


def trend(previous: int | None, new: int, tolerance: int = TREND_TOLERANCE) -> int:
    """0 Improving, 1 Steady (|change| <= tolerance), 2 Declining, 3 Not enough info (no previous)."""
    if previous is None:
        return NOT_ENOUGH_INFO
    if new - previous > tolerance:
        return IMPROVING
    if previous - new > tolerance:
        return DECLINING
    return STEADY


def reasons_json(model_name: str, version: int, reasons: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    """{"model", "version", "positive": [...], "negative": [...]}, each reason {attribute, label, value,
    impact, text}; always <= 10,000 characters (texts shortened first, then reasons dropped)."""
    doc: dict[str, Any] = {
        "model": model_name,
        "version": int(version),
        "positive": [dict(r) for r in reasons.get("positive", [])][:TOP_REASONS],
        "negative": [dict(r) for r in reasons.get("negative", [])][:TOP_REASONS],
    }
    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    limit = 300
    while len(text) > REASONS_MAX_CHARS and limit >= 20:
        for side in ("positive", "negative"):
            for r in doc[side]:
                for k in ("text", "label", "value"):
                    if isinstance(r.get(k), str) and len(r[k]) > limit:
                        r[k] = r[k][: limit - 1] + "\u2026"
        text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
        limit //= 2
    while len(text) > REASONS_MAX_CHARS and (doc["positive"] or doc["negative"]):
        side = "positive" if len(doc["positive"]) >= len(doc["negative"]) else "negative"
        doc[side].pop()
        text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    return text


@dataclass
class _Split:
    """The model's ONNX graph cut at the input of its model node: `features` (raw feed -> float matrix X)
    and `model` (X -> probabilities); `columns[j]` = X's columns of spec feature j; `base` = X of the
    baseline record."""

    features: ort.InferenceSession
    model: ort.InferenceSession
    x_name: str
    columns: list[np.ndarray]
    base: np.ndarray
    # per X column, the split thresholds of a tree model ("x <= t" nodes): a value and the baseline that no
    # threshold separates take the same path in every tree, so that change has impact exactly 0; None for
    # other models (every change counts)
    thresholds: list[np.ndarray] | None


def split_model(onnx_bytes: bytes, spec: Mapping[str, Any], threads: int = 0) -> _Split | None:
    """Splits the graph (see module docstring) and checks the column layout against
    features.model_columns with one probe record per feature; None when the graph has another shape."""
    try:
        m = onnx.load_from_string(onnx_bytes)
        nodes = list(m.graph.node)
        at = [i for i, n in enumerate(nodes) if n.op_type in MODEL_OPS]
        if len(at) != 1:
            return None
        x_name = nodes[at[0]].input[0]
        pre, post = nodes[: at[0]], nodes[at[0] :]
        inits = {t.name for t in m.graph.initializer}
        made_after = {o for n in post for o in n.output}
        if {x for n in post for x in n.input} - made_after - inits != {x_name}:
            return None
        x_info = helper.make_tensor_value_info(x_name, TensorProto.FLOAT, [None, None])

        def part(part_nodes: list[Any], inputs: list[Any], outputs: list[Any]) -> ort.InferenceSession:
            needed = {x for n in part_nodes for x in n.input}
            graph = helper.make_graph(
                part_nodes, "part", inputs, outputs, [t for t in m.graph.initializer if t.name in needed]
            )
            model = helper.make_model(graph, opset_imports=list(m.opset_import))
            model.ir_version = m.ir_version
            return session(model.SerializeToString(), threads)

        features = part(pre, list(m.graph.input), [x_info])
        model_part = part(post, [x_info], [o for o in m.graph.output if o.name == "probabilities"])
        feats = spec["features"]
        layout = np.array(model_columns(spec), dtype=object)
        probe: dict[str, np.ndarray] = {}
        for j, f in enumerate(feats):  # row 0: the baseline record; row j + 1: feature j changed
            if f["kind"] == "category":
                other = next(c for c in f["categories"] if c != f["baseline"])
                col = np.full((len(feats) + 1, 1), f["baseline"], dtype=object)
                col[j + 1, 0] = other
            else:
                col = np.full((len(feats) + 1, 1), f["baseline"], dtype=np.float32)
                col[j + 1, 0] = np.float32(f["baseline"] + 1.0)
            probe[f["input"]] = col
        x = features.run([x_name], probe)[0]
        if x.shape[1] != len(layout):
            return None
        columns = [np.flatnonzero(layout == f["input"]) for f in feats]
        for j, cols in enumerate(columns):
            changed = np.flatnonzero(x[j + 1] != x[0])
            if len(changed) == 0 or not set(changed) <= set(cols):
                return None
        return _Split(
            features, model_part, x_name, columns, x[0].astype(np.float32), _thresholds(nodes[at[0]], x.shape[1])
        )
    except Exception as exc:  # noqa: BLE001 - any unexpected graph: the plain path still scores
        log.info("reasons use the plain path: the ONNX graph could not be split (%s)", type(exc).__name__)
        return None


def _thresholds(node: Any, width: int) -> list[np.ndarray] | None:
    """Sorted float32 thresholds per input column of a TreeEnsembleClassifier whose nodes are all "x <= t"
    (skl2onnx's HistGradientBoosting), else None."""
    if node.op_type != "TreeEnsembleClassifier":
        return None
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    modes = np.array([m.decode() if isinstance(m, bytes) else str(m) for m in attrs.get("nodes_modes", [])])
    if len(modes) == 0 or not set(modes) <= {"BRANCH_LEQ", "LEAF"}:
        return None
    split = modes == "BRANCH_LEQ"
    feature = np.asarray(attrs["nodes_featureids"], dtype=np.int64)[split]
    value = np.asarray(attrs["nodes_values"], dtype=np.float32)[split]
    return [np.unique(value[feature == c]) for c in range(width)]


def _moved(x: np.ndarray, base: float, thresholds: np.ndarray | None) -> np.ndarray:
    """Rows of column `x` whose value can change the model's output when set to `base`."""
    if thresholds is None:
        return np.asarray(x != base)  # NaN != base: a change
    if len(thresholds) == 0:
        return np.zeros(len(x), dtype=bool)
    side = np.searchsorted(thresholds, x, side="left")
    return np.asarray((side != np.searchsorted(thresholds, base, side="left")) | (np.isnan(x) != np.isnan(base)))


class Scorer:
    """Built once per model version: `Scorer(onnx_bytes, meta).score(frame)`. `fast=False` forces the plain
    impact path (the whole graph on perturbed string feeds)."""

    def __init__(self, onnx_bytes: bytes, meta: Mapping[str, Any], *, threads: int = 0, fast: bool = True):
        try:
            self.spec = meta["spec"]
            self.calibration = meta["calibration"]
            self.rates = meta["value_rates"]
            self.grade_ranges = tuple(meta.get("grade_ranges") or (75, 50, 25))
            self.baseline = {f["input"]: f["baseline"] for f in self.spec["features"]}
            self.prior = float((meta.get("stats") or {}).get("prior_win_rate", np.nan))
        except (KeyError, TypeError) as exc:
            raise ModelMetaError(f"model meta lacks {exc}") from exc
        self.sess = session(onnx_bytes, threads)
        feats = self.spec["features"]
        index = {f["name"]: j for j, f in enumerate(feats)}
        grouped: set[str] = set()
        self.groups: list[list[int]] = []  # spec feature positions per fact; the first is the reason's
        for names in FACT_GROUPS:
            members = [index[n] for n in names if n in index]
            if members:
                self.groups.append(members)
                grouped.update(names)
        self.groups += [[j] for j, f in enumerate(feats) if f["name"] not in grouped]
        self.groups.sort(key=lambda g: g[0])
        self.split = split_model(onnx_bytes, self.spec, threads) if fast else None

    @property
    def fast(self) -> bool:
        return self.split is not None

    def probabilities(self, frame: pd.DataFrame) -> tuple[np.ndarray, dict[str, int]]:
        feed, report = prepare_with_report(frame, self.spec)
        return calibrate(raw_probabilities(self.sess, feed), self.calibration), report

    def _perturbed(self, feed: Mapping[str, np.ndarray]) -> list[tuple[int, np.ndarray, Any]]:
        """Per fact group g: (g, rows not at the baseline, those rows with the group's used inputs set to their
        baselines - an X matrix block on the fast path, a feed dict otherwise). Inputs no tree reads
        (spec "used": false) and inputs a per-stage model does not apply to a row are left as they are."""
        feats = self.spec["features"]
        stage = feed.get("stage") if self.spec.get("stage_applicability") else None
        x = self.split.features.run([self.split.x_name], dict(feed))[0] if self.split else None
        out: list[tuple[int, np.ndarray, Any]] = []
        for g, members in enumerate(self.groups):
            used = [j for j in members if feats[j].get("used") is not False]
            if not used:
                continue
            n = len(next(iter(feed.values())))
            differ = np.zeros(n, dtype=bool)
            masks = []
            for j in used:
                f = feats[j]
                if x is not None and self.split is not None:  # in model columns: exact zero-impact skips
                    thr = self.split.thresholds
                    d = np.zeros(n, dtype=bool)
                    for c in self.split.columns[j]:
                        d |= _moved(x[:, c], float(self.split.base[c]), None if thr is None else thr[c])
                else:
                    v = feed[f["input"]].ravel()
                    d = v != f["baseline"] if v.dtype == object else ~(v == np.float32(f["baseline"]))
                skip = inapplicable(stage, f["name"], self.spec)
                if skip is not None:
                    d &= ~skip
                masks.append(skip)
                differ |= d
            rows = np.flatnonzero(differ)
            if len(rows) == 0:
                continue
            if x is not None and self.split is not None:
                block = x[rows]
                for j, skip in zip(used, masks, strict=True):
                    cols = self.split.columns[j]
                    base = self.split.base[cols]
                    block[:, cols] = base if skip is None else np.where(skip[rows, None], block[:, cols], base)
                out.append((g, rows, block))
            else:
                sub = {k: col[rows] for k, col in feed.items()}
                for j, skip in zip(used, masks, strict=True):
                    f = feats[j]
                    col = sub[f["input"]]
                    base = np.full(col.shape, f["baseline"], dtype=col.dtype)
                    sub[f["input"]] = base if skip is None else np.where(skip[rows, None], col, base)
                out.append((g, rows, sub))
        return out

    def impacts(self, feed: Mapping[str, np.ndarray], p: np.ndarray) -> np.ndarray:
        """[n, len(self.groups)] change in calibrated P when each fact's inputs are set to their baselines.
        Rows already at the baseline have impact 0 and are not run again (stacked onnxruntime runs of at
        most STACK_ROWS rows)."""
        n = len(p)
        out = np.zeros((n, len(self.groups)))
        if n == 0:
            return out
        parts = self._perturbed(feed)
        pending: list[tuple[int, np.ndarray, Any]] = []
        size = 0
        for k, item in enumerate(parts):
            pending.append(item)
            size += len(item[1])
            if size >= STACK_ROWS or k == len(parts) - 1:
                if self.split is not None:
                    big = np.concatenate([b for _, _, b in pending])
                    raw = self.split.model.run(["probabilities"], {self.split.x_name: big})[0]
                    pb = calibrate(np.asarray(raw)[:, 1].astype(float), self.calibration)
                else:
                    stacked = {key: np.concatenate([b[key] for _, _, b in pending]) for key in feed}
                    pb = calibrate(raw_probabilities(self.sess, stacked), self.calibration)
                at = 0
                for g, rows, _ in pending:
                    out[rows, g] = p[rows] - pb[at : at + len(rows)]
                    at += len(rows)
                pending, size = [], 0
        return out

    def score(self, frame: pd.DataFrame, *, with_reasons: bool = True, batch_size: int = 20_000) -> pd.DataFrame:
        """opportunityid, probability, score (0-100), grade (0=A..3=D), reasons ({"positive", "negative"}),
        `.attrs["bad_values"]`: per attribute, the count of bad values treated as missing."""
        parts = []
        for start in range(0, max(len(frame), 1), batch_size):
            part = frame.iloc[start : start + batch_size]
            if len(part) == 0:
                break
            parts.append(self._score_batch(part, with_reasons))
        if not parts:
            return pd.DataFrame(columns=["opportunityid", "probability", "score", "grade", "reasons"])
        out = pd.concat(parts, ignore_index=True)
        total: dict[str, int] = {}
        for part in parts:
            for k, v in part.attrs.get("bad_values", {}).items():
                total[k] = total.get(k, 0) + int(v)
        out.attrs["bad_values"] = total
        return out

    def _score_batch(self, frame: pd.DataFrame, with_reasons: bool) -> pd.DataFrame:
        feed, report = prepare_with_report(frame, self.spec)
        p = calibrate(raw_probabilities(self.sess, feed), self.calibration)
        scores = np.clip(np.rint(p * 100), 0, 100).astype(int)
        a, b, c = self.grade_ranges
        grades = np.where(scores >= a, 0, np.where(scores >= b, 1, np.where(scores >= c, 2, 3)))
        out = pd.DataFrame(
            {
                "opportunityid": frame["opportunityid"].astype(str).to_numpy(),
                "probability": p,
                "score": scores,
                "grade": grades,
            }
        )
        out.attrs["bad_values"] = report  # per attribute: values treated as missing
        if with_reasons:
            out["reasons"] = self._reasons(feed, p, frame)
        return out

    def _column(self, frame: pd.DataFrame | None, name: str) -> np.ndarray | None:
        if frame is None or name not in frame.columns:
            return None
        return pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float)

    def _counts(self, frame: pd.DataFrame | None, item: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """(won, closed, what, all-rate, smoothed rate) arrays for past-win-rate facts when the frame has
        the counts."""
        spec = COUNT_REASONS.get(item["name"])
        if spec is None:
            return None
        won, closed = self._column(frame, spec[0]), self._column(frame, spec[1])
        if won is None or closed is None:
            return None
        rate = self.prior
        if not np.isfinite(rate):
            rate = float(self.rates.get(item["name"], {}).get("global_rate", 0.0))
        rate_col = item["name"].replace("_closed", "_win_rate")
        return won, closed, spec[2], rate, self._column(frame, rate_col)

    def _no_info(self, feed: Mapping[str, np.ndarray], frame: pd.DataFrame | None, n: int) -> np.ndarray:
        """[n, groups] True where the fact carries no information: an empty value, or no past deal closed."""
        feats = self.spec["features"]
        out = np.zeros((n, len(self.groups)), dtype=bool)
        for g, members in enumerate(self.groups):
            item = feats[members[0]]
            counts = self._counts(frame, item)
            if counts is not None:
                closed = counts[1]
                out[:, g] = ~np.isfinite(closed) | (closed < 1)
            elif item["kind"] == "category":
                out[:, g] = feed[item["input"]].ravel() == MISSING
            else:
                out[:, g] = np.isnan(feed[item["input"]].ravel())
        return out

    def _reasons(
        self, feed: Mapping[str, np.ndarray], p: np.ndarray, frame: pd.DataFrame | None = None
    ) -> list[dict[str, list[dict[str, Any]]]]:
        """Top positive and negative reasons of every row. Built one side at a time over all the rows' shown
        reasons at once: per fact, the sentence of each distinct value is made once and spread with numpy;
        only count and stage sentences (which quote the row's own numbers) and the rare against-rate
        clause are made per reason, through caches."""
        feats = self.spec["features"]
        n = len(p)
        imp = self.impacts(feed, p)
        primary = [feats[g[0]] for g in self.groups]
        keys = [value_keys(feed[f["input"]], f) for f in primary]
        counts = [self._counts(frame, f) for f in primary]
        stage_days = self._column(frame, "d_days_in_stage")
        stage_ratio = self._column(frame, "d_stage_time_vs_won")
        shown = np.abs(imp) >= np.where(self._no_info(feed, frame, n), NO_INFO_MIN_IMPACT, MIN_IMPACT)
        ranked = np.where(shown, imp, 0.0)
        points = np.round(imp * 100, 2)
        k = min(TOP_REASONS, len(self.groups))
        # per row: is each count sentence's rate clearly above (+1) / below (-1) the overall rate
        count_dirs = [None if c is None else np.asarray(self._count_directions(*c)) for c in counts]
        stage_g = {g for g, f in enumerate(primary) if f["name"] == "d_stage_time_vs_won"}
        # rounded as the sentence shows them (whole days, ratio to 0.1), so equal sentences share a cache entry
        days_l = None if stage_days is None else np.round(stage_days.astype(float)).tolist()
        ratio_l = None if stage_ratio is None else [round(v, 1) for v in stage_ratio.astype(float).tolist()]
        templates: list[dict[Any, tuple[str, str, str, str, float | None, float | None, int]]] = [
            {} for _ in primary
        ]
        count_texts: dict[tuple[Any, ...], str] = {}
        stage_texts: dict[tuple[Any, ...], str] = {}

        def side(order: np.ndarray, sign: int) -> list[list[dict[str, Any]]]:
            # sorted, so the reasons shown on a side are a prefix of its order
            n_shown = ((np.take_along_axis(ranked, order, axis=1) * sign) > 0).sum(axis=1)
            mask = np.arange(k)[None, :] < n_shown[:, None]
            rows = np.broadcast_to(np.arange(n)[:, None], order.shape)[mask]  # row-major: the rows' order
            groups = order[mask]
            pts = points[rows, groups]
            m = len(rows)
            attrs, labels, values, texts = (np.empty(m, dtype=object) for _ in range(4))
            dirs = np.zeros(m, dtype=np.int8)
            for g in np.unique(groups).tolist():
                sel = np.flatnonzero(groups == g)
                r = rows[sel]
                codes, uniq = pd.factorize(keys[g][r], use_na_sentinel=False)
                cache = templates[g]
                tmpl = []
                for u in uniq:
                    t = cache.get(u)
                    if t is None:
                        t = cache[u] = self._template(primary[g], u)
                    tmpl.append(t)
                attrs[sel] = tmpl[0][0]
                labels[sel] = tmpl[0][1]
                values[sel] = np.array([t[2] for t in tmpl], dtype=object)[codes]
                c = counts[g]
                if c is not None:
                    won_l, closed_l = c[0][r].tolist(), c[1][r].tolist()
                    sm_l = [None] * len(r) if c[4] is None else c[4][r].tolist()
                    out = []
                    for won, closed, smoothed in zip(won_l, closed_l, sm_l, strict=True):
                        ck = (g, won, closed, smoothed)
                        text = count_texts.get(ck)
                        if text is None:
                            text = count_texts[ck] = count_sentence(won, closed, c[2], c[3], smoothed)
                        out.append(text)
                    texts[sel] = np.array(out, dtype=object)
                    dirs[sel] = count_dirs[g][r]  # type: ignore[index]
                    continue
                if g in stage_g and days_l is not None:
                    out = []
                    for i, code in zip(r.tolist(), codes.tolist(), strict=True):
                        sk = (days_l[i], None if ratio_l is None else ratio_l[i], uniq[code])
                        text = stage_texts.get(sk)
                        if text is None:
                            ratio = math.nan if sk[1] is None else sk[1]
                            text = stage_texts[sk] = self._stage_sentence(
                                sk[0], ratio, primary[g], uniq[code], tmpl[code][3]
                            )
                        out.append(text)
                    texts[sel] = np.array(out, dtype=object)
                else:
                    texts[sel] = np.array([t[3] for t in tmpl], dtype=object)[codes]
                dirs[sel] = np.array([t[6] for t in tmpl], dtype=np.int8)[codes]
            against = np.flatnonzero((dirs != 0) & ((dirs > 0) != (pts > 0)))
            for j in against.tolist():
                i, g = int(rows[j]), int(groups[j])
                c = counts[g]
                if c is not None:
                    won, closed = float(c[0][i]), float(c[1][i])
                    smoothed = None if c[4] is None else float(c[4][i])
                    rate = won / closed if math.isfinite(closed) and closed >= 1 else smoothed
                    texts[j] += against_note(rate, c[3], float(pts[j]))
                else:
                    t = templates[g][keys[g][i]]
                    texts[j] += against_note(t[4], t[5], float(pts[j]))
            made = [
                {"attribute": a, "label": lb, "value": v, "impact": q, "text": tx}
                for a, lb, v, q, tx in zip(
                    attrs.tolist(), labels.tolist(), values.tolist(), pts.tolist(), texts.tolist(), strict=True
                )
            ]
            bounds = [0, *np.cumsum(n_shown).tolist()]
            return [made[bounds[i] : bounds[i + 1]] for i in range(n)]

        positive = side(np.argsort(-ranked, axis=1)[:, :k], 1)
        negative = side(np.argsort(ranked, axis=1)[:, :k], -1)
        return [{"positive": a, "negative": b} for a, b in zip(positive, negative, strict=True)]

    @staticmethod
    def _count_directions(
        won: np.ndarray, closed: np.ndarray, what: str, global_rate: float, smoothed: np.ndarray | None
    ) -> list[int]:
        """`direction` of every row's count-sentence rate (won / closed, or the smoothed rate when none closed)."""
        has = np.isfinite(closed) & (closed >= 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = np.where(has, won / np.where(has, closed, 1.0), np.nan if smoothed is None else smoothed)
        rate = np.where(np.isfinite(rate), rate, global_rate)
        out = np.where(rate >= global_rate + AGAINST_MIN_GAP, 1, np.where(rate <= global_rate - AGAINST_MIN_GAP, -1, 0))
        return list(out.tolist())

    def _stage_sentence(self, days: float, ratio: float, item: Mapping[str, Any], key: str, fallback: str) -> str:
        """ "12 days in the current stage (1.8x the median of won deals): 38% of such opportunities were won
        (all: 43%)"."""
        if not math.isfinite(days):
            return fallback
        head = f"{days:,.0f} days in the current stage"
        if math.isfinite(ratio):
            head += f" ({ratio:.1f}x the median of won deals)"
        rates = self.rates.get(item["name"], {})
        value = rates.get("values", {}).get(key)
        if value is None or rates.get("global_rate") is None:
            return head
        return f"{head}: {value['rate']:.0%} of such opportunities were won (all: {rates['global_rate']:.0%})"

    def _template(
        self, item: Mapping[str, Any], key: str
    ) -> tuple[str, str, str, str, float | None, float | None, int]:
        """(attribute, label, shown value, sentence, the value's win rate, the global win rate, `direction`)."""
        rates = self.rates.get(item["name"], {})
        value = rates.get("values", {}).get(key)
        global_rate = rates.get("global_rate")
        if value is not None:
            text = value["text"]
        elif global_rate is not None:
            text = f"{item['label']} = {display_value(key)} is rare in past deals (all: {global_rate:.0%} won)"
        else:
            text = f"{item['label']} = {display_value(key)}"
        rate = None if value is None else float(value["rate"])
        return (
            str(item["name"]),
            str(item["label"]),
            display_value(key),
            text,
            rate,
            global_rate,
            direction(rate, global_rate),
        )
