"""Training and scoring sets from the lake's tables (pure pandas).

Training rows are closed opportunities created and closed in the training period that match the
model's filter and BPF. Each row is observed at a *reference time* t inside the deal's open life
(deterministic per id: t = created + u * (closed - created), u in [0.1, 0.9]), so that time-based
features look like those of open deals scored "now" rather than like final values. Attribute values
are point-in-time values from `opportunity_history` (latest version modified at or before t) where
they exist, else the current values. Per-stage models get one row per closed deal and stage it
reached, with t inside that stage.

Derived features (never leaking the row's own outcome: only deals closed strictly before t count):
days open, days in the current stage and its ratio to the median of won deals in that stage,
close-date slip (days from t to the estimated close date; planned cycle length), value against the
account's past mean, the account's and owner's past win rates (smoothed), and the account's past win
rate on deals of the same value (repeat deals).

The modules: `training_frame` (build_training_frame, TrainingData), `scoring_frame` (build_scoring_frame,
ScoringData), `tables` (reading the lake's current tables), `history` (point-in-time values, the stage history,
late changes), `derived` (the derived features and the similar-deals profile), `split` (the time-ordered test
split and what a training row may know) and `attributes` (attribute eligibility, feature descriptors).
"""

from __future__ import annotations

from modeling.dataset.scoring_frame import build_scoring_frame
from modeling.dataset.training_frame import TrainingData, build_training_frame

__all__ = ["TrainingData", "build_scoring_frame", "build_training_frame"]
