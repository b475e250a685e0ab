"""Composition root: builds every client from Settings, once per process, lazily.

Trigger modules ask `get_context()` for what they need; tests build an `AppContext` from their own
Settings (pointing at Azurite and the mock) and install it with `set_context()`."""

from __future__ import annotations

import functools
import threading
from typing import TYPE_CHECKING, Any

from connectors import telemetry
from connectors.blobs import JsonBlobs, container_client
from connectors.jobs import JobStore
from connectors.queues import QueueSender
from functions.settings import Settings, get_settings

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient

    from connectors.dataverse import DataverseClient
    from connectors.lake import Lake
    from model_store.store import ModelStore


class AppContext:
    """What a service needs, built lazily from Settings: containers, the lake, the model store, the job
    store, the Dataverse client and queue senders."""

    def __init__(self, settings: Settings):
        self.settings = settings

    @functools.cached_property
    def lake_container(self) -> ContainerClient:
        return container_client(self.settings.storage_connection, self.settings.lake_container, credential=self._cred)

    @functools.cached_property
    def model_container(self) -> ContainerClient:
        return container_client(self.settings.storage_connection, self.settings.model_container, credential=self._cred)

    @functools.cached_property
    def jobs(self) -> JobStore:
        stale = float(self.settings.job_stale_seconds)  # a worker beats 4 times within it
        return JobStore(JsonBlobs(self.lake_container), heartbeat_s=stale / 4, stale_after_s=stale)

    @functools.cached_property
    def lake(self) -> "Lake":
        from connectors.delta import location_from_connection_string
        from connectors.lake import Lake

        s = self.settings
        location = location_from_connection_string(
            s.storage_connection, s.lake_container, client_id=s.storage_client_id
        )
        return Lake(self.lake_container, location)

    @functools.cached_property
    def model_store(self) -> "ModelStore":
        from model_store.store import ModelStore

        return ModelStore(self.model_container)

    @functools.cached_property
    def dataverse(self) -> "DataverseClient":
        from connectors.auth import token_provider_from
        from connectors.dataverse import DataverseClient

        s = self.settings
        provider = token_provider_from(
            authority=s.authority,
            client_id=s.client_id,
            scope=s.scope,
            client_secret=s.client_secret,
            cert_path=s.client_cert_path,
            cert_thumbprint=s.client_cert_thumbprint,
            managed_identity=s.use_managed_identity,
            ca_bundle=s.ca_bundle,
        )
        return DataverseClient(s.dataverse_url, provider, ca_bundle=s.ca_bundle)

    def queue(self, name: str) -> QueueSender:
        return QueueSender(self.settings.storage_connection, name, credential=self._cred)

    @functools.cached_property
    def _cred(self) -> Any:
        """The managed identity reaching storage when the connection is identity-based (no key), else None."""
        if not self.settings.storage_identity:
            return None
        from azure.identity import ManagedIdentityCredential

        return ManagedIdentityCredential(client_id=self.settings.storage_client_id)


_lock = threading.Lock()
_context: AppContext | None = None


def get_context() -> AppContext:
    """The process-wide context, built on first use; that is also when telemetry export starts (once, when
    APPLICATIONINSIGHTS_CONNECTION_STRING is set), so importing function_app stays cheap."""
    global _context
    with _lock:
        if _context is None:
            settings = get_settings()
            telemetry.configure_azure_monitor_once(
                settings.appinsights_connection_string,
                sampling_ratio=settings.telemetry_sampling_ratio,
                worker_configures=settings.worker_configures_telemetry,
            )
            _context = AppContext(settings)
        return _context


def set_context(context: AppContext | None) -> None:
    """Install a context (tests), or None to rebuild from settings on next use."""
    global _context
    with _lock:
        _context = context
