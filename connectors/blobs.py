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
UPDATE_ATTEMPTS = 30


class BlobExists(ResourceExistsError):
    """A create-only write found the blob there already (callers catch this, not the SDK's type)."""


class BlobChanged(ResourceModifiedError):
    """An ETag-conditioned write found the blob changed since it was read."""


class BlobMissing(ResourceNotFoundError):
    """The blob does not exist."""


class UpdateConflict(Exception):
    """`JsonBlobs.update` kept losing to other writers for all its attempts."""


def container_client(
    connection_string: str, container: str, *, create: bool = True, credential: Any = None
) -> ContainerClient:
    """A container's client; `credential` (a managed identity) where the connection string has no key."""
    service = BlobServiceClient.from_connection_string(
        connection_string, credential=credential, api_version=API_VERSION
    )
    client = service.get_container_client(container)
    if create:
        try:
            client.create_container()
        except ResourceExistsError:
            pass
    return client


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
        """Write; with `etag` only if unchanged since read (else BlobChanged), with `create_only` only if
        absent (else BlobExists). Returns the new ETag."""
        body = json.dumps(doc, default=str, indent=1).encode()
        return self.put_bytes(path, body, etag=etag, create_only=create_only, content_type="application/json")

    def create(self, path: str, doc: Any) -> bool:
        """Write `doc` only if `path` does not exist yet; False when it did (a result, a marker, a claim)."""
        try:
            self.write(path, doc, create_only=True)
            return True
        except BlobExists:
            return False

    def update(self, path: str, mutate: Callable[[Any | None], Any], *, attempts: int = UPDATE_ATTEMPTS) -> Any:
        """Read-modify-write with ETags, the one retry loop for documents many writers change: `mutate`
        gets the current document (None when absent) and returns the new one (it may raise to abort).
        Retried with a short jittered wait when another writer got in between."""
        for attempt in range(attempts):
            doc, etag = self.read_with_etag(path)
            new = mutate(doc)
            try:
                self.write(path, new, etag=etag, create_only=etag is None)
                return new
            except (BlobChanged, BlobExists):
                time.sleep(min(0.5, 0.01 * 2**attempt) * random.random())  # noqa: S311 - jitter
        raise UpdateConflict(f"{path} kept changing for {attempts} attempts")

    def put_bytes(
        self,
        path: str,
        data: bytes,
        *,
        etag: str | None = None,
        create_only: bool = False,
        content_type: str = "application/octet-stream",
    ) -> str:
        kwargs: dict[str, Any] = {"content_settings": ContentSettings(content_type=content_type)}
        if create_only:
            kwargs["overwrite"] = False
        else:
            kwargs["overwrite"] = True
            if etag is not None:
                kwargs["etag"] = etag
                kwargs["match_condition"] = MatchConditions.IfNotModified
        blob = self.container.get_blob_client(path)
        try:
            result: dict[str, Any] = blob.upload_blob(data, **kwargs)
        except ResourceExistsError as exc:
            raise BlobExists(f"{path} exists") from exc
        except ResourceModifiedError as exc:
            raise BlobChanged(f"{path} changed since it was read") from exc
        except ResourceNotFoundError as exc:
            raise BlobMissing(f"{path} does not exist") from exc
        return str(result.get("etag", ""))

    def get_bytes(self, path: str) -> bytes:
        return self.get_bytes_with_etag(path)[0]

    def get_bytes_with_etag(self, path: str) -> tuple[bytes, str]:
        """The blob's bytes and the ETag of exactly those bytes (one download)."""
        try:
            downloader = self.container.download_blob(path)
            return bytes(downloader.readall()), str(downloader.properties.etag)
        except ResourceNotFoundError as exc:
            raise BlobMissing(f"{path} does not exist") from exc

    def etag(self, path: str) -> str | None:
        """The blob's current ETag (one HEAD request); None when it does not exist."""
        try:
            return str(self.container.get_blob_client(path).get_blob_properties().etag)
        except ResourceNotFoundError:
            return None

    def list(self, prefix: str) -> list[str]:
        return list(self.container.list_blob_names(name_starts_with=prefix))

    def delete(self, path: str) -> bool:
        try:
            self.container.delete_blob(path)
            return True
        except ResourceNotFoundError:
            return False
