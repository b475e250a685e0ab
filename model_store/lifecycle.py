"""Lifecycle rules of the registry (pure functions, no I/O): when a model is due for automatic retraining,
whether a retrained version is auto-published, and the readiness verdict shown on the performance page.

Dynamics rules (../shared/reference/dynamics-scoring-rules.md 1.6-1.8):
- automatic retraining every 15 days, on by default once a model is published;
- a retrained model is auto-published when its accuracy is at least 95% of the active model's, or when
  the active model is more than 3 months old; otherwise the active model stays;
- readiness "Ready to publish" above an AUC range, "OK to publish" within it, "Not ready" below it (the
  cut-offs are hidden in Dynamics; ours are app settings READINESS_AUC_READY / READINESS_AUC_OK,
  defaults 0.75 / 0.65).

We compare AUC (not accuracy, which depends on the threshold and the class balance) and compute both AUCs
on the SAME records: the new version's test set (the most recent 20% of closed records), scored by the
current published version too, so a change in the test window cannot make a worse model look better.
"""

from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass
from typing import Any

from connectors.clock import parse

RETRAIN_EVERY_DAYS = 15
AUTO_PUBLISH_RATIO = 0.95
STALE_AFTER_MONTHS = 3
EARLY_RETRAIN_AFTER_DAYS = 3  # drift starts a retrain early, but not within 3 days of the last


def parse_time(value: Any) -> dt.datetime | None:
    """An ISO timestamp (as stored in configs and metas) as an aware UTC datetime; None if absent/invalid."""
    return parse(value) if isinstance(value, str) else None


def months_before(when: dt.datetime, months: int) -> dt.datetime:
    """The same day-of-month `months` earlier (clamped to the month's last day)."""
    total = when.year * 12 + (when.month - 1) - months
    year, month = divmod(total, 12)
    day = min(when.day, calendar.monthrange(year, month + 1)[1])
    return when.replace(year=year, month=month + 1, day=day)


def auto_retrain_active(config: dict[str, Any], published: int | None) -> bool:
    """Auto-retrain applies once a model is published (Dynamics: "on by default once published")."""
    return bool(config.get("autoRetrain", True)) and published is not None


def retrain_due(config: dict[str, Any], published: int | None, now: dt.datetime) -> bool:
    """True when auto-retrain is active, no training is running and the last one is >= 15 days old."""
    if not auto_retrain_active(config, published) or config.get("status") == "training":
        return False
    last = parse_time(config.get("lastTrainedAt"))
    return last is None or now - last >= dt.timedelta(days=RETRAIN_EVERY_DAYS)


def early_retrain(
    config: dict[str, Any], published: int | None, drift: dict[str, Any] | None, now: dt.datetime
) -> str | None:
    """Why auto-retrain starts before its 15 days (None: it does not): the published version's latest drift
    (docs/SCORING.md "Drift") says `retrain` - its score distribution drifted significantly or it got worse
    on records closed since - measured after the last training, and that training is at least
    EARLY_RETRAIN_AFTER_DAYS old (a retrain kept unpublished does not restart every day)."""
    if not auto_retrain_active(config, published) or config.get("status") == "training" or not drift:
        return None
    assessment = drift.get("assessment") or {}
    if drift.get("version") != published or not assessment.get("retrain"):
        return None
    last, measured = parse_time(config.get("lastTrainedAt")), parse_time(drift.get("measuredAt"))
    if last is not None:
        if measured is None or measured <= last or now - last < dt.timedelta(days=EARLY_RETRAIN_AFTER_DAYS):
            return None
    return f"drift: {assessment.get('message')}"


@dataclass(frozen=True)
class PublishDecision:
    publish: bool
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"publish": self.publish, "reason": self.reason}


def auto_publish_decision(
    *,
    new_auc: float | None,
    current_auc: float | None,
    current_trained_at: dt.datetime | None,
    now: dt.datetime,
) -> PublishDecision:
    """Dynamics' auto-publish rule, with AUC on the same recent test records (see the module docstring)."""
    if current_trained_at is not None and current_trained_at < months_before(now, STALE_AFTER_MONTHS):
        return PublishDecision(True, f"the current version is more than {STALE_AFTER_MONTHS} months old")
    if new_auc is None or current_auc is None:
        return PublishDecision(False, "the versions could not be compared on the same test records")
    floor = AUTO_PUBLISH_RATIO * current_auc
    if new_auc >= floor:
        return PublishDecision(
            True,
            f"AUC {new_auc:.3f} is at least 95% of the current version's {current_auc:.3f} on the same rows",
        )
    return PublishDecision(
        False,
        f"AUC {new_auc:.3f} is below 95% of the current version's {current_auc:.3f} (needs {floor:.3f}) "
        "on the same records; kept unpublished",
    )


def readiness(auc: float | None, *, ready: float, ok: float) -> str:
    """Ready / OK / Not ready, from published cut-offs (app settings)."""
    if auc is None:
        return "Not ready"
    if auc >= ready:
        return "Ready"
    if auc >= ok:
        return "OK"
    return "Not ready"
