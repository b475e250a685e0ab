"""Dataverse -> lake sync: `extract` (pages to staged row versions), `commit` (history append, then a
MERGE into the current view, with recovery), `run` (one run under the lease; job, queue and timer entry
points) and `retention` (org purge, table upkeep). Layout and guarantees in docs/LAKE.md."""

from functions.services.sync.extract import TABLES, TableSpec
from functions.services.sync.run import record_poisoned, run_checked, run_job, run_scheduled, run_sync, start

__all__ = [
    "TABLES",
    "TableSpec",
    "record_poisoned",
    "run_checked",
    "run_job",
    "run_scheduled",
    "run_sync",
    "start",
]
