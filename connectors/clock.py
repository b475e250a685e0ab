"""The one clock and the one timestamp format of the app: UTC, ISO 8601 to the second with a `Z`."""

from __future__ import annotations

import datetime as dt


def utcnow() -> dt.datetime:
    """Now, in UTC (the only place the app reads the machine's clock)."""
    return dt.datetime.now(dt.UTC)


def iso(when: dt.datetime | None = None) -> str:
    """`2026-12-01T09:30:00Z`: every timestamp in HTTP responses, job records, reports and documents."""
    value = utcnow() if when is None else when
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def stamp(when: dt.datetime | None = None) -> str:
    """`20261201T093000Z`: timestamps inside blob names (sort in time order)."""
    value = utcnow() if when is None else when
    return value.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def parse(text: str | None) -> dt.datetime | None:
    """An ISO 8601 timestamp (with `Z` or an offset; a bare date is midnight UTC) or None."""
    if not text:
        return None
    raw = str(text).strip().replace("Z", "+00:00")
    try:
        value = dt.datetime.fromisoformat(raw if "T" in raw or " " in raw else raw[:10] + "T00:00:00")
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
