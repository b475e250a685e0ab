"""Scoring math without network: the shared `modeling.scoring.Scorer` on N open opportunities.

`python -m bench.bench_scoring_math --size N [--reps R]`: a model is trained once on a synthetic org
(bench_training.synthetic, 20,000 closed deals), N open opportunities are prepared with the product's
`build_scoring_frame`, then measured (median of R runs, 2 cores, onnxruntime's default threads):
- rows/s scoring WITH reasons (score, grade, exact additive contributions, top 5 positive and negative
  reasons with headlines and insights; target >= 20,000 rows/s) with a logistic regression and with a
  HistGradientBoosting model, and without reasons;
- the contributions' additivity error (|baseline + sum of points - 100 P|, max over the rows) and the
  deletion test: on DELETION_ROWS records with three reasons on a side, set those facts to their
  baselines and compare the score's move with the points the three reasons state (median and 90th
  percentile of the gap, per side and model);
- the chosen model's raw probabilities through onnxruntime vs scikit-learn `predict_proba` on the same
  rows (the pipeline refitted on the same spec and exported with the product's `export_onnx`).
"""

from __future__ import annotations

import time

import numpy as np

from bench.bench_training import NOW, synthetic
from bench.common import comparison, emit, log, measure, peak_rss_mib, result, size_arg_parser, stat_result
from bench.explaining import explanation_figures
from modeling.candidates import export_onnx, make_candidate
from modeling.config import validate_config
from modeling.dataset import build_scoring_frame, build_training_frame
from modeling.features import feed_to_frame, prepare
from modeling.scoring import Scorer, raw_probabilities, reasons_json, session
from modeling.train import train_model

QUICK_SIZES = [20_000]
DELETION_ROWS = 5_000
FULL_SIZES = [100_000]
TRAIN_SIZE = 20_000


