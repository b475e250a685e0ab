"""The time-ordered split into training and test parts (the most recent TEST_SHARE of rows by close time)
and what a training row may know: the time its frozen counts date from and the win rate known then."""

from __future__ import annotations

import numpy as np

TEST_SHARE = 0.2  # the final test set: the most recent 20% of closed records by close time (Dynamics' rule)


def test_split(row_close: np.ndarray) -> tuple[np.ndarray, int, np.datetime64]:
    """The time-ordered split (modeling.train splits by it too): (row order by close time, rows in the training part,
    the close time the test part starts at; far in the future when there is no test part)."""
    order = np.argsort(row_close, kind="stable")
    n_train = len(order) - max(int(np.ceil(len(order) * TEST_SHARE)), 1)
    test_from = row_close[order[n_train]] if n_train < len(order) else np.datetime64("2262-01-01", "ns")
    return order, n_train, test_from


def known_times(row_time: np.ndarray, row_close: np.ndarray) -> np.ndarray:
    """When each training row's frozen knowledge dates from: its as-of time, but for test rows no later than
    the test part's start. Scoring reads the similar-deals counts and the prior stored at training, so a test
    row (standing for a deal scored by a model trained before the test window) must not see the outcomes of
    earlier test deals through them. Live counts (account, owner) keep the row's own time, as scoring does."""
    _, _, test_from = test_split(row_close)
    return np.minimum(np.asarray(row_time, dtype="datetime64[ns]"), test_from)


def prior_as_of(times: np.ndarray, ev_close: np.ndarray, ev_y: np.ndarray) -> np.ndarray:
    """Per time, the win rate of the deals closed strictly before it ((won + 1) / (closed + 2)): the prior a
    training row's smoothed rates may use, known at its as-of time (never later outcomes)."""
    close = np.asarray(ev_close, dtype="datetime64[ns]")
    y = np.asarray(ev_y, dtype=float)
    keep = ~np.isnat(close) & np.isfinite(y)
    close, y = close[keep], y[keep]
    order = np.argsort(close, kind="stable")
    close, won = close[order], np.concatenate([[0.0], np.cumsum(y[order])])
    before = np.searchsorted(close, np.asarray(times, dtype="datetime64[ns]"), side="left")
    return (won[before] + 1.0) / (before + 2.0)
