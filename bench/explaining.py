"""The explanation figures shared by the scoring and training benchmarks: the contributions' additivity
error and the deletion test (set a record's top three facts of a side to their baselines and compare the
score's move with the points those reasons state)."""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.common import result
from modeling.features import prepare_with_report
from modeling.scoring import Scorer, calibrate, raw_probabilities


def explanation_figures(label: str, scorer: Scorer, frame: Any) -> list[dict[str, Any]]:
    """Additivity error and the deletion test (see the module docstring) of one model on `frame`."""
    out = scorer.score(frame, with_reasons=True)
    total = np.array([r["baseline"] + float(f.points.sum()) for r, f in zip(out["reasons"], out["facts"], strict=True)])
    additivity = float(np.max(np.abs(total - 100 * out["probability"].to_numpy()))) if len(out) else 0.0
    feed, _ = prepare_with_report(frame, scorer.spec)
    p = calibrate(raw_probabilities(scorer.sess, feed), scorer.calibration)
    figures = [result(f"additivity_error_points_{label}", additivity, "points", note="max |baseline + sum - score|")]
    feats = scorer.spec["features"]
    group_of = {feats[g[0]]["name"]: g for g in scorer.groups}
    for side in ("positive", "negative"):
        changed = {k: v.copy() for k, v in feed.items()}
        rows, stated = [], []
        for i, rs in enumerate(out["reasons"]):
            top = rs[side][:3]
            if len(top) < 3:
                continue
            rows.append(i)
            stated.append(sum(r["points"] for r in top))
            for r in top:
                for j in group_of[r["attribute"]]:
                    changed[feats[j]["input"]][i, 0] = feats[j]["baseline"]
        if not rows:
            continue
        q = calibrate(raw_probabilities(scorer.sess, changed), scorer.calibration)
        gap = np.abs(100 * (p[rows] - q[rows]) - np.array(stated))
        figures.append(
            result(
                f"deletion_gap_points_{side}_{label}",
                float(np.median(gap)),
                "points",
                note=f"median over {len(rows):,} records; p90 {np.percentile(gap, 90):.1f}; target <= 2",
            )
        )
    return figures