def main() -> None:
    args = size_arg_parser("scoring with reasons: rows/s, onnxruntime vs scikit-learn", 20_000).parse_args()
    size, reps = args.size, max(args.reps, 1)
    tables, md, _, _, _ = synthetic(TRAIN_SIZE, args.seed, n_open=size)
    cfg = validate_config(
        {"name": "bench_scoring"},
        existing=[],
        processes=[],
        attributes=md["attributes"],
        optionsets=md["optionsets"],
        now=NOW,
    )
    log("training the model")
    data = build_training_frame(tables, md, cfg, NOW)
    model = train_model(data, cfg, seed=args.seed)
    log(f"model {model.meta['algorithm']} auc={model.meta['metrics']['auc']}; preparing {size} open rows")
    t = time.perf_counter()
    frame = build_scoring_frame(tables, md, cfg, NOW, model.meta["stats"]).frame
    t_frame = time.perf_counter() - t
    n = len(frame)
    scorer = Scorer(model.onnx_bytes, model.meta)
    scored = scorer.score(frame, with_reasons=True)
    sample = reasons_json(cfg.name, 1, scored["reasons"].iloc[0])
    log(f"{n} rows; one reasons JSON is {len(sample)} characters: {sample[:300]}")

    with_reasons = measure(lambda: scorer.score(frame, with_reasons=True), reps)
    without = measure(lambda: scorer.score(frame, with_reasons=False), reps)
    serialise = measure(lambda: [reasons_json(cfg.name, 1, r) for r in scored["reasons"]], reps)

    # onnxruntime vs scikit-learn on the same rows and the same fitted pipeline
    spec = model.meta["spec"]
    x_train = feed_to_frame(prepare(data.frame, spec), spec)
    algo = model.meta["algorithm"]
    iterations = model.meta["candidates"][algo]["iterations"]
    pipe = make_candidate(algo, spec, args.seed, **({"max_iter": iterations} if iterations else {}))
    pipe.fit(x_train, data.labels)
    sess = session(export_onnx(pipe, spec))
    feed = prepare(frame, spec)
    x_score = feed_to_frame(feed, spec)
    diff = float(np.max(np.abs(raw_probabilities(sess, feed) - pipe.predict_proba(x_score)[:, 1])))
    ort_stat = measure(lambda: raw_probabilities(sess, feed), reps)
    skl_stat = measure(lambda: pipe.predict_proba(x_score), reps)

    def rate(stat_seconds: float) -> float:
        return n / stat_seconds if stat_seconds > 0 else float("nan")

    results = [
        result(
            "rows_per_s_with_reasons",
            rate(with_reasons.median),
            "rows/s",
            reps=with_reasons.reps,
            spread=rate(min(with_reasons.values)) - rate(max(with_reasons.values)),
            note=f"Scorer.score: score, grade, contributions, top 5 +/- reasons; {algo}; target >= 20,000",
        ),
        result(
            "rows_per_s_without_reasons",
            rate(without.median),
            "rows/s",
            reps=without.reps,
            spread=rate(min(without.values)) - rate(max(without.values)),
        ),
        result(
            "reasons_json_rows_per_s",
            rate(serialise.median),
            "rows/s",
            reps=serialise.reps,
            note="reasons_json per row (the msdyn_scorereasons text)",
        ),
        stat_result("seconds_with_reasons", with_reasons, "s"),
        result("build_scoring_frame_seconds", t_frame, "s", note="lake frames -> eligible rows + derived"),
        result("onnx_vs_sklearn_max_abs_diff", diff, ""),
        result("peak_rss_mib", peak_rss_mib(), "MiB"),
    ]
    # the same with a HistGradientBoosting model (what IBM gets): exact TreeSHAP walks every tree
    hgb = train_model(data, cfg, seed=args.seed, candidates=["hist_gradient_boosting"])
    hgb_scorer = Scorer(hgb.onnx_bytes, hgb.meta)
    hgb_scorer.score(frame.iloc[:1000], with_reasons=True)
    hgb_stat = measure(lambda: hgb_scorer.score(frame, with_reasons=True), reps)
    iters = hgb.meta["candidates"]["hist_gradient_boosting"]["iterations"]
    # the yardstick is a 50-tree model: the same spec and calibration, refitted with 50 iterations
    hgb_spec = hgb.meta["spec"]
    pipe50 = make_candidate("hist_gradient_boosting", hgb_spec, args.seed, max_iter=50)
    pipe50.fit(feed_to_frame(prepare(data.frame, hgb_spec), hgb_spec), data.labels)
    hgb50 = Scorer(export_onnx(pipe50, hgb_spec), hgb.meta)
    hgb50.score(frame.iloc[:1000], with_reasons=True)
    hgb50_stat = measure(lambda: hgb50.score(frame, with_reasons=True), reps)
    for at, (label, stat, note) in enumerate(
        (
            (
                "rows_per_s_with_reasons_hgb",
                hgb_stat,
                f"the same with HistGradientBoosting ({iters} trees, as trained)",
            ),
            (
                "rows_per_s_with_reasons_hgb50",
                hgb50_stat,
                "HistGradientBoosting refitted with 50 trees; target >= 20,000",
            ),
        ),
        start=1,
    ):
        spread = rate(min(stat.values)) - rate(max(stat.values))
        results.insert(at, result(label, rate(stat.median), "rows/s", reps=stat.reps, spread=spread, note=note))
    subset = frame.iloc[:DELETION_ROWS]
    for label, sc in ((algo, scorer), ("hist_gradient_boosting", hgb_scorer)):
        results += explanation_figures(label, sc, subset)
    comparisons = [
        comparison(
            "raw probabilities rows/s: onnxruntime vs scikit-learn predict_proba",
            rate(ort_stat.median),
            rate(skl_stat.median),
            "rows/s",
        ),
    ]
    emit(
        "scoring_math",
        {"size": size, "seed": args.seed, "train_size": TRAIN_SIZE, "rows": n},
        results,
        comparisons,
        notes=[f"features: {len(spec['features'])}; reasons sample: {sample[:200]}"],
    )


if __name__ == "__main__":
    main()
