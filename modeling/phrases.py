"""A reason in a seller's words: a headline ("This owner wins more often than most") and, behind it, the
data insight with numbers ("7 of 9 past deals of this owner were won; overall 43%").

Numbers are rounded the way people speak (`spoken`): whole days, at most three significant digits, money
with the currency symbol and thousands separators, rates in whole percent. A headline never contradicts
its insight nor the reason's sign: a "more/less often than most" headline is used only when the value's
win rate points the way of its contribution; otherwise the headline states the fact and the insight adds
what the model saw (the combination with the deal's other values, in points). Pure functions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from modeling.features import MISSING, OTHER

AGAINST_MIN_GAP = 0.03  # a rate within 3 points of the overall rate is "about average"
LONG_STAGE, SHORT_STAGE = 1.25, 0.8  # time in stage vs the median of won deals: more / less than most
DAY_FACTS = ("d_days_open", "d_days_in_stage", "d_close_slip_days", "d_planned_cycle_days")
RATIO_FACTS = ("d_stage_time_vs_won", "d_value_vs_account")
# past-win-rate facts: (won column, closed column, what the deals are, who / what the headline names)
COUNT_FACTS: dict[str, tuple[str, str, str, str]] = {
    "d_owner_win_rate": ("d_owner_won", "d_owner_closed", "past deals of this owner", "owner"),
    "d_account_win_rate": ("d_account_won", "d_account_closed", "past deals with this account", "account"),
    "d_similar_win_rate": ("d_similar_won", "d_similar_closed", "similar past deals", "similar"),
}
_RATE_HEADLINES = {
    "owner": ("This owner wins more often than most", "This owner wins less often than most", "This owner's record"),
    "account": (
        "Deals with this account are won more often than most",
        "Deals with this account are won less often than most",
        "This account's past deals",
    ),
    "similar": (
        "Similar past deals were won more often than most",
        "Similar past deals were won less often than most",
        "Similar past deals",
    ),
    "same_value": (
        "This account's deals of this size are won more often than most",
        "This account's deals of this size are won less often than most",
        "This account's deals of this size",
    ),
}
_NO_HISTORY = {
    "owner": "This owner has no closed deals yet",
    "account": "No past deals with this account",
    "similar": "No similar past deals closed yet",
}


def unit_of(item: Mapping[str, Any]) -> str | None:
    """days / ratio / rate / count / money / None for a spec feature (derived facts by name)."""
    name = str(item.get("name", ""))
    if item.get("unit"):
        return str(item["unit"])
    if name in DAY_FACTS:
        return "days"
    if name in RATIO_FACTS:
        return "ratio"
    if name.endswith("_win_rate"):
        return "rate"
    if name.endswith("_closed"):
        return "count"
    return None


def significant(x: float, digits: int = 3) -> str:
    """x with at most `digits` significant digits and thousands separators: 1234567 -> "1,230,000"."""
    if not math.isfinite(x):
        return "?"
    if x == 0:
        return "0"
    exp = math.floor(math.log10(abs(x)))
    decimals = max(digits - 1 - exp, 0)
    r = round(x, digits - 1 - exp)
    if decimals == 0:
        return f"{int(r):,}"
    return f"{r:,.{decimals}f}".rstrip("0").rstrip(".")


def spoken(x: float, unit: str | None, currency: str = "$") -> str:
    """A number as a seller would say it (see the module docstring)."""
    if x is None or not math.isfinite(x):
        return "(empty)"
    if unit == "days":
        d = int(round(x))
        return f"{significant(abs(d)) if abs(d) >= 1000 else abs(d)} day{'s' if abs(d) != 1 else ''}"
    if unit == "money":
        return ("-" if x < 0 else "") + currency + significant(abs(x))
    if unit == "ratio":
        return significant(x, 2) + "x"
    if unit == "rate":
        return f"{x:.0%}"
    return significant(x)


def nice_edges(edges: list[float], unit: str | None) -> list[float]:
    """Bin edges cut at round values: one significant digit, or two when one merges edges; whole numbers
    for days and counts."""
    if not edges:
        return []
    for digits in (1, 2, 3):
        out = []
        for e in edges:
            if e == 0 or not math.isfinite(e):
                out.append(0.0)
                continue
            v = round(e, digits - 1 - math.floor(math.log10(abs(e))))
            out.append(float(round(v)) if unit in ("days", "count") and abs(v) >= 1 else float(v))
        if len(set(out)) == len(set(edges)) or digits == 3:
            return sorted(set(out))
    return sorted(set(edges))  # pragma: no cover - the loop always returns


def bin_labels(edges: list[float], unit: str | None, currency: str = "$") -> list[str]:
    if not edges:
        return ["any value"]

    def say(x: float) -> str:
        return spoken(x, unit, currency) if unit in ("days", "money", "ratio", "rate") else significant(x)

    out = [f"under {say(edges[0])}"]
    out += [f"{say(a)} to {say(b)}" for a, b in zip(edges[:-1], edges[1:], strict=False)]
    out.append(f"{say(edges[-1])} or more")
    return out


def display_value(key: str) -> str:
    return {MISSING: "(empty)", OTHER: "(other)", "__filled__": "(filled in)"}.get(key, key)


def direction(rate: float | None, global_rate: float | None) -> int:
    """+1 / -1 when a rate is clearly above / below the overall rate (by AGAINST_MIN_GAP), else 0."""
    if rate is None or global_rate is None or not math.isfinite(rate):
        return 0
    return 1 if rate >= global_rate + AGAINST_MIN_GAP else -1 if rate <= global_rate - AGAINST_MIN_GAP else 0


def combination(points: float) -> str:
    """What the model saw when the marginal rate does not explain the sign: the combination, in points."""
    n = max(int(round(abs(points))), 1)
    verb = "raises" if points > 0 else "lowers"
    return f"; together with this deal's other values it {verb} the score by {n} point{'s' if n != 1 else ''}"


def value_headline(item: Mapping[str, Any], key: str, shown: str) -> str:
    """The headline of a plain attribute value (shown: the deal's value as spoken)."""
    label = str(item["label"])
    if key == MISSING:
        return f"No {label[:1].lower() + label[1:]} entered"
    if item.get("name") == "stage":
        return f"In stage {shown}"
    return f"{label} is {shown}"


def value_insight(item: Mapping[str, Any], key: str, rates: Mapping[str, Any]) -> tuple[str, int]:
    """(the value's win-rate sentence, its direction) from the training per-value rates."""
    label = str(item["label"])
    entry = (rates.get("values") or {}).get(key)
    global_rate = rates.get("global_rate")
    overall = "" if global_rate is None else f"; overall {global_rate:.0%}"
    if entry is None:
        what = f"without {label}" if key == MISSING else f"with {label} = {display_value(key)}"
        return f"Few past opportunities {what} have closed{overall}", 0
    rate = float(entry["rate"])
    return rate_sentence(label, key, rate, global_rate, str(item.get("kind"))), direction(rate, global_rate)


def rate_sentence(label: str, key: str, rate: float, global_rate: float | None, kind: str = "category") -> str:
    """ "62% of opportunities with Budget = Can Buy were won; overall 43%" (numbers: "with Amount $50,000
    to $100,000"; empty: "without Budget")."""
    overall = "" if global_rate is None else f"; overall {global_rate:.0%}"
    if key == MISSING:
        return f"{rate:.0%} of opportunities without {label} were won{overall}"
    if kind == "number":
        return f"{rate:.0%} of opportunities with {label} {display_value(key)} were won{overall}"
    return f"{rate:.0%} of opportunities with {label} = {display_value(key)} were won{overall}"


def count_texts(
    name: str, won: float, closed: float, smoothed: float | None, global_rate: float
) -> tuple[str, str, str, int]:
    """(headline if the rate agrees with a positive sign, ... with a negative sign, insight, direction) of a
    past-win-rate fact from the deal's own counts (`smoothed`: the broader-match rate when none closed)."""
    _, _, what, who = COUNT_FACTS[name]
    up, down, neutral = _RATE_HEADLINES[who]
    overall = f"overall {global_rate:.0%}"
    if not math.isfinite(closed) or closed < 1:
        if smoothed is not None and math.isfinite(smoothed) and abs(smoothed - global_rate) >= 0.005:
            d = direction(smoothed, global_rate)
            head = up if d > 0 else down if d < 0 else neutral
            return head, head, f"No {what} closed yet; broader matches: about {smoothed:.0%} won; {overall}", d
        head = _NO_HISTORY[who]
        return head, head, f"No {what} closed yet; {overall} were won", 0
    w, c = int(won + 0.5), int(closed + 0.5)
    about = "about " if c >= 1000 else ""
    text = f"{about}{significant(w)} of {significant(c)} {what} were won; {overall}"
    d = direction(w / c, global_rate)
    neutral = f"{neutral}: {w / c:.0%} won"
    return (up if d > 0 else neutral), (down if d < 0 else neutral), text, d


def rate_texts(who: str, rate: float, global_rate: float, label: str) -> tuple[str, str, str, int]:
    """Like `count_texts` for a past win rate without counts (the account's rate at this value)."""
    up, down, neutral = _RATE_HEADLINES[who]
    d = direction(rate, global_rate)
    text = f"{label}: {rate:.0%}; overall {global_rate:.0%}"
    neutral = f"{neutral}: {rate:.0%} won"
    return (up if d > 0 else neutral), (down if d < 0 else neutral), text, d


def stage_texts(days: float, ratio: float, stage: str, rates: Mapping[str, Any], key: str) -> tuple[str, str]:
    """(headline, insight) of time in the current stage."""
    where = stage if stage and stage != MISSING else "this stage"
    if not math.isfinite(ratio):
        head = f"{spoken(days, 'days')} in {where}" if math.isfinite(days) else f"Time in {where}"
    elif ratio >= LONG_STAGE:
        head = f"More time in {where} than most won deals"
    elif ratio <= SHORT_STAGE:
        head = f"Less time in {where} than most won deals"
    else:
        head = f"Time in {where} is typical of won deals"
    parts = []
    if math.isfinite(days):
        parts.append(f"{spoken(days, 'days')} in {where}")
    if math.isfinite(ratio):
        parts.append(f"{significant(ratio, 2)} times the median of won deals")
    text = ", ".join(parts) or f"Time in {where}"
    entry = (rates.get("values") or {}).get(key)
    if entry is not None and rates.get("global_rate") is not None:
        text += f"; {float(entry['rate']):.0%} of such opportunities were won; overall {rates['global_rate']:.0%}"
    return head, text


def derived_headline(name: str, value: float, shown: str) -> str | None:
    """Headlines of the derived day and ratio facts, or None for other attributes."""
    if name == "d_days_open":
        return f"Open for {shown}"
    if name == "d_close_slip_days":
        days = round(value)
        if days == 0:
            return "Estimated to close today"
        return f"Estimated close date passed {shown} ago" if days < 0 else f"Estimated to close in {shown}"
    if name == "d_planned_cycle_days":
        return f"Planned sales cycle of {shown}"
    if name == "d_value_vs_account":
        return f"Value is {shown} this account's past deals"
    return None
