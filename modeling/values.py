"""The rules every value a caller sends is checked with (pure, one place): identifier rules matched in
full, bounded decimal integers and finite numbers.

Full matches only: with `re.match`, a pattern's `$` also matches before a final newline, so `"Zed\\n"`
would pass `^[A-Za-z0-9_]+$`. `str.isdigit()` is not a digit rule either: it accepts "²" and other
Unicode digits that `int()` then refuses, and `int()` of a 5,000-digit string hits Python's digit limit.
"""

from __future__ import annotations

import math
import re
from typing import Any

# Model names: letters, digits and '_' (the Dynamics rule), which also keeps blob paths safe.
MODEL_NAME = re.compile(r"[A-Za-z0-9_]{1,100}")
# Dataverse record ids (opportunityid, ...): a GUID in its 8-4-4-4-12 hexadecimal form.
GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# The audit log's page cursor (`next`, then `?before=`): the name of an audit record's blob.
AUDIT_CURSOR = re.compile(r"[A-Za-z0-9_.-]{1,200}")
MAX_INT_DIGITS = 9  # integers callers send (versions, counts) stay below 10**9
_DECIMAL = re.compile(rf"-?[0-9]{{1,{MAX_INT_DIGITS}}}")


def matches(rule: re.Pattern[str], value: Any) -> bool:
    """True when `value` is a string that `rule` matches from its first character to its last."""
    return isinstance(value, str) and rule.fullmatch(value) is not None


def bounded_int(value: Any, *, minimum: int | None = None, maximum: int | None = None) -> int | None:
    """`value` as an int when it is an integer (not a bool) or a string of at most `MAX_INT_DIGITS` ASCII
    digits (an optional leading '-', no spaces, no '+'), within [minimum, maximum]; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and _DECIMAL.fullmatch(value):
        number = int(value)
    else:
        return None
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        return None
    return number


def is_finite_number(value: Any) -> bool:
    """True for an int (not a bool) or a float that is neither NaN nor infinite."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value)
