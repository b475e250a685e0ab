"""Shared unit-test support: an in-memory stand-in for azure.storage.blob.ContainerClient (the calls
JsonBlobs, ModelStore, the lake and the scoring service make, with the same create-only and ETag semantics:
ResourceExistsError / ResourceModifiedError / ResourceNotFoundError), and the one settings factory."""

from __future__ import annotations

import itertools
import threading
from types import SimpleNamespace
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

from functions.settings import Settings, load_settings


class FakeContainer:
    def __init__(self) -> None:
        self.blobs: dict[str, tuple[bytes, str]] = {}
        self._etags = itertools.count(1)
        self._lock = threading.Lock()

    def _upload(
        self,
        name: str,
        data: Any,
        *,
        overwrite: bool = False,
        etag: str | None = None,
        match_condition: Any = None,
        **_: Any,
    ) -> dict[str, str]:
        body = data if isinstance(data, bytes) else bytes(data)
        with self._lock:
            if name in self.blobs and not overwrite:
                raise ResourceExistsError(f"{name} exists")
            if etag is not None and match_condition == MatchConditions.IfNotModified:
                if name not in self.blobs:
                    raise ResourceNotFoundError(f"{name} not found")
                if self.blobs[name][1] != etag:
                    raise ResourceModifiedError(f"{name} changed")
            new = f'"0x{next(self._etags):x}"'
            self.blobs[name] = (body, new)
            return {"etag": new}

    def upload_blob(self, name: str, data: Any, **kw: Any) -> Any:
        self._upload(name, data, **kw)
        return self.get_blob_client(name)

    def get_blob_client(self, name: str) -> Any:
        return SimpleNamespace(
            upload_blob=lambda data, **kw: self._upload(name, data, **kw),
            get_blob_properties=lambda: self._properties(name),
        )

    def _properties(self, name: str) -> Any:
        with self._lock:
            if name not in self.blobs:
                raise ResourceNotFoundError(f"{name} not found")
            return SimpleNamespace(etag=self.blobs[name][1], metadata={})

    def download_blob(self, name: str) -> Any:
        with self._lock:
            if name not in self.blobs:
                raise ResourceNotFoundError(f"{name} not found")
            body, etag = self.blobs[name]
        return SimpleNamespace(readall=lambda: body, properties=SimpleNamespace(etag=etag))

    def list_blob_names(self, name_starts_with: str = "") -> list[str]:
        with self._lock:
            return sorted(n for n in self.blobs if n.startswith(name_starts_with))

    def walk_blobs(self, name_starts_with: str = "", delimiter: str = "/") -> list[Any]:
        seen: dict[str, Any] = {}
        for n in self.list_blob_names(name_starts_with):
            rest = n[len(name_starts_with) :]
            head = rest.split(delimiter, 1)
            key = name_starts_with + head[0] + (delimiter if len(head) > 1 else "")
            seen.setdefault(key, SimpleNamespace(name=key))
        return list(seen.values())

    def delete_blob(self, name: str) -> None:
        with self._lock:
            if name not in self.blobs:
                raise ResourceNotFoundError(f"{name} not found")
            del self.blobs[name]

    def delete_blobs(self, *names: str) -> None:
        with self._lock:
            for name in names:
                self.blobs.pop(name, None)


UNIT_ENV = {
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
    "DATAVERSE_URL": "https://org.example.test",
    "DATAVERSE_TENANT_ID": "t",
    "DATAVERSE_CLIENT_ID": "c",
    "DATAVERSE_CLIENT_SECRET": "s",
}


def unit_settings(**values: str) -> Settings:
    """Real Settings (the one reader) from the minimal environment plus `values` (setting name -> text)."""
    return load_settings({**UNIT_ENV, **values})
