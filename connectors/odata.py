"""OData literals: the one place where a value becomes part of a `$filter` or a key segment.

Every value placed in a query goes through `quote()`, so a value holding quotes, `or`, parentheses or
URL syntax cannot change the meaning of the filter: strings are single-quoted with `'` doubled (the
OData ABNF rule), GUIDs and numbers are validated and written bare, anything else is refused.
Column names are checked against an identifier pattern, never quoted, because they come from code or
metadata, not from users.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import uuid
from collections.abc import Iterable, Mapping
from decimal import Decimal
from urllib.parse import quote as _urlquote

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*$")
_OPS = ("eq", "ne", "gt", "ge", "lt", "le")


class ODataValueError(ValueError):
    """A value or column name that cannot be placed in a query (a caller error)."""

    code = "InvalidQueryValue"


def column(name: str) -> str:
    """Validate a column (or `nav/column` path) name; return it unchanged."""
    if not isinstance(name, str) or not _IDENT.match(name):
        raise ODataValueError(f"not a valid column name for a query: {name!r}")
    return name


def guid(value: str | uuid.UUID) -> uuid.UUID:
    """Parse a GUID (with or without braces); ODataValueError if it is not one."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value).strip().strip("{}"))
    except (ValueError, AttributeError) as exc:
        raise ODataValueError(f"not a GUID: {value!r}") from exc


def quote(value: object) -> str:
    """The OData literal for `value`.

    str -> 'text' (quotes doubled); uuid.UUID -> bare GUID; bool -> true/false; None -> null;
    int/float/Decimal -> number (finite only); datetime -> ISO 8601 UTC with Z; date -> YYYY-MM-DD.
    A GUID held as text is a string to OData: wrap it with `guid()` to compare with a lookup column.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float | Decimal):
        if isinstance(value, float) and not math.isfinite(value):
            raise ODataValueError(f"not a finite number: {value!r}")
        if isinstance(value, Decimal) and not value.is_finite():
            raise ODataValueError(f"not a finite number: {value!r}")
        return repr(value) if isinstance(value, float) else str(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ODataValueError("a datetime in a filter must be timezone-aware")
        return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise ODataValueError(f"cannot place a {type(value).__name__} in an OData query")


def compare(col: str, op: str, value: object) -> str:
    """`col op literal`, e.g. compare("statecode", "eq", 0) -> "statecode eq 0"."""
    if op not in _OPS:
        raise ODataValueError(f"unknown comparison operator {op!r}")
    return f"{column(col)} {op} {quote(value)}"


def filter_eq(col: str, value: object) -> str:
    """`col eq literal`: the helper for equality filters."""
    return compare(col, "eq", value)


def filter_in(col: str, values: Iterable[object]) -> str:
    """`(col eq a or col eq b ...)`; an empty list gives a filter that matches nothing."""
    parts = [filter_eq(col, v) for v in values]
    if not parts:
        return "false"
    return "(" + " or ".join(parts) + ")"


def and_(*clauses: str) -> str:
    """Join already-built clauses with `and`, each in parentheses."""
    kept = [c for c in clauses if c]
    return " and ".join(f"({c})" for c in kept)


def key_segment(entity_set: str, key: str | uuid.UUID | Mapping[str, object]) -> str:
    """The resource path of one row: `accounts(<guid>)` or, for an alternate key,
    `msdyn_predictivescores(msdyn_entityid='..',msdyn_entitytype='opportunity')`. Values are quoted
    then percent-encoded so that `/`, `?`, `#` or `%` inside a value stay inside it."""
    column(entity_set)
    if isinstance(key, Mapping):
        if not key:
            raise ODataValueError("an alternate key needs at least one column")
        inner = ",".join(f"{column(k)}={_urlquote(quote(v), safe=chr(39))}" for k, v in key.items())
    else:
        inner = str(guid(key))
    return f"{entity_set}({inner})"
