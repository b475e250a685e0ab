"""Stand-ins for the scoring service's collaborators (unit tests only): the REAL lake (Delta tables in a
local directory, JSON and Parquet blobs on an in-memory container), a model store, a Dataverse client
recording $batch calls, a queue sender and a deterministic scorer. The real Azurite and mock Dataverse run
in tests/integration/scoring."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from connectors.blobs import JsonBlobs
from connectors.dataverse import DataverseNotFound
from connectors.delta import DeltaLocation
from connectors.jobs import JobStore
from connectors.lake import Lake
from functions.services.scoring.common import to_arrow
from tests.unit.fakes import FakeContainer, unit_settings


class Container(FakeContainer):
    """FakeContainer plus the few calls the Lake makes beyond JsonBlobs."""

    def download_blob(self, name: str, **_: Any) -> Any:
        return super().download_blob(name)

    def get_blob_client(self, name: str) -> Any:
        client = super().get_blob_client(name)
        client.exists = lambda: name in self.blobs
        return client


def lake_table(frame: pd.DataFrame) -> pa.Table:
    """A frame as the sync would store it: timestamps in microseconds, mixed-type columns as text."""
    out = frame.copy()
    for col in out.columns:
        if isinstance(out[col].dtype, pd.DatetimeTZDtype):
            out[col] = out[col].astype("datetime64[us, UTC]")
    return to_arrow(out)


@dataclass
class FakeStore:
    """ModelStore's list_configs / get_alias / load_version."""

    configs: list[dict[str, Any]] = field(default_factory=list)
    aliases: dict[str, dict[str, Any]] = field(default_factory=dict)
    artifacts: dict[str, tuple[bytes, dict[str, Any]]] = field(default_factory=dict)
    loads: int = 0

    def list_configs(self) -> list[dict[str, Any]]:
        return [dict(c) for c in self.configs]

    def get_alias(self, name: str) -> dict[str, Any]:
        return dict(self.aliases.get(name, {"published": None, "publishedAt": None}))

    def load_version(self, name: str, version: int) -> Any:
        self.loads += 1
        onnx, meta = self.artifacts.get(f"{name}@{version}", (b"onnx", {"name": name, "version": version}))
        return SimpleNamespace(name=name, version=version, onnx=onnx, meta=meta, etag=None)

    def version_etag(self, name: str, version: int) -> str | None:
        return None


@dataclass
class FakeDataverse:
    """Records every $batch call and the requests the real client would send for it (<= 1,000 ops each);
    answers each op with a status (`fail(op)` may fail some)."""

    calls: list[list[Any]] = field(default_factory=list)
    requests: list[int] = field(default_factory=list)
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    fail: Any = None  # callable(op) -> status int, or None for 204
    dop_hint: int | None = None
    message_cache: dict[tuple[str, str], bool] = field(default_factory=dict)
    bulk: bool = False  # whether sdkmessagefilters list UpsertMultiple (no: the $batch path)

    def batch(self, ops: list[Any], *, continue_on_error: bool = True) -> list[Any]:
        self.calls.append(list(ops))
        self.requests.extend(min(1000, len(ops) - s) for s in range(0, len(ops), 1000))
        out = []
        for op in ops:
            status = self.fail(op) if self.fail else 204
            ok = 200 <= status < 300
            if ok:
                self.rows[op.body["msdyn_entityid"]] = dict(op.body)
            out.append(SimpleNamespace(status=status, ok=ok, error=None if ok else f"injected {status}"))
        return out

    def get(self, path: str, params: dict[str, Any] | None = None, headers: Any = None) -> dict[str, Any]:
        if path == "sdkmessagefilters":
            return {"value": [{"sdkmessagefilterid": "f"}] if self.bulk else []}
        key = path.split("msdyn_entityid='", 1)[1].split("'", 1)[0]
        if key not in self.rows:
            raise DataverseNotFound(404, "0x80060891", "no such row")
        return dict(self.rows[key])

    @property
    def written(self) -> int:
        return sum(len(c) for c in self.calls)


class FakeSender:
    def __init__(self, sink: list[dict[str, Any]]):
        self.sink = sink

    def send(self, message: dict[str, Any], **_: Any) -> None:
        self.sink.append(json.loads(json.dumps(message)))


class FakeScorer:
    """Deterministic: score = a column `points` (clipped), reasons a fixed JSON of the model."""

    def __init__(self, name: str, version: int):
        self.name = name
        self.version = version
        self.calls = 0

    def score(self, frame: pd.DataFrame) -> pd.DataFrame:
        self.calls += 1
        bad = frame["points"].isna()
        ok = frame[~bad]
        reasons = json.dumps({"model": self.name, "version": self.version, "positive": [], "negative": []})
        out = pd.DataFrame(
            {
                "opportunityid": ok["opportunityid"].to_numpy(),
                "score": np.clip(ok["points"].to_numpy(dtype=float), 0, 100).round().astype(int),
                "grade": 0,
                "reasons": [reasons] * len(ok),
            }
        )
        out.attrs["skipped"] = [
            {"opportunityid": i, "reason": "points missing"} for i in frame.loc[bad, "opportunityid"]
        ]
        return out


class FakeContext:
    """The AppContext surface the scoring service uses, on the real Lake in `root`."""

    def __init__(
        self,
        root: Path,
        *,
        opportunities: pd.DataFrame | None = None,
        configs: list[dict[str, Any]],
        published: dict[str, int],
        quota: int | None = None,
        tables: dict[str, pd.DataFrame] | None = None,
        metadata: dict[str, Any] | None = None,
    ):
        self.lake_container = Container()
        self.lake = Lake(self.lake_container, DeltaLocation(str(root / "lake")))  # type: ignore[arg-type]
        self.sync(**dict(tables or {}), **({} if opportunities is None else {"opportunity": opportunities}))
        if metadata:
            for t, attrs in metadata["attributes"].items():
                self.lake.json.write(f"metadata/attributes/{t}.json", attrs)
            self.lake.json.write("metadata/optionsets.json", metadata["optionsets"])
            self.lake.json.write("metadata/processes.json", metadata["processes"])
        self.model_store = FakeStore(
            configs,
            {
                n: {"published": v, "publishedAt": f"2026-01-0{i + 1}T00:00:00+00:00"}
                for i, (n, v) in enumerate(published.items())
            },
        )
        self.dataverse = FakeDataverse()
        self.jobs = JobStore(JsonBlobs(self.lake_container))  # type: ignore[arg-type]
        self.settings = unit_settings(
            SCORING_QUEUE="scoring", **({} if quota is None else {"MONTHLY_SCORING_QUOTA": str(quota)})
        )
        self.messages: list[dict[str, Any]] = []

    def sync(self, **tables: pd.DataFrame) -> None:
        """Replace lake tables as a sync would (`opportunity_history` is the history of opportunities)."""
        for name, frame in tables.items():
            path = Lake.history_path("opportunity") if name == "opportunity_history" else Lake.current_path(name)
            self.lake.tables.overwrite(path, lake_table(frame))

    def queue(self, name: str) -> FakeSender:
        return FakeSender(self.messages)


def requests_bound(results: list[dict[str, Any]]) -> int:
    """sum over batches of ceil(changed in the batch / 1,000)."""
    return sum(math.ceil(int(r.get("written", 0)) / 1000) for r in results)
