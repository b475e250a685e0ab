"""Scoring math shared with training: calibration, ONNX inference, grades, trends, contributions, reasons.

Contributions (docs/SCORING.md "Reasons"): the ONNX graph is split once into its feature part (string
one-hot, imputing, scaling -> matrix X) and its model part (trees or linear). For every record and fact
(one attribute, or inputs describing one thing: FACT_GROUPS) `modeling.contributions` gives its exact
Shapley value in the model's margin against the training baselines (median / most frequent value; "no
history" for past win rates). They are turned into calibrated log-odds and into points of score by the
secant of the calibration between the baseline and the deal, so the points add up exactly to
score - baseline score. A reason is a fact worth at least MIN_POINTS, on the side of its sign: up to
TOP_REASONS raising and TOP_REASONS lowering the score, strongest first, each with a headline and an
insight (modeling.phrases). Trend tolerance: a change of at most TREND_TOLERANCE points is Steady.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
from onnx import TensorProto, helper

from modeling import phrases
from modeling.config import grade_for as _grade_for
from modeling.contributions import Part, contributions, read_model
from modeling.errors import ModelMetaError
from modeling.features import inapplicable, model_columns, prepare_with_report
from modeling.insights import value_keys
from modeling.reasons import TOP_REASONS, Phrasing

log = logging.getLogger(__name__)

TREND_TOLERANCE = 3
REASONS_MAX_CHARS = 10_000
TEXT_MAX_CHARS = 300  # a reason's text longer than this is shortened when the JSON is over its cap
REASONS_FORMAT = 2
HISTORY_POINTS = 12  # scores kept in the reasons JSON for the card's chart
MODEL_OPS = ("TreeEnsembleClassifier", "LinearClassifier")
IMPROVING, STEADY, DECLINING, NOT_ENOUGH_INFO = 0, 1, 2, 3
# Inputs that describe one fact (first present = the reason's attribute and sentence)
FACT_GROUPS: tuple[tuple[str, ...], ...] = (
    ("d_owner_win_rate", "d_owner_closed"),
    ("d_account_win_rate", "d_account_closed"),
    ("d_similar_win_rate", "d_similar_closed"),
    ("d_stage_time_vs_won", "d_days_in_stage"),
)
# Past win rates whose "no history" value is the training win rate (their baseline at training)
PAST_RATES = ("d_owner_win_rate", "d_account_win_rate", "d_similar_win_rate", "d_account_same_value_win_rate")
PAST_COUNTS = ("d_owner_closed", "d_account_closed", "d_similar_closed")


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


def reasons_json(
    model_name: str,
    version: int,
    reasons: Mapping[str, Any],
    history: Sequence[Mapping[str, Any]] | None = None,
) -> str:
    """The msdyn_scorereasons text (format REASONS_FORMAT, docs/SCORING.md): {"format", "model",
    "version", "score", "baseline", "positive": [...], "negative": [...], "history": [...]}, each reason
    {attribute, label, value, points, logOdds, headline, insight}; at most REASONS_MAX_CHARS characters:
    texts over 300 characters are shortened, then the weakest reasons dropped, then the oldest history
    points (never a cut inside the JSON)."""
    doc: dict[str, Any] = {"format": REASONS_FORMAT, "model": model_name, "version": int(version)}
    for k in ("score", "baseline"):
        if reasons.get(k) is not None:
            doc[k] = reasons[k]
    doc["positive"] = list(reasons.get("positive", []))[:TOP_REASONS]
    doc["negative"] = list(reasons.get("negative", []))[:TOP_REASONS]
    if history is not None:
        doc["history"] = list(history)[-HISTORY_POINTS:]
    text = _dumps(doc)
    if len(text) > REASONS_MAX_CHARS:  # trimmed on copies: the caller's reasons stay as they are
        doc["positive"] = [dict(r) for r in doc["positive"]]
        doc["negative"] = [dict(r) for r in doc["negative"]]
        for side in ("positive", "negative"):
            for r in doc[side]:
                for k in ("headline", "insight", "label", "value"):
                    if isinstance(r.get(k), str) and len(r[k]) > TEXT_MAX_CHARS:
                        r[k] = r[k][: TEXT_MAX_CHARS - 1] + "\u2026"
        text = _dumps(doc)
    while len(text) > REASONS_MAX_CHARS and (doc["positive"] or doc["negative"]):
        sides = [k for k in ("positive", "negative") if doc[k]]  # each side is strongest first
        weakest = min(sides, key=lambda k: abs(float(doc[k][-1].get("points") or 0.0)))
        doc[weakest].pop()
        text = _dumps(doc)
    while len(text) > REASONS_MAX_CHARS and doc.get("history"):
        doc["history"].pop(0)
        text = _dumps(doc)
    return text


def with_history(text: str, history: Sequence[Mapping[str, Any]]) -> str | None:
    """`reasons_json(..., history)` from its text without history, by appending the history (what a written
    row adds); None when that would pass REASONS_MAX_CHARS (then `reasons_json` trims)."""
    if not text.endswith("}") or '"history":' in text:
        return None
    out = text[:-1] + ',"history":' + _dumps([dict(h) for h in history][-HISTORY_POINTS:]) + "}"
    return out if len(out) <= REASONS_MAX_CHARS else None


def _dumps(doc: Any) -> str:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


class Facts:
    """One record's contribution of every fact (points) and its value, kept for the score history: a
    pointer into its batch's arrays, serialised only for rows that are written."""

    __slots__ = ("batch", "row")

    def __init__(self, batch: FactsBatch, row: int):
        self.batch, self.row = batch, row

    @property
    def points(self) -> np.ndarray:
        return self.batch.points[self.row]

    def as_dict(self) -> dict[str, list[Any]]:
        """{attribute: [points (0.1), value as spoken, label]} of every fact, those at their baseline (0 points)
        too: a later change away from the baseline value can then say what the value was."""
        out: dict[str, list[Any]] = {}
        values = self.batch.values[self.row].tolist()
        for (name, label, unit), q, v in zip(self.batch.items, self.points.tolist(), values, strict=True):
            shown = phrases.display_value(v) if isinstance(v, str) else phrases.spoken(float(v), unit)
            out[name] = [round(q, 1) + 0.0, shown, label]
        return out

    def to_json(self) -> str:
        return _dumps(self.as_dict())


