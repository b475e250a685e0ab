"""Blob Storage plumbing shared by the lake, the job store and the model store: clients and JSON blobs.

Azurite 3.35 rejects the newest service API version that azure-storage-blob sends by default, so local
runs either start Azurite with --skipApiVersionCheck (we do) or pin the version here (we do both)."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient, ContainerClient, ContentSettings

API_VERSION = "2025-11-05"


def container_client(connection_string: str, container: str, *, create: bool = True) -> ContainerClient:
    service = BlobServiceClient.from_connection_string(connection_string, api_version=API_VERSION)
    client = service.get_container_client(container)
    if create:
        try:
            client.create_container()
        except ResourceExistsError:
            pass
    return client


class DocumentBusy(Exception):
    """`JsonBlobs.update` kept losing the race for a document (other writers changed it every time)."""

    status = 503
    code = "DocumentBusy"


class JsonBlobs:
    """Small JSON documents on one container, with ETag-conditioned and create-only writes."""

    def __init__(self, container: ContainerClient):
        self.container = container

    def read(self, path: str) -> Any | None:
        doc, _ = self.read_with_etag(path)
        return doc

    def read_with_etag(self, path: str) -> tuple[Any | None, str | None]:
        try:
            downloader = self.container.download_blob(path)
        except ResourceNotFoundError:
            return None, None
        data = downloader.readall()
        return json.loads(data), downloader.properties.etag

    def write(self, path: str, doc: Any, *, etag: str | None = None, create_only: bool = False) -> str:
        """Write; with `etag` only if unchanged since read (412 -> ResourceModifiedError), with `create_only`
        only if absent (ResourceExistsError)."""
        body = json.dumps(doc, default=str, indent=1).encode()
        kwargs: dict[str, Any] = {"content_settings": ContentSettings(content_type="application/json")}
        if create_only:
            kwargs["overwrite"] = False
        else:
            kwargs["overwrite"] = True
            if etag is not None:
                kwargs["etag"] = etag
                kwargs["match_condition"] = MatchConditions.IfNotModified
        blob = self.container.get_blob_client(path)
        result: dict[str, Any] = blob.upload_blob(body, **kwargs)
        return str(result.get("etag", ""))

    def create(self, path: str, doc: Any) -> bool:
        """Write `doc` only if `path` does not exist yet; False (nothing written) when it does."""
        try:
            self.write(path, doc, create_only=True)
        except ResourceExistsError:
            return False
        return True

    def update(self, path: str, change: Callable[[Any | None], Any | None], *, attempts: int = 50) -> Any | None:
        """Read-modify-write under the document's ETag: `change(current or None)` returns the new document,
        or None to leave it as it is; on a concurrent write it is called again on the newer document.
        Returns the document as stored. DocumentBusy (503) after `attempts` lost races."""
        for attempt in range(attempts):
            current, etag = self.read_with_etag(path)
            new = change(current)
            if new is None:
                return current
            try:
                if etag is None:
                    self.write(path, new, create_only=True)
                else:
                    self.write(path, new, etag=etag)
                return new
            except (ResourceExistsError, ResourceModifiedError):
                time.sleep(min(0.5, 0.01 * 2 ** min(attempt, 6)) * (0.5 + random.random()))  # noqa: S311
        raise DocumentBusy(f"{path} kept changing; try again")

    def list(self, prefix: str) -> list[str]:
        return list(self.container.list_blob_names(name_starts_with=prefix))

    def delete(self, path: str) -> bool:
        try:
            self.container.delete_blob(path)
            return True
        except ResourceNotFoundError:
            return False
