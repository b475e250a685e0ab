"""A scoring run's documents in the lake container, and reading them back (docs/SCORING.md "Lake layout").

```
scoring/runs/<run>/plan.json                 # the plan: models, counts, one model per batch, quota
scoring/runs/<run>/batches/<NNNNN>.parquet   # a batch's input: its scoring frame (<= 5,000 ids)
scoring/runs/<run>/results/<NNNNN>.json      # the batch is done: its counts (written create-only)
scoring/runs/<run>/errors/<NNNNN>.json       # the last error of a failed attempt, and the attempts
scoring/runs/<run>/poisoned/<NNNNN>.json     # the host gave up on the batch (the poison trigger's marker)
scoring/runs/<run>/superseded.json           # a later scheduled run replaced this unfinished one
scoring/quota/<YYYY-MM>.json                 # ids scored this calendar month (only with a quota)
scoring/drift/<model>.json                   # the model's latest drift (functions/services/scoring/drift.py)
```
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from connectors.clock import parse
from functions.services.scoring.common import parallel

if TYPE_CHECKING:
    from connectors.lake import Lake

RUNS = "scoring/runs/"


def prefix(run_id: str) -> str:
    return f"{RUNS}{run_id}/"


def plan_path(run_id: str) -> str:
    return f"{prefix(run_id)}plan.json"


def input_path(run_id: str, batch: int) -> str:
    return f"{prefix(run_id)}batches/{batch:05d}.parquet"


def result_path(run_id: str, batch: int) -> str:
    return f"{prefix(run_id)}results/{batch:05d}.json"


def error_path(run_id: str, batch: int) -> str:
    return f"{prefix(run_id)}errors/{batch:05d}.json"


def poison_path(run_id: str, batch: int) -> str:
    return f"{prefix(run_id)}poisoned/{batch:05d}.json"


def superseded_path(run_id: str) -> str:
    return f"{prefix(run_id)}superseded.json"


@dataclass
class RunDocs:
    """What the lake holds about one run: its plan, batch results, poison markers, supersession."""

    run_id: str
    names: list[str] = field(default_factory=list)
    plan: dict[str, Any] | None = None
    results: dict[int, dict[str, Any]] = field(default_factory=dict)
    poisoned: dict[int, dict[str, Any]] = field(default_factory=dict)
    superseded: dict[str, Any] | None = None

    @property
    def batches(self) -> int:
        return int((self.plan or {}).get("batches", 0))

    def pending(self) -> list[int]:
        """Batches without a result (poisoned ones included)."""
        return [i for i in range(self.batches) if i not in self.results]

    @property
    def finished(self) -> bool:
        """Every batch has a result (nothing left to do), or the run was superseded."""
        return self.superseded is not None or (self.plan is not None and not self.pending())


def _indexed(names: Sequence[str], run_id: str, folder: str) -> dict[int, str]:
    head = f"{prefix(run_id)}{folder}/"
    out = {}
    for name in names:
        stem = name[len(head) : -len(".json")] if name.startswith(head) and name.endswith(".json") else ""
        if stem.isdigit():
            out[int(stem)] = name
    return out


def load(lake: Lake, run_id: str, names: Sequence[str] | None = None) -> RunDocs:
    """The run's documents (one listing, then the JSON documents read in parallel)."""
    listed = list(names) if names is not None else lake.list(prefix(run_id))
    docs = RunDocs(run_id, listed)
    results = _indexed(listed, run_id, "results")
    poisoned = _indexed(listed, run_id, "poisoned")
    singles = [p for p in (plan_path(run_id), superseded_path(run_id)) if p in listed]
    paths = singles + list(results.values()) + list(poisoned.values())
    read = dict(zip(paths, parallel(lake.read_json, paths), strict=True))
    docs.plan = read.get(plan_path(run_id))
    docs.superseded = read.get(superseded_path(run_id))
    docs.results = {i: dict(read[p] or {}) for i, p in results.items() if read.get(p) is not None}
    docs.poisoned = {i: dict(read[p] or {}) for i, p in poisoned.items() if read.get(p) is not None}
    return docs


def list_runs(lake: Lake) -> dict[str, list[str]]:
    """Every run under scoring/runs/ with its blob names (one listing of the prefix)."""
    runs: dict[str, list[str]] = {}
    for name in lake.list(RUNS):
        run_id = name[len(RUNS) :].split("/", 1)[0]
        if run_id:
            runs.setdefault(run_id, []).append(name)
    return runs


def started_at(run_id: str, plan: dict[str, Any] | None) -> dt.datetime | None:
    """When the run was planned: the plan's `createdAt`, else the time its id starts with."""
    created = parse((plan or {}).get("createdAt"))
    if created is not None:
        return created
    head = run_id[:16]
    try:
        return dt.datetime.strptime(head, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return None
