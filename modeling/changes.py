"""What moved a score between two written rows: the facts whose contribution changed most, with their old
and new values ("Budget changed from Need Budget to Can Buy: +8 points"). Pure; the facts are the
score history's `facts` JSON ({attribute: [points, value, label]}, modeling.scoring.Facts)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

MIN_CHANGE = 1.0  # points
TOP_CHANGES = 5


def parse_facts(text: Any) -> dict[str, list[Any]]:
    if not isinstance(text, str) or not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return {k: v for k, v in value.items() if isinstance(v, list) and len(v) >= 2} if isinstance(value, dict) else {}


def _points(n: float) -> str:
    if 0 < abs(n) < 1:  # a small move still reads as one ("-0.5 points", not "0 points")
        return f"{n:+.1f} points"
    r = round(n)
    return f"{'+' if r > 0 else '-' if r < 0 else ''}{abs(r)} point{'s' if abs(r) != 1 else ''}"


def what_moved(old: Mapping[str, Any], new: Mapping[str, Any], top: int = TOP_CHANGES) -> dict[str, Any]:
    """`old` / `new`: {"score", "facts" (JSON text), "model"}. The change in score and the facts whose
    points changed by at least MIN_CHANGE, each {attribute, label, from, to, points, text}: those whose value
    changed first, then those counting differently with the same value (the model's other facts moved the
    score, and a calibration step or the log-odds scale shares the move among all), largest first in each.
    When no fact whose value changed reaches MIN_CHANGE, the ones that moved at all (0.1 point or more) are
    still named: they are what changed, however small their own share."""
    before, after = parse_facts(old.get("facts")), parse_facts(new.get("facts"))
    values_changed: list[dict[str, Any]] = []
    same_values: list[dict[str, Any]] = []
    for name in dict.fromkeys([*after, *before]):
        b = before.get(name, [0.0, None])
        a = after.get(name, [0.0, None])
        delta = float(a[0]) - float(b[0])
        if abs(delta) < 0.05:
            continue
        label = (a[2] if len(a) > 2 else None) or (b[2] if len(b) > 2 else None) or name
        was, now = b[1], a[1]
        changed = was is not None and now is not None and was != now
        if changed:
            text = f"{label} changed from {was} to {now}: {_points(delta)}"
        elif now is not None:
            text = f"{label} ({now}) now counts {_points(float(a[0]))} (was {_points(float(b[0]))})"
        else:
            text = f"{label} no longer counts: {_points(delta)}"
        entry = {"attribute": name, "label": label, "from": was, "to": now, "points": round(delta, 1), "text": text}
        (values_changed if changed else same_values).append(entry)
    large = [m for m in values_changed if abs(m["points"]) >= MIN_CHANGE] or values_changed
    moved = sorted(large, key=lambda m: -abs(m["points"])) + sorted(
        (m for m in same_values if abs(m["points"]) >= MIN_CHANGE), key=lambda m: -abs(m["points"])
    )
    out: dict[str, Any] = {
        "from": old.get("score"),
        "to": new.get("score"),
        "facts": moved[:top],
    }
    if old.get("model") != new.get("model"):
        out["modelChanged"] = {"from": old.get("model"), "to": new.get("model")}
    return out
