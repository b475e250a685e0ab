"""The Activity page's months: this month and the five before it, across a year's turn."""

import datetime as dt

from functions.services.activity import months_back


def test_months_back_crosses_the_year() -> None:
    now = dt.datetime(2026, 2, 10, tzinfo=dt.UTC)
    assert months_back(now) == ["2026-02", "2026-01", "2025-12", "2025-11", "2025-10", "2025-09"]
    assert months_back(now, 1) == ["2026-02"]
