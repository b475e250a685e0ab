"""The benchmark's own metric code: hand-checked values, edge cases and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench import common


def test_ece_is_zero_when_every_bin_is_calibrated() -> None:
    # bin [0.2, 0.3): p=0.25, 1 of 4 won; bin [0.7, 0.8): p=0.75, 3 of 4 won
    y = [1, 0, 0, 0, 1, 1, 1, 0]
    p = [0.25] * 4 + [0.75] * 4
    assert common.expected_calibration_error(y, p) == pytest.approx(0.0)


def test_ece_by_hand() -> None:
    # bin 9: p=0.9 for 2 records, both lost -> |0.9 - 0| weighted 2/4;
    # bin 1: p=0.1, both won -> |0.1 - 1| weighted 2/4
    y = [0, 0, 1, 1]
    p = [0.9, 0.9, 0.1, 0.1]
    assert common.expected_calibration_error(y, p) == pytest.approx(0.5 * 0.9 + 0.5 * 0.9)


def test_calibration_table_puts_one_in_the_last_bin_and_drops_empty_bins() -> None:
    table = common.calibration_table([1, 0, 1], [1.0, 0.0, 0.95])
    assert [(row["lo"], row["n"]) for row in table] == [(0.0, 1), (0.9, 2)]
    assert table[1]["won_rate"] == 1.0 and table[1]["mean_p"] == pytest.approx(0.975)


def test_f1_optimal_threshold_separates_separable_scores() -> None:
    y = np.array([0, 0, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.6, 0.7])
    t = common.f1_optimal_threshold(y, p)
    assert 0.3 < t <= 0.6
    assert common.evaluate(y, p, t)["f1"] == 1.0


def test_evaluate_by_hand() -> None:
    y = [1, 1, 0, 0, 1, 0]
    p = [0.9, 0.4, 0.6, 0.2, 0.8, 0.1]
    m = common.evaluate(y, p, 0.5)
    # predicted won: 0.9, 0.6, 0.8 -> 2 true positives of 3 predicted, 2 of 3 actual won
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["accuracy"] == pytest.approx(4 / 6)
    # AUC: pairs (won, lost) correctly ordered: 0.9>all(3), 0.8>all(3), 0.4>0.2,0.1 (2) -> 8 / 9
    assert m["auc"] == pytest.approx(8 / 9)
    assert m["brier"] == pytest.approx(np.mean((np.array(p) - np.array(y)) ** 2))
    assert m["n"] == 6 and m["won_rate"] == 0.5


@pytest.mark.parametrize(
    ("y", "p", "message"),
    [
        ([1, 0], [0.5], "differ in length"),
        ([], [], "no records"),
        ([1, 0], [0.5, 1.2], "within"),
        ([1, 2], [0.5, 0.5], "labels"),
        ([1, 0], [np.nan, 0.1], "finite"),
    ],
)
def test_bad_input_gets_a_clear_error(y: list, p: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        common.evaluate(y, p, 0.5)


def test_ratio_to_best_direction() -> None:
    assert common.ratio_to_best(0.84, [0.80, 0.83, 0.70], "auc") == (pytest.approx(0.84 / 0.83), 1)
    ratio, index = common.ratio_to_best(0.02, [0.05, 0.04], "ece")
    assert ratio == pytest.approx(2.0) and index == 1
    assert common.ratio_to_best(0.5, [None, float("nan")], "auc") == (None, None)


def test_comparison_ratio_above_one_means_ours_is_better() -> None:
    assert common.comparison("rows/s", 200.0, 100.0, "rows/s")["ratio"] == 2.0
    assert common.comparison("time", 1.0, 4.0, "s", higher_is_better=False)["ratio"] == 4.0


def test_measure_and_stat() -> None:
    calls = []
    stat = common.measure(lambda: calls.append(1), reps=3, warmup=1)
    assert len(calls) == 4 and stat.reps == 3 and stat.spread >= 0
    assert common.Stat((1.0, 3.0, 2.0)).median == 2.0 and common.Stat((1.0, 3.0, 2.0)).spread == 2.0


def test_emit_prints_one_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    common.emit(
        "x", {"size": 1}, [common.result("m", np.float64(1.5), "s")], [common.comparison("c", 2, 1, "rows/s")]
    )
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    doc = json.loads(out)
    assert doc["name"] == "x" and doc["results"][0]["value"] == 1.5 and doc["comparisons"][0]["ratio"] == 2.0


def test_result_turns_non_finite_into_null() -> None:
    assert common.result("m", float("nan"), "s")["value"] is None


def test_machine_info_names_cpu_memory_and_versions() -> None:
    info = common.machine_info()
    assert info["cpu_count"] >= 1 and info["python"] and info["libraries"]["scikit-learn"] != "missing"


def test_paired_edge_is_zero_with_a_zero_interval_for_the_same_predictions() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 400)
    p = rng.random(400)
    for metric in ("auc", "ece"):
        edge = common.paired_edge(y, p, p, metric, rounds=50)
        assert edge["edge"] == pytest.approx(0.0)
        assert edge["low"] == pytest.approx(0.0) and edge["high"] == pytest.approx(0.0)
        assert edge["rounds"] == 50


def test_paired_edge_tells_a_better_model_apart_and_a_close_one_not() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 2000)
    informative = np.clip(0.5 + 0.3 * (y - 0.5) + rng.normal(0, 0.2, 2000), 0, 1)
    noise = rng.random(2000)
    auc = common.paired_edge(y, informative, noise, "auc", rounds=200)
    assert auc["edge"] > 0.2 and auc["low"] > 0  # ours is better, beyond the noise
    worse = common.paired_edge(y, noise, informative, "auc", rounds=200)
    assert worse["edge"] < 0 and worse["high"] < 0  # the edge is negative when the peer is better
    # ECE: a constant at the won rate against the same constant 0.01 off: too close to tell apart
    rate = float(y.mean())
    close = common.paired_edge(y, np.full(2000, rate), np.full(2000, rate + 0.01), "ece", rounds=200)
    assert close["edge"] == pytest.approx(0.01, abs=1e-9)
    assert close["low"] < 0 < close["high"]
    far = common.paired_edge(y, np.full(2000, rate), np.full(2000, rate + 0.2), "ece", rounds=200)
    assert far["low"] > 0.15


def test_paired_edge_names_a_metric_it_does_not_measure() -> None:
    with pytest.raises(ValueError, match="brier"):
        common.paired_edge([0, 1], [0.2, 0.8], [0.3, 0.7], "brier")
