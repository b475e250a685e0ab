"""Scoring math shared with training: calibration, ONNX inference, grades, trends and reasons.

Reasons: for every record and attribute, the impact is the change in calibrated win probability when
that attribute is set to its training baseline (median / most frequent value), computed with
onnxruntime in large stacked batches (stack-pitfalls Q4 (c)). Each reason's sentence uses per-value
win rates from the training data (insights.value_win_rates).
Trend tolerance: a change of at most TREND_TOLERANCE points is Steady.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd

from modeling.config import grade_for as _grade_for
from modeling.errors import ModelMetaError
from modeling.features import prepare_with_report
from modeling.insights import display_value, value_keys

TREND_TOLERANCE = 3
REASONS_MAX_CHARS = 10_000
TOP_REASONS = 5
MIN_IMPACT = 5e-4  # a reason must move the win probability by at least 0.05 points
IMPROVING, STEADY, DECLINING, NOT_ENOUGH_INFO = 0, 1, 2, 3
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


def count_sentence(won: float, closed: float, what: str, global_rate: float) -> str:
    """"7 of 9 similar past deals were won (all: 29%)"."""
    if not np.isfinite(closed) or closed < 1:
        return f"No {what} closed yet (all: {global_rate:.0%} won)"
    won_i, closed_i = int(won + 0.5), int(closed + 0.5)
    return f"{won_i:,} of {closed_i:,} {what} were won (all: {global_rate:.0%})"


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


class Scorer:
    """Built once per model version: `Scorer(onnx_bytes, meta).score(frame)`."""

    def __init__(self, onnx_bytes: bytes, meta: Mapping[str, Any], *, threads: int = 0):
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

    def probabilities(self, frame: pd.DataFrame) -> tuple[np.ndarray, dict[str, int]]:
        feed, report = prepare_with_report(frame, self.spec)
        return calibrate(raw_probabilities(self.sess, feed), self.calibration), report

    def impacts(self, feed: Mapping[str, np.ndarray], p: np.ndarray) -> np.ndarray:
        """[n, features] change in calibrated P when each feature is set to its baseline. Rows whose value
        already is the baseline have impact 0 and are not run again (one stacked onnxruntime batch)."""
        n = len(p)
        feats = self.spec["features"]
        out = np.zeros((n, len(feats)))
        if n == 0:
            return out
        stacked: dict[str, list[np.ndarray]] = {k: [] for k in feed}
        spans: list[tuple[int, np.ndarray]] = []
        for j, f in enumerate(feats):
            if f.get("used") is False:  # the model never reads this input: its impact is exactly 0
                continue
            name = f["input"]
            v = feed[name]
            if v.dtype == object:
                base = np.full(v.shape, self.baseline[name], dtype=object)
                rows = np.flatnonzero(v.ravel() != base.ravel())
            else:
                base = np.full_like(v, self.baseline[name])
                rows = np.flatnonzero(~(v.ravel() == base.ravel()))
            if len(rows) == 0:
                continue
            spans.append((j, rows))
            for k, col in feed.items():
                stacked[k].append(base[rows] if k == name else col[rows])
        if not spans:
            return out
        big = {k: np.concatenate(v) for k, v in stacked.items()}
        pb = calibrate(raw_probabilities(self.sess, big), self.calibration)
        at = 0
        for j, rows in spans:
            out[rows, j] = p[rows] - pb[at : at + len(rows)]
            at += len(rows)
        return out

    def score(
        self, frame: pd.DataFrame, *, with_reasons: bool = True, batch_size: int = 20_000
    ) -> pd.DataFrame:
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

    def _counts(self, frame: pd.DataFrame | None, item: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """(won, closed, what, all-rate) arrays for past-win-rate features when the frame has the counts."""
        spec = COUNT_REASONS.get(item["name"])
        if spec is None or frame is None or spec[0] not in frame.columns or spec[1] not in frame.columns:
            return None
        won = pd.to_numeric(frame[spec[0]], errors="coerce").to_numpy(dtype=float)
        closed = pd.to_numeric(frame[spec[1]], errors="coerce").to_numpy(dtype=float)
        rate = self.prior
        if not np.isfinite(rate):
            rate = float(self.rates.get(item["name"], {}).get("global_rate", 0.0))
        return won, closed, spec[2], rate

    def _reasons(
        self, feed: Mapping[str, np.ndarray], p: np.ndarray, frame: pd.DataFrame | None = None
    ) -> list[dict[str, list[dict[str, Any]]]]:
        feats = self.spec["features"]
        imp = self.impacts(feed, p)
        keys = [value_keys(feed[f["input"]], f) for f in feats]
        counts = [self._counts(frame, f) for f in feats]
        points = np.round(imp * 100, 2)
        k = min(TOP_REASONS, len(feats))
        order_pos = np.argsort(-imp, axis=1)[:, :k]
        order_neg = np.argsort(imp, axis=1)[:, :k]
        templates: dict[tuple[int, str], tuple[str, str, str, str]] = {}

        def reason(i: int, j: int) -> dict[str, Any]:
            key = keys[j][i]
            t = templates.get((j, key))
            if t is None:
                t = templates[(j, key)] = self._template(feats[j], key)
            c = counts[j]
            text = count_sentence(c[0][i], c[1][i], c[2], c[3]) if c is not None else t[3]
            impact = float(points[i, j])
            return {"attribute": t[0], "label": t[1], "value": t[2], "impact": impact, "text": text}

        out = []
        for i in range(len(p)):
            row = imp[i]
            pos = [reason(i, j) for j in order_pos[i] if row[j] >= MIN_IMPACT]
            neg = [reason(i, j) for j in order_neg[i] if row[j] <= -MIN_IMPACT]
            out.append({"positive": pos, "negative": neg})
        return out

    def _template(self, item: Mapping[str, Any], key: str) -> tuple[str, str, str, str]:
        """(attribute, label, shown value, sentence) of one feature value."""
        rates = self.rates.get(item["name"], {})
        value = rates.get("values", {}).get(key)
        global_rate = rates.get("global_rate")
        if value is not None:
            text = value["text"]
        elif global_rate is not None:
            text = (
                f"{item['label']} = {display_value(key)} is rare in past deals (all: {global_rate:.0%} won)"
            )
        else:
            text = f"{item['label']} = {display_value(key)}"
        return str(item["name"]), str(item["label"]), display_value(key), text
