"""The `shift` setting of `POST /_mock/simulate`: one segment's win rate, and its share of new deals, change.

`{"attribute": "new_channel", "value": 100000003, "winRate": 0.9, "share": 0.8}`:
- a segment is the opportunities whose `attribute` (an opportunity choice the generator draws, or an account
  column: `industrycode`, `address1_country`, `customertypecode`) has `value`;
- deals of the segment that close during the simulated days are won with probability `winRate` (their
  timing is unchanged), and new deals of the segment get `winRate` as their win probability;
- a share `share` (default 0.8) of the new deals is put in the segment (the value is set on the deal, or
  for an account column the deal goes to an account with that value), so the open population's mix moves.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from .errors import bad_request
from .generator import (
    BUDGET_STATUSES,
    CHANNELS,
    COUNTRIES,
    CUSTOMER_TYPES,
    INITIAL_COMMUNICATIONS,
    NEEDS,
    PURCHASE_PROCESSES,
    PURCHASE_TIMEFRAMES,
    RATINGS,
)
from .schema import INDUSTRY

OPPORTUNITY_VALUES: dict[str, list[Any]] = {
    "budgetstatus": BUDGET_STATUSES.population,
    "need": NEEDS.population,
    "opportunityratingcode": RATINGS.population,
    "purchasetimeframe": PURCHASE_TIMEFRAMES.population,
    "purchaseprocess": PURCHASE_PROCESSES.population,
    "initialcommunication": INITIAL_COMMUNICATIONS.population,
    "new_channel": CHANNELS.population,
    "decisionmaker": [True, False],
}
ACCOUNT_VALUES: dict[str, list[Any]] = {
    "industrycode": sorted(INDUSTRY),
    "address1_country": list(COUNTRIES),
    "customertypecode": CUSTOMER_TYPES.population,
}
KEYS = ("attribute", "value", "winRate", "share")
DEFAULT_SHARE = 0.8
EXAMPLE = '{"attribute": "new_channel", "value": 100000003, "winRate": 0.9}'


@dataclass(frozen=True)
class Shift:
    attribute: str
    value: Any
    win_rate: float
    share: float

    @property
    def on_account(self) -> bool:
        return self.attribute in ACCOUNT_VALUES

    def matches(self, opportunity: dict[str, Any], account: dict[str, Any] | None) -> bool:
        """Whether a deal (its row, or its generated features) is in the segment."""
        source = (account or {}) if self.on_account else opportunity
        value = source.get(self.attribute)
        return value is not None and type(value) is type(self.value) and value == self.value

    def account(self, rng: random.Random, accounts: list[str], rows: dict[str, dict[str, Any]]) -> str:
        """The account of a new deal: one of the segment with probability `share` (for an account column)."""
        inside = [a for a in accounts if self.matches({}, rows.get(a))] if self.on_account else []
        if inside and rng.random() < self.share:
            return rng.choice(inside)
        return rng.choice(accounts)

    def apply(self, rng: random.Random, features: dict[str, Any], account: dict[str, Any] | None) -> bool:
        """A new deal's features: put in the segment with probability `share` (an opportunity column); a deal
        of the segment gets `win_rate` as its win probability. Returns whether it is in the segment."""
        if not self.on_account and rng.random() < self.share:
            features[self.attribute] = self.value
        inside = self.matches(features, account)
        if inside:
            features["_p"] = self.win_rate
        return inside


def parse_shift(raw: Any) -> Shift | None:
    """The `shift` setting, validated (400 naming what is wrong); None when absent."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise bad_request(f"'shift' must be an object like {EXAMPLE}.")
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise bad_request(f"Unknown shift setting '{unknown[0]}'; known: {', '.join(KEYS)}.")
    attribute = raw.get("attribute")
    known = {**OPPORTUNITY_VALUES, **ACCOUNT_VALUES}
    if not isinstance(attribute, str) or attribute not in known:
        raise bad_request(f"'shift.attribute' must be one of {', '.join(sorted(known))}; got {attribute!r}.")
    value, allowed = raw.get("value"), known[attribute]
    if not any(type(value) is type(v) and value == v for v in allowed):
        shown = ", ".join(str(v).lower() if isinstance(v, bool) else repr(v) for v in allowed)
        raise bad_request(f"'shift.value' must be one of {shown} for {attribute}; got {value!r}.")
    return Shift(attribute, value, _rate(raw, "winRate", None, low_open=False), _rate(raw, "share", DEFAULT_SHARE))


def _rate(raw: dict[str, Any], key: str, default: float | None, *, low_open: bool = True) -> float:
    value = raw.get(key, default)
    low = 0.0
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= 1
    if ok and low_open and value == low:
        ok = False
    if not ok:
        bounds = "greater than 0 and at most 1" if low_open else "from 0 to 1"
        raise bad_request(f"'shift.{key}' must be a number {bounds}; got {value!r}.")
    return float(value)  # type: ignore[arg-type]