@dataclass(frozen=True)
class FactsBatch:
    items: Sequence[tuple[str, str, str | None]]  # (attribute, label, unit) per fact
    points: np.ndarray  # [n, facts]
    values: np.ndarray  # [n, facts] objects: value labels (categories) or numbers


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
    part: Part  # the model node's margin (modeling.contributions)


def split_model(onnx_bytes: bytes, spec: Mapping[str, Any], threads: int = 0) -> _Split | None:
    """Splits the graph (see module docstring) and checks the column layout against
    features.model_columns with one probe record per feature; None when the graph has another shape."""
    try:
        m = onnx.load_from_string(onnx_bytes)
        nodes = list(m.graph.node)
        at = [i for i, n in enumerate(nodes) if n.op_type in MODEL_OPS]
        if len(at) != 1:
            raise _NotSplit("not one linear or tree model node")
        x_name = nodes[at[0]].input[0]
        pre, post = nodes[: at[0]], nodes[at[0] :]
        inits = {t.name for t in m.graph.initializer}
        made_after = {o for n in post for o in n.output}
        if {x for n in post for x in n.input} - made_after - inits != {x_name}:
            raise _NotSplit("the model node needs more than the feature matrix")
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
                col[j + 1, 0] = np.float32(f["baseline"] + max(1.0, abs(f["baseline"]) * 0.5))  # float32 moves
            probe[f["input"]] = col
        x = features.run([x_name], probe)[0]
        if x.shape[1] != len(layout):
            raise _NotSplit(f"{x.shape[1]} model columns, {len(layout)} expected")
        columns = [np.flatnonzero(layout == f["input"]) for f in feats]
        for j, cols in enumerate(columns):
            changed = np.flatnonzero(x[j + 1] != x[0])
            if len(changed) == 0 or not set(changed) <= set(cols):
                raise _NotSplit(f"columns of {feats[j]['name']} do not follow the layout")
        part_of = read_model(nodes[at[0]])
        if part_of is None:
            raise _NotSplit("an unsupported model node")
        return _Split(features, model_part, x_name, columns, x[0].astype(np.float32), part_of)
    except Exception as exc:  # noqa: BLE001 - any unexpected graph still scores, without reasons
        log.warning("no reasons: the ONNX graph could not be split (%s: %s)", type(exc).__name__, exc)
        return None


class _NotSplit(Exception):
    """The graph has another shape than the ones split_model knows."""


