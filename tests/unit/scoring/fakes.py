"""In-memory stand-ins for the scoring service's collaborators (unit tests only): a blob container with
ETag/create-only semantics, a lake on it, a model store, a Dataverse client recording $batch calls, a
queue sender, and a deterministic scorer. The real ones run in tests/integration/scoring."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from connectors.blobs import JsonBlobs
from connectors.jobs import JobStore
from tests.unit.fakes import FakeContainer


class FakeLake:
    """The Lake read/write API of docs/CONTRACTS.md over a FakeContainer."""

    def __init__(
        self,
        container: FakeContainer,
        tables: dict[str, pd.DataFrame] | None = None,
        metadata: dict[str, Any] | None = None,
    ):
        self.container = container
        self.tables = tables or {}
        self.json = JsonBlobs(container)  # type: ignore[arg-type]
        for path, doc in (metadata or {}).items():
            self.json.write(path, doc)

    def read_current(self, table: str, columns: list[str] | None = None) -> Any:
        """Frames as given (bad values of mixed types included, as a sync of a messy org could hand over)."""
        frame = self.tables.get(table, pd.DataFrame())
        return SimpleNamespace(to_pandas=lambda: frame.copy())

    def read_history(self, table: str, columns: list[str] | None = None) -> pa.Table:
        raise FileNotFoundError("no history in the fake lake")

    def read_json(self, path: str) -> Any:
        return self.json.read(path)

    def write_parquet(self, path: str, table: pa.Table) -> None:
        sink = io.BytesIO()
        pq.write_table(table, sink)
        self.container._upload(path, sink.getvalue(), overwrite=True)

    def read_parquet(self, path: str) -> pa.Table:
        return pq.read_table(io.BytesIO(self.container.download_blob(path).readall()))

    def list(self, prefix: str) -> list[str]:
        return self.container.list_blob_names(prefix)


@dataclass
class FakeStore:
    """ModelStore's list_configs / get_alias / load_version."""

    configs: list[dict[str, Any]] = field(default_factory=list)
    aliases: dict[str, dict[str, Any]] = field(default_factory=dict)
    loads: int = 0

    def list_configs(self) -> list[dict[str, Any]]:
        return [dict(c) for c in self.configs]

    def get_alias(self, name: str) -> dict[str, Any]:
        return dict(self.aliases.get(name, {"published": None, "publishedAt": None}))

    artifacts: dict[str, tuple[bytes, dict[str, Any]]] = field(default_factory=dict)

    def load_version(self, name: str, version: int) -> Any:
        self.loads += 1
        onnx, meta = self.artifacts.get(f"{name}@{version}", (b"onnx", {"name": name, "version": version}))
        return SimpleNamespace(name=name, version=version, onnx=onnx, meta=meta)


@dataclass
class FakeDataverse:
    """Records every $batch and answers each op with a status (a callable may fail some)."""

    calls: list[list[Any]] = field(default_factory=list)
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    fail: Any = None  # callable(op) -> status int, or None for 204

    def batch(self, ops: list[Any], *, continue_on_error: bool = True) -> list[Any]:
        self.calls.append(list(ops))
        out = []
        for op in ops:
            status = self.fail(op) if self.fail else 204
            if 200 <= status < 300:
                self.rows[op.body["msdyn_entityid"]] = dict(op.body)
            out.append(SimpleNamespace(status=status, error=None if status < 300 else "injected"))
        return out

    def get(self, path: str, params: dict[str, Any] | None = None, headers: Any = None) -> dict[str, Any]:
        key = path.split("msdyn_entityid='", 1)[1].split("'", 1)[0]
        if key not in self.rows:
            raise _NotFound()
        return dict(self.rows[key])

    @property
    def written(self) -> int:
        return sum(len(c) for c in self.calls)


class _NotFound(Exception):
    status = 404
    code = "0x80060891"


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
        self.meta = {"stats": {}}
        self.calls = 0

    def score(self, frame: pd.DataFrame) -> pd.DataFrame:
        self.calls += 1
        bad = frame["points"].isna()
        ok = frame[~bad]
        out = pd.DataFrame(
            {
                "opportunityid": ok["opportunityid"].to_numpy(),
                "score": np.clip(ok["points"].to_numpy(dtype=float), 0, 100).round().astype(int),
                "grade": 0,
                "reasons": [json.dumps({"model": self.name, "version": self.version, "positive": [], "negative": []})]
                * len(ok),
            }
        )
        missing = frame.loc[bad, "opportunityid"]
        out.attrs["skipped"] = [{"opportunityid": i, "reason": "points missing"} for i in missing]
        return out


@dataclass
class FakeSettings:
    monthly_quota: int | None = None
    scoring_queue: str = "scoring"
    model_container: str = "models"


class FakeContext:
    def __init__(
        self,
        *,
        opportunities: pd.DataFrame | None = None,
        configs: list[dict[str, Any]],
        published: dict[str, int],
        quota: int | None = None,
        tables: dict[str, pd.DataFrame] | None = None,
        metadata: dict[str, Any] | None = None,
    ):
        self.lake_container = FakeContainer()
        tables = dict(tables or {})
        if opportunities is not None:
            tables["opportunity"] = opportunities
        docs: dict[str, Any] = {}
        if metadata:
            for t, attrs in metadata["attributes"].items():
                docs[f"metadata/attributes/{t}.json"] = attrs
            docs["metadata/optionsets.json"] = metadata["optionsets"]
            docs["metadata/processes.json"] = metadata["processes"]
        self.lake = FakeLake(self.lake_container, tables, docs)
        self.model_store = FakeStore(
            configs,
            {
                n: {"published": v, "publishedAt": f"2026-01-0{i + 1}T00:00:00+00:00"}
                for i, (n, v) in enumerate(published.items())
            },
        )
        self.dataverse = FakeDataverse()
        self.jobs = JobStore(JsonBlobs(self.lake_container))  # type: ignore[arg-type]
        self.settings = FakeSettings(monthly_quota=quota)
        self.messages: list[dict[str, Any]] = []

    def queue(self, name: str) -> FakeSender:
        return FakeSender(self.messages)
