"""Unit-test harness for the models API: a real AppContext whose clients are in-memory fakes (blob
containers, lake, queue), with the heavy domain steps (dataset building, training, scoring) replaced by
small fakes so these tests check the registry and API rules only. The real pipeline runs in
tests/integration/models."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import azure.functions as func
import numpy as np
import pandas as pd
import pytest

from connectors.blobs import JsonBlobs
from connectors.jobs import JobStore
from connectors.lake import LeaseBusy
from functions.app_context import AppContext, set_context
from functions.services import training
from model_store.store import ModelStore
from modeling.errors import InsufficientDataError
from tests.conftest import registry
from tests.unit.fakes import FakeContainer, unit_settings

METADATA = {
    "metadata/attributes/opportunity.json": [
        {"name": "opportunityid", "type": "Uniqueidentifier", "custom": False, "label": "Id"},
        {"name": "statecode", "type": "State", "custom": False, "label": "Status"},
        {"name": "estimatedvalue", "type": "Money", "custom": False, "label": "Est. Revenue"},
        {"name": "budgetstatus", "type": "Picklist", "custom": False, "label": "Budget"},
        {"name": "new_region", "type": "Picklist", "custom": True, "label": "Region"},
        {"name": "createdon", "type": "DateTime", "custom": False, "label": "Created On"},
    ],
    "metadata/attributes/account.json": [
        {"name": "accountid", "type": "Uniqueidentifier", "custom": False, "label": "Id"},
        {"name": "industrycode", "type": "Picklist", "custom": False, "label": "Industry"},
    ],
    "metadata/optionsets.json": {
        "opportunity": {
            "statecode": {"0": "Open", "1": "Won", "2": "Lost"},
            "budgetstatus": {"0": "No Budget", "1": "May Buy", "2": "Can Buy"},
            "new_region": {str(i): f"Region{i}" for i in range(12)},
        }
    },
    "metadata/processes.json": [
        {
            "workflowid": "bpf-1",
            "name": "Opportunity Sales Process",
            "uniquename": "opportunitysalesprocess",
            "stages": [
                {"processstageid": "s1", "stagename": "Qualify", "stagecategory": 0, "order": 0},
                {"processstageid": "s2", "stagename": "Close", "stagecategory": 3, "order": 1},
            ],
        }
    ],
}


class FakeLake:
    def __init__(self) -> None:
        self.docs: dict[str, Any] = dict(METADATA)
        self.locks: dict[str, threading.Lock] = {}

    def read_json(self, path: str) -> Any:
        return self.docs.get(path)

    def delete(self, path: str) -> bool:
        return self.docs.pop(path, None) is not None

    @contextlib.contextmanager
    def lease(self, name: str, *, duration: int = 60, wait: float = 0.0, poll: float = 1.0) -> Iterator[None]:
        """Lake.lease's contract: one holder at a time, LeaseBusy after `wait` seconds."""
        lock = self.locks.setdefault(name, threading.Lock())
        if not lock.acquire(timeout=max(wait, 0.001)):
            raise LeaseBusy(f"locks/{name}.lock is leased by another run")
        try:
            yield
        finally:
            lock.release()


class FakeQueue:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send(self, message: dict[str, Any], **_: Any) -> None:
        self.sent.append(json.loads(json.dumps(message)))


class Domain:
    """Controls the fake domain: counts found in the lake, the AUCs a training reaches, failures."""

    def __init__(self) -> None:
        self.won, self.lost = 120, 130
        self.aucs: list[float] = []
        self.fail_with: Exception | None = None
        self.old_scores: np.ndarray | None = None
        self.trained = 0

    def build(self, ctx: Any, config_doc: dict[str, Any], now: Any) -> Any:
        if self.won < 40 or self.lost < 40:
            raise InsufficientDataError(
                f"found {self.won} won and {self.lost} lost",
                found={"won": self.won, "lost": self.lost},
                needed={"won": 40, "lost": 40},
            )
        n = 100
        labels = np.array([i % 2 for i in range(n)])
        frame = pd.DataFrame({"opportunityid": [f"o{i}" for i in range(n)], "x": labels.astype(float)})
        return SimpleNamespace(frame=frame, labels=labels, counts={"won": self.won, "lost": self.lost})

    def train(self, data: Any, config_doc: dict[str, Any], *, seed: int = 0, **_: Any) -> Any:
        if self.fail_with is not None:
            raise self.fail_with
        self.trained += 1
        auc = self.aucs.pop(0) if self.aucs else 0.8
        meta = {
            "metrics": {"auc": auc, "accuracy": 0.7, "f1": 0.6, "brier": 0.2},
            "insights": {
                "top_fields": ["budgetstatus"],
                "attributes": {"budgetstatus": {"influence": "high"}},
            },
            "leakage": {"excluded": []},
        }
        return SimpleNamespace(
            onnx_bytes=f"onnx-{self.trained}".encode(), meta=meta, test_index=np.arange(80, 100)
        )

    def scorer(self, onnx: bytes, meta: dict[str, Any]) -> Any:
        domain = self

        class _Scorer:
            def score(self, frame: pd.DataFrame, **_: Any) -> pd.DataFrame:
                probs = domain.old_scores if domain.old_scores is not None else frame["x"].to_numpy()
                return pd.DataFrame(
                    {"opportunityid": frame["opportunityid"], "probability": probs[: len(frame)]}
                )

        return _Scorer()


@pytest.fixture
def domain(monkeypatch: pytest.MonkeyPatch) -> Domain:
    d = Domain()
    monkeypatch.setattr(training, "build_training_data", d.build)
    monkeypatch.setattr(training, "train_model", d.train)
    monkeypatch.setattr(training, "scorer", d.scorer)
    return d


@pytest.fixture
def ctx(domain: Domain) -> Iterator[AppContext]:
    context = AppContext(unit_settings())
    context.__dict__["model_store"] = ModelStore(FakeContainer())  # type: ignore[arg-type]
    context.__dict__["jobs"] = JobStore(JsonBlobs(FakeContainer()))  # type: ignore[arg-type]
    context.__dict__["lake"] = FakeLake()
    queue = FakeQueue()
    context.queue = lambda name: queue  # type: ignore[method-assign]
    context.sent = queue.sent  # type: ignore[attr-defined]
    set_context(context)
    try:
        yield context
    finally:
        set_context(None)


def call(
    name: str,
    method: str = "GET",
    *,
    route: dict[str, str] | None = None,
    body: Any = None,
    raw: bytes | None = None,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, func.HttpResponse]:
    """Call a function of function_app by name with a real HttpRequest; returns (status, json, response)."""
    data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
    sent = {"Content-Type": "application/json", **(headers or {})} if data else dict(headers or {})
    req = func.HttpRequest(
        method,
        "http://localhost/api/models",
        headers=sent,
        params=params or {},
        route_params=route or {},
        body=data,
    )
    resp = registry()[name].get_user_function()(req)
    payload = json.loads(resp.get_body()) if resp.get_body() else None
    return resp.status_code, payload, resp


def work(ctx: AppContext) -> list[dict[str, Any]]:
    """Run every queued training message through the real queue function; returns the jobs."""
    jobs = []
    fn = registry()["train_worker"].get_user_function()
    while ctx.sent:  # type: ignore[attr-defined]
        message = ctx.sent.pop(0)  # type: ignore[attr-defined]
        fn(func.QueueMessage(body=json.dumps(message).encode()))
        jobs.append(ctx.jobs.get(message["jobId"]))
    return jobs
