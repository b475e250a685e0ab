"""The shown reasons of a batch of scored records, from their facts' points (modeling.scoring).

Per record: the facts worth at least MIN_POINTS, up to TOP_REASONS per side, strongest first; each
{attribute, label, value, points, logOdds, headline, insight} (modeling.phrases). Sentences are made once
per distinct (fact, value, sign) through caches, so a batch of 100,000 records formats each distinct
sentence once; only the reasons' dicts are made per record.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from modeling import phrases
from modeling.features import MISSING, STAGE_COLUMN

TOP_REASONS = 5
MIN_POINTS = 1.0  # a reason moves the score by at least one point

# (value as shown, headline when it raises the score, headline when it lowers it, insight, the insight's
# direction: +1 / -1 when its rate is clearly above / below the overall rate, else 0); when the direction
# does not agree with the reason's sign, the insight gets the combination clause
Texts = tuple[str, str, str, str, int]


class Phrasing:
    """Built once per model version: `Phrasing(primary, rates, prior).reasons(points, log_odds, ...)`;
    `primary[g]` is fact g's first spec feature."""

    def __init__(
        self, primary: Sequence[Mapping[str, Any]], rates: Mapping[str, Any], prior: float, currency: str = "$"
    ):
        self.primary, self.rates, self.prior, self.currency = list(primary), rates, prior, currency
        self.units = [phrases.unit_of(f) for f in self.primary]
        self._cache: dict[tuple[Any, ...], tuple[Any, ...]] = {}

    def _global(self, name: str) -> float:
        if math.isfinite(self.prior):
            return self.prior
        return float(self.rates.get(name, {}).get("global_rate", 0.0))

    def reasons(
        self,
        points: np.ndarray,
        log_odds: np.ndarray,
        keys: Sequence[np.ndarray],
        raw: Sequence[np.ndarray | None],
        frame: pd.DataFrame | None,
    ) -> list[dict[str, list[dict[str, Any]]]]:
        """`keys[g]`: fact g's value labels per record (insights.value_keys); `raw[g]`: its numbers (None for
        categories); `frame`: the scoring frame (counts, stage, days) when there is one."""
        n, n_facts = points.shape
        k = min(TOP_REASONS, n_facts)
        column = _columns(frame)
        texts = [self._texter(g, keys[g], raw[g], column) for g in range(n_facts)]
        sides = []
        for sign in (1, -1):
            order = np.argsort(-sign * points, axis=1, kind="stable")[:, :k]
            strong = sign * np.take_along_axis(points, order, axis=1) >= MIN_POINTS
            rows, slot = np.nonzero(strong)  # row-major: each record's reasons strongest first
            facts = order[rows, slot]
            pts = points[rows, facts]
            q_l, pts_l = pts.tolist(), np.round(pts, 1).tolist()
            lo_l = np.round(log_odds[rows, facts], 3).tolist()
            rows_l = rows.tolist()
            made: list[dict[str, Any]] = [{}] * len(rows)
            clause = _clause
            for g in np.unique(facts).tolist():
                item = self.primary[g]
                attribute, label, texter = item["name"], item["label"], texts[g]
                for j in np.flatnonzero(facts == g).tolist():
                    q = q_l[j]
                    value, up, down, insight, d = texter(rows_l[j])
                    if q > 0:
                        headline = up
                        if d <= 0:
                            insight += clause(q)
                    else:
                        headline = down
                        if d >= 0:
                            insight += clause(q)
                    made[j] = {
                        "attribute": attribute,
                        "label": label,
                        "value": value,
                        "points": pts_l[j],
                        "logOdds": lo_l[j],
                        "headline": headline,
                        "insight": insight,
                    }
            bounds = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))]).tolist()
            sides.append([made[bounds[i] : bounds[i + 1]] for i in range(n)])
        return [{"positive": a, "negative": b} for a, b in zip(sides[0], sides[1], strict=True)]

    def _texter(
        self, g: int, keys: np.ndarray, raw: np.ndarray | None, column: Callable[[str], np.ndarray | None]
    ) -> Callable[[int], Texts]:
        """A function record -> texts for fact g, through caches."""
        item = self.primary[g]
        name = str(item["name"])
        rates = self.rates.get(name, {})
        cache = self._cache
        if name in phrases.COUNT_FACTS and column(phrases.COUNT_FACTS[name][1]) is not None:
            won_l = _listed(column(phrases.COUNT_FACTS[name][0]), len(keys))
            closed_l = _listed(column(phrases.COUNT_FACTS[name][1]), len(keys))
            rate_c, overall = column(name), self._global(name)
            rate_l = None if rate_c is None else rate_c.tolist()

            def count(i: int) -> Texts:
                won, closed = won_l[i], closed_l[i]
                smoothed = None if rate_l is None else rate_l[i]
                ck = ("count", name, won, closed, smoothed if not (closed >= 1) else None)
                hit = cache.get(ck)
                if hit is None:
                    up, down, insight, d = phrases.count_texts(name, won, closed, smoothed, overall)
                    value = f"{won / closed:.0%}" if closed >= 1 else "no history"
                    hit = cache[ck] = (value, up, down, insight, d)
                return hit  # type: ignore[return-value]

            return count
        if name == "d_account_same_value_win_rate" and raw is not None:
            overall = self._global(name)

            def same_value(i: int) -> Texts:
                rate = float(raw[i])
                ck = ("same", round(rate, 2))
                hit = cache.get(ck)
                if hit is None:
                    up, down, insight, d = phrases.rate_texts("same_value", rate, overall, str(item["label"]))
                    hit = cache[ck] = (f"{rate:.0%}", up, down, insight, d)
                return hit  # type: ignore[return-value]

            return same_value
        if name in ("d_stage_time_vs_won", "d_days_in_stage"):
            days_c, ratio_c, stage_c = column("d_days_in_stage"), column("d_stage_time_vs_won"), column(STAGE_COLUMN)
            days_l = _listed(None if days_c is None else np.round(days_c), len(keys))
            ratio_l = _listed(None if ratio_c is None else np.round(ratio_c, 1), len(keys))
            stage_l = [None] * len(keys) if stage_c is None else stage_c.tolist()
            d_of = self._value_direction(item, rates)

            def stage(i: int) -> Texts:
                days, ratio = days_l[i], ratio_l[i]
                where = "" if stage_l[i] is None else str(stage_l[i])
                key = str(keys[i])
                ck = ("stage", days, ratio, where, key)
                hit = cache.get(ck)
                if hit is None:
                    head, insight = phrases.stage_texts(days, ratio, where, rates, key)
                    hit = cache[ck] = (phrases.spoken(days, "days"), head, head, insight, d_of(key))
                return hit  # type: ignore[return-value]

            return stage
        unit = self.units[g]
        numbers = None if raw is None else raw.tolist()
        keys_l = [str(k) for k in keys.tolist()]
        local: dict[tuple[str, float | None], Texts] = {}

        def value(i: int) -> Texts:
            key = keys_l[i]
            number = None if numbers is None or key == MISSING else numbers[i]
            if number is not None and not math.isfinite(number):
                number = None
            hit = local.get((key, number))
            if hit is None:
                if number is None:
                    shown = phrases.display_value(key)
                else:
                    shown = phrases.spoken(number, unit, self.currency)
                ck = ("value", name, key, shown, number is not None and number < -0.5)
                found = cache.get(ck)
                if found is None:
                    head = None if number is None else phrases.derived_headline(name, number, shown)
                    head = head or phrases.value_headline(item, key, shown)
                    insight, d = phrases.value_insight(item, key, rates)
                    found = cache[ck] = (shown, head, head, insight, d)
                hit = local[(key, number)] = found  # type: ignore[assignment]
            return hit

        return value

    def _value_direction(self, item: Mapping[str, Any], rates: Mapping[str, Any]) -> Callable[[str], int]:
        def d_of(key: str) -> int:
            return phrases.value_insight(item, key, rates)[1]

        return d_of


_CLAUSES: dict[int, str] = {}


def _clause(q: float) -> str:
    """phrases.combination, cached by whole points."""
    n = int(q + 0.5) if q > 0 else -int(-q + 0.5)
    hit = _CLAUSES.get(n)
    if hit is None:
        hit = _CLAUSES[n] = phrases.combination(float(n) if n else q)
    return hit


def _listed(values: np.ndarray | None, n: int) -> list[float]:
    """A float column as a list (NaN when absent), read once per batch instead of per reason."""
    return [math.nan] * n if values is None else values.astype(float).tolist()


def _columns(frame: pd.DataFrame | None) -> Callable[[str], np.ndarray | None]:
    """A reader of the frame's columns as arrays (numbers as float, the stage as objects), memoised."""
    seen: dict[str, np.ndarray | None] = {}

    def column(name: str) -> np.ndarray | None:
        if name not in seen:
            if frame is None or name not in frame.columns:
                seen[name] = None
            elif name == STAGE_COLUMN:
                seen[name] = frame[name].astype(object).to_numpy()
            else:
                seen[name] = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float)
        return seen[name]

    return column
