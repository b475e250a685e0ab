"""The last backtest of each model, on the model container next to its configuration:

    backtests/<name>/job.json       {"jobId"}: the backtest queued or running (one at a time per model)
    backtests/<name>/report.json    the last finished report (camelCase, served by GET .../backtest)
    backtests/<name>/scores.json    its per-opportunity scores: {cutDate: {"ids", "probabilities", "outcomes"}}
    backtests/<name>/months/<jobId>/<cutDate>.json
                                    the months a running backtest has finished ({"report", "ids",
                                    "probabilities", "outcomes"}): the next delivery of a backtest that
                                    stopped early, or whose worker died, goes on from them; deleted once the
                                    report is saved

The scores are kept apart from the report, so reading the report stays small however large the org is;
they are what the report's figures were computed from (an audit can recompute every month)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from connectors.blobs import JsonBlobs


class Backtests:
    def __init__(self, blobs: JsonBlobs, path_of: Callable[[str], str]):
        self.blobs = blobs
        self._prefix = lambda name: f"backtests/{path_of(name)}/"  # path_of checks the name (404 otherwise)

    def job_id(self, name: str) -> str | None:
        doc = self.blobs.read(self._prefix(name) + "job.json")
        return str(doc["jobId"]) if isinstance(doc, dict) and doc.get("jobId") else None

    def set_job(self, name: str, job_id: str) -> None:
        self.blobs.write(self._prefix(name) + "job.json", {"jobId": job_id})

    def save(self, name: str, report: dict[str, Any], scores: dict[str, Any]) -> None:
        """Scores first: a report is never visible without the scores it was computed from. The finished
        months it was assembled from go."""
        self.blobs.write(self._prefix(name) + "scores.json", scores)
        self.blobs.write(self._prefix(name) + "report.json", report)
        for path in self.blobs.list(self._prefix(name) + "months/"):
            self.blobs.delete(path)

    def month(self, name: str, job_id: str, cut: str) -> dict[str, Any] | None:
        doc = self.blobs.read(self._month_path(name, job_id, cut))
        return dict(doc) if isinstance(doc, dict) else None

    def save_month(self, name: str, job_id: str, cut: str, month: dict[str, Any]) -> None:
        self.blobs.write(self._month_path(name, job_id, cut), month)

    def _month_path(self, name: str, job_id: str, cut: str) -> str:
        return f"{self._prefix(name)}months/{job_id}/{cut}.json"

    def report(self, name: str) -> dict[str, Any] | None:
        doc = self.blobs.read(self._prefix(name) + "report.json")
        return dict(doc) if isinstance(doc, dict) else None

    def scores(self, name: str) -> dict[str, Any] | None:
        doc = self.blobs.read(self._prefix(name) + "scores.json")
        return dict(doc) if isinstance(doc, dict) else None

    def delete(self, name: str) -> int:
        return sum(int(self.blobs.delete(path)) for path in self.blobs.list(self._prefix(name)))