class Scorer:
    """Built once per model version: `Scorer(onnx_bytes, meta).score(frame)`."""

    def __init__(self, onnx_bytes: bytes, meta: Mapping[str, Any], *, threads: int = 0):
        try:
            self.spec = meta["spec"]
            self.calibration = meta["calibration"]
            self.rates = meta["value_rates"]
            self.grade_ranges = tuple(meta.get("grade_ranges") or (75, 50, 25))
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
        self.primary = [feats[g[0]] for g in self.groups]
        self.items = tuple((str(f["name"]), str(f["label"]), phrases.unit_of(f)) for f in self.primary)
        self.split = split_model(onnx_bytes, self.spec, threads)
        self.column_group = np.full(0 if self.split is None else len(self.split.base), -1, dtype=np.int64)
        if self.split is not None:
            for g, members in enumerate(self.groups):
                for j in members:
                    self.column_group[self.split.columns[j]] = g
        self.phrasing = Phrasing(self.primary, self.rates, self.prior, str(meta.get("currency") or "$"))

    @property
    def explains(self) -> bool:
        """Whether the model's graph can be explained (every graph this product trains can)."""
        return self.split is not None

    def feed_probabilities(self, frame: pd.DataFrame) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The model's feed of `frame` and its calibrated P(won), without reasons (what drift measures)."""
        feed, _ = prepare_with_report(frame, self.spec)
        return feed, calibrate(raw_probabilities(self.sess, feed), self.calibration)

    def _same(self, feed: Mapping[str, np.ndarray]) -> np.ndarray | None:
        """[n, facts] True where a per-stage model does not apply the fact in the row's stage (its
        reference is the row itself, so it contributes 0)."""
        stage = feed.get("stage") if self.spec.get("stage_applicability") else None
        if stage is None:
            return None
        feats = self.spec["features"]
        out = np.zeros((len(stage), len(self.groups)), dtype=bool)
        for g, members in enumerate(self.groups):
            for j in members:
                skip = inapplicable(stage, feats[j]["name"], self.spec)
                if skip is not None:
                    out[:, g] |= skip
        return out if out.any() else None

    def explain(self, feed: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(calibrated P [n], points [n, facts], calibrated log-odds [n, facts], baseline score [n]):
        points.sum(1) + baseline == 100 * P (see the module docstring)."""
        if self.split is None:
            raise ModelMetaError("the model's ONNX graph cannot be explained (not a split linear or tree model)")
        x = self.split.features.run([self.split.x_name], dict(feed))[0]
        raw = self.split.model.run(["probabilities"], {self.split.x_name: x})[0]
        p = calibrate(np.asarray(raw)[:, 1].astype(float), self.calibration)
        phi, mx, mr = contributions(
            self.split.part, x, self.split.base, self.column_group, len(self.groups), self._same(feed)
        )
        px, pr = self._calibrated(mx), self._calibrated(mr)
        dm = mx - mr
        flat = np.abs(dm) < 1e-6
        safe = np.where(flat, 1.0, dm)
        h = 1e-3
        slope = np.where(flat, (self._calibrated(mx + h) - self._calibrated(mx - h)) / (2 * h), (px - pr) / safe)
        lx, lr = _logit(px), _logit(pr)
        lslope = np.where(
            flat, (_logit(self._calibrated(mx + h)) - _logit(self._calibrated(mx - h))) / (2 * h), (lx - lr) / safe
        )
        # the score is P from onnxruntime; the points close the small float32 gap to it
        base = 100 * pr + 100 * (p - px)
        return p, 100 * phi * slope[:, None], phi * lslope[:, None], base

    def _calibrated(self, margin: np.ndarray) -> np.ndarray:
        return calibrate(1.0 / (1.0 + np.exp(-margin)), self.calibration)

    def score(self, frame: pd.DataFrame, *, with_reasons: bool = True, batch_size: int = 20_000) -> pd.DataFrame:
        """opportunityid, probability, score (0-100), grade (0=A..3=D) and, with reasons, reasons
        ({"score", "baseline", "positive", "negative"}) and facts (`Facts`);
        `.attrs["bad_values"]`: per attribute, the count of bad values treated as missing."""
        parts = []
        for start in range(0, max(len(frame), 1), batch_size):
            part = frame.iloc[start : start + batch_size]
            if len(part) == 0:
                break
            parts.append(self._score_batch(part, with_reasons and self.explains))
        if not parts:
            return pd.DataFrame(columns=["opportunityid", "probability", "score", "grade", "reasons", "facts"])
        out = pd.concat(parts, ignore_index=True)
        total: dict[str, int] = {}
        for part in parts:
            for k, v in part.attrs.get("bad_values", {}).items():
                total[k] = total.get(k, 0) + int(v)
        out.attrs["bad_values"] = total
        return out

    def _score_batch(self, frame: pd.DataFrame, with_reasons: bool) -> pd.DataFrame:
        feed, report = prepare_with_report(frame, self.spec)
        if with_reasons:
            p, points, log_odds, base = self.explain(feed)
        else:
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
            keys = [value_keys(feed[f["input"]], f) for f in self.primary]
            raw = [None if f["kind"] == "category" else feed[f["input"]].ravel() for f in self.primary]
            shown = self.phrasing.reasons(points, log_odds, keys, raw, frame)
            for doc, s, bl in zip(shown, scores.tolist(), np.round(base, 1).tolist(), strict=True):
                doc["score"], doc["baseline"] = s, bl
            out["reasons"] = shown
            values = np.empty((len(frame), len(self.groups)), dtype=object)
            for g in range(len(self.primary)):
                values[:, g] = keys[g] if raw[g] is None else raw[g]
            batch = FactsBatch(self.items, points.astype(np.float32), values)
            out["facts"] = [Facts(batch, i) for i in range(len(frame))]
        return out


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(q / (1 - q))
