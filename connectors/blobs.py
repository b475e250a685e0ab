"""Blob Storage plumbing shared by the lake, the job store and the model store: clients and JSON blobs.

Azurite 3.35 rejects the newest service API version that azure-storage-blob sends by default, so local
runs either start Azurite with --skipApiVersionCheck (we do) or pin the version here (we do both)."""

from __future__ import annotations

import json
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
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

    def list(self, prefix: str) -> list[str]:
        return list(self.container.list_blob_names(name_starts_with=prefix))

    def delete(self, path: str) -> bool:
        try:
            self.container.delete_blob(path)
            return True
        except ResourceNotFoundError:
            return False
