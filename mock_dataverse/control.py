"""Test control plane state: injected faults and request statistics (service protection: protection.py)."""

from __future__ import annotations

import random
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from . import errors as E
from .errors import DataverseError
from .protection import concurrency_exceeded, count_exceeded, settings_body, time_exceeded

FAULT_FIELDS = {
    "rate_429": float,
    "rate_429_time": float,
    "rate_429_concurrency": float,
    "rate_500": float,
    "rate_503": float,
    "rate_drop": float,
    "latency_ms": float,
    "retry_after": int,
    "seed": int,
    "paths": str,
}


@dataclass
class Faults:
    rate_429: float = 0.0
    rate_429_time: float = 0.0
    rate_429_concurrency: float = 0.0
    rate_500: float = 0.0
    rate_503: float = 0.0
    rate_drop: float = 0.0
    latency_ms: float = 0.0
    retry_after: int = 1
    seed: int = 0
    paths: str | None = None
    rng: random.Random = field(default_factory=random.Random, repr=False)

    @staticmethod
    def parse(body: Any) -> Faults:
        if isinstance(body, dict) and body.get("paths", "") is None:  # null paths: every path
            body = {k: v for k, v in body.items() if k != "paths"}
        f = Faults(**settings_body(body, FAULT_FIELDS, "fault"))
        for k in FAULT_FIELDS:
            if k.startswith("rate_") and getattr(f, k) > 1:
                raise E.bad_request(f"The fault setting '{k}' must be between 0 and 1.")
        if f.rate_429 + f.rate_429_time + f.rate_429_concurrency + f.rate_500 + f.rate_503 + f.rate_drop > 1:
            raise E.bad_request("The fault rates add up to more than 1.")
        f.rng = random.Random(f.seed)
        return f

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in FAULT_FIELDS}

    def draw(self, path: str, api_path: str) -> str | None:
        """Returns "429", "429_time", "429_concurrency", "500", "503", "drop" or None for a request to `path`."""
        if self.paths and not (path.startswith(self.paths) or api_path.startswith(self.paths)):
            return None
        x = self.rng.random()
        for name, rate in (
            ("429", self.rate_429),
            ("429_time", self.rate_429_time),
            ("429_concurrency", self.rate_429_concurrency),
            ("500", self.rate_500),
            ("503", self.rate_503),
            ("drop", self.rate_drop),
        ):
            if x < rate:
                return name
            x -= rate
        return None

    def error(self, kind: str) -> DataverseError:
        if kind == "429":
            return count_exceeded(6000, 300, self.retry_after)
        if kind == "429_time":
            return time_exceeded(1_200_000, 300, self.retry_after)
        if kind == "429_concurrency":
            return concurrency_exceeded(52, self.retry_after)
        if kind == "503":
            return DataverseError(
                503,
                "0x80040216",
                "Service Unavailable (injected fault).",
                {"Retry-After": str(self.retry_after)},
            )
        return DataverseError(500, "0x80040216", "An unexpected error occurred (injected fault).")


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.requests: dict[str, int] = defaultdict(int)
        self.by_table: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.by_status: dict[str, int] = defaultdict(int)
        self.batch_parts = 0
        self.batch_requests = 0
        self.writes = 0
        self.token_requests = 0
        self.bulk_requests = 0
        self.bulk_targets = 0
        self.modelled_ms = 0.0
        self.faults_injected: dict[str, int] = defaultdict(int)

    def record(self, method: str, table: str | None, status: int, write: bool = False) -> None:
        with self.lock:
            self.requests[method] += 1
            if table:
                self.by_table[table][method] += 1
            self.by_status[str(status)] += 1
            if write and status < 400:
                self.writes += 1

    def record_cost(self, modelled_ms: float, bulk_targets: int) -> None:
        with self.lock:
            self.modelled_ms += modelled_ms
            if bulk_targets:
                self.bulk_requests += 1
                self.bulk_targets += bulk_targets

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "requests": dict(self.requests),
                "by_table": {k: dict(v) for k, v in self.by_table.items()},
                "by_status": dict(self.by_status),
                "batch_parts": self.batch_parts,
                "batch_requests": self.batch_requests,
                "writes": self.writes,
                "token_requests": self.token_requests,
                "bulk_requests": self.bulk_requests,
                "bulk_targets": self.bulk_targets,
                "modelled_ms": round(self.modelled_ms, 1),
                "faults_injected": dict(self.faults_injected),
            }
