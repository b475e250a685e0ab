"""The one place that reads the environment.

`load_settings()` builds a frozen `Settings` from app settings (environment variables, which Core Tools
and the local runner fill from `local.settings.json`) and fails fast with `SettingsError` naming every
missing or malformed setting. Everything else receives values from here as explicit arguments.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from modeling.values import bounded_int

_NCRONTAB = re.compile(r"^\S+( \S+){5}$")
_ACCOUNT = re.compile(r"[a-z0-9]{3,24}")
_TIERS = ("premium", "enterprise")
_ORG_STATUSES = ("active", "expired", "deleted")


class SettingsError(Exception):
    """A setting is missing or malformed. The message names each offending setting."""

    code = "SettingsError"

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid app settings: " + "; ".join(problems))


@dataclass(frozen=True)
class Settings:
    storage_connection: str
    lake_container: str
    model_container: str
    dataverse_url: str
    tenant_id: str
    client_id: str
    client_secret: str | None
    client_cert_path: str | None
    client_cert_thumbprint: str | None
    use_managed_identity: bool
    authority_host: str
    scope: str
    ca_bundle: str | None
    sync_schedule: str
    scoring_schedule: str
    retrain_schedule: str
    license_tier: str
    monthly_quota: int | None
    org_status: str
    org_status_since: str | None
    training_queue: str
    scoring_queue: str
    sync_queue: str
    readiness_auc_ready: float
    readiness_auc_ok: float
    training_threads: int = 1
    backtest_delivery_seconds: int = 420
    scoring_batch_size: int = 5000
    job_stale_seconds: int = 20
    write_parallelism: int = 8
    storage_client_id: str | None = None  # the managed identity reaching storage (identity-based connection)
    storage_identity: bool = False
    appinsights_connection_string: str | None = None
    telemetry_sampling_ratio: float = 1.0
    worker_configures_telemetry: bool = False
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def authority(self) -> str:
        return f"{self.authority_host.rstrip('/')}/{self.tenant_id}"


def _bounded(get: Any, problems: list[str], name: str, default: int, low: int, high: int) -> int:
    """A whole-number setting within [low, high]; the default (and a problem) when it is not."""
    raw = get(name, str(default)) or str(default)
    value = bounded_int(raw, minimum=low, maximum=high)
    if value is None:
        problems.append(f"{name} must be a whole number from {low:,} to {high:,}, got {raw!r}")
        return default
    return value


def _storage(get: Any, problems: list[str]) -> tuple[str, bool, str | None]:
    """The storage connection: `AzureWebJobsStorage` (a connection string: Azurite, or keys), or the host's
    identity-based form (`AzureWebJobsStorage__accountName`, or `__blobServiceUri` + `__queueServiceUri`, with
    `__clientId` for a user-assigned identity), given to the SDK as endpoints without a key plus a managed
    identity credential. Returns (connection string, identity-based, client id)."""
    connection = get("AzureWebJobsStorage")
    account = get("AzureWebJobsStorage__accountName")
    blob_uri, queue_uri = get("AzureWebJobsStorage__blobServiceUri"), get("AzureWebJobsStorage__queueServiceUri")
    client_id = get("AzureWebJobsStorage__clientId")
    if connection:
        return connection, False, None
    if account and not _ACCOUNT.fullmatch(account):
        problems.append(f"AzureWebJobsStorage__accountName must be a storage account name, got {account!r}")
    elif account:
        blob_uri = blob_uri or f"https://{account}.blob.core.windows.net"
        queue_uri = queue_uri or f"https://{account}.queue.core.windows.net"
    if not (blob_uri and queue_uri):
        problems.append(
            "AzureWebJobsStorage is missing (or set AzureWebJobsStorage__accountName for a managed identity)"
        )
        return "", False, None
    name = account or urlparse(blob_uri).netloc.split(".")[0]
    return f"AccountName={name};BlobEndpoint={blob_uri};QueueEndpoint={queue_uri}", True, client_id


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every setting; raise SettingsError naming all that are wrong."""
    env = os.environ if env is None else env
    problems: list[str] = []

    def get(name: str, default: str | None = None, *, required: bool = False) -> str | None:
        value = env.get(name)
        if value is None or value.strip() == "":
            if required:
                problems.append(f"{name} is missing")
            return default
        return value.strip()

    def schedule(name: str, default: str) -> str:
        value = get(name, default) or default
        if not _NCRONTAB.match(value):
            problems.append(f"{name} must be a 6-field NCRONTAB expression, got {value!r}")
        return value

    def number(name: str, default: float, lo: float, hi: float) -> float:
        raw = get(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            problems.append(f"{name} must be a number, got {raw!r}")
            return default
        if not lo <= value <= hi:
            problems.append(f"{name} must be between {lo} and {hi}, got {raw!r}")
        return value

    def flag(name: str) -> bool:
        raw = (get(name, "false") or "false").lower()
        if raw not in ("true", "false", "1", "0", "yes", "no"):
            problems.append(f"{name} must be true or false, got {raw!r}")
        return raw in ("true", "1", "yes")

    storage, storage_identity, storage_client_id = _storage(get, problems)
    url = (get("DATAVERSE_URL", required=True) or "").rstrip("/")
    if url and not re.match(r"^https?://", url):
        problems.append(f"DATAVERSE_URL must start with https:// (or http:// for a local mock), got {url!r}")
    tenant = get("DATAVERSE_TENANT_ID", required=True) or ""
    client_id = get("DATAVERSE_CLIENT_ID", required=True) or ""
    secret = get("DATAVERSE_CLIENT_SECRET")
    cert_path = get("DATAVERSE_CLIENT_CERT_PATH")
    thumbprint = get("DATAVERSE_CLIENT_CERT_THUMBPRINT")
    managed = flag("DATAVERSE_USE_MANAGED_IDENTITY")
    if not (secret or cert_path or managed):
        problems.append(
            "DATAVERSE_CLIENT_SECRET is missing (or set DATAVERSE_CLIENT_CERT_PATH, "
            "or DATAVERSE_USE_MANAGED_IDENTITY=true)"
        )
    if cert_path and not thumbprint:
        problems.append("DATAVERSE_CLIENT_CERT_THUMBPRINT is missing (needed with DATAVERSE_CLIENT_CERT_PATH)")
    authority_host = get("DATAVERSE_AUTHORITY_HOST", "https://login.microsoftonline.com") or ""
    if not authority_host.startswith("https://"):
        problems.append(f"DATAVERSE_AUTHORITY_HOST must be an https:// URL, got {authority_host!r}")
    scope = get("DATAVERSE_SCOPE") or (f"{url}/.default" if url else "")
    ca_bundle = get("DATAVERSE_CA_BUNDLE")
    if ca_bundle and not os.path.isfile(ca_bundle):
        problems.append(f"DATAVERSE_CA_BUNDLE points to a file that does not exist: {ca_bundle!r}")

    tier = (get("LICENSE_TIER", "premium") or "premium").lower()
    if tier not in _TIERS:
        problems.append(f"LICENSE_TIER must be one of {', '.join(_TIERS)}, got {tier!r}")
    quota_raw = get("MONTHLY_SCORING_QUOTA")
    quota: int | None = 1500 if tier == "enterprise" else None
    if quota_raw is not None:
        quota = bounded_int(quota_raw, minimum=0)
        if quota is None:
            problems.append(f"MONTHLY_SCORING_QUOTA must be a whole number, got {quota_raw!r}")
    threads = _bounded(get, problems, "TRAINING_THREADS", 1, 1, 64)
    backtest_seconds = _bounded(get, problems, "BACKTEST_DELIVERY_SECONDS", 420, 0, 3600)
    batch_size = _bounded(get, problems, "SCORING_BATCH_SIZE", 5000, 10, 50_000)
    stale = _bounded(get, problems, "JOB_STALE_SECONDS", 20, 8, 600)
    write_parallelism = _bounded(get, problems, "DATAVERSE_WRITE_PARALLELISM", 8, 1, 52)
    org_status = (get("ORG_STATUS", "active") or "active").lower()
    if org_status not in _ORG_STATUSES:
        problems.append(f"ORG_STATUS must be one of {', '.join(_ORG_STATUSES)}, got {org_status!r}")
    org_since = get("ORG_STATUS_SINCE")
    if org_since and not re.match(r"^\d{4}-\d{2}-\d{2}", org_since):
        problems.append(f"ORG_STATUS_SINCE must be a date YYYY-MM-DD, got {org_since!r}")
    if org_status != "active" and not org_since:
        problems.append("ORG_STATUS_SINCE is missing (needed when ORG_STATUS is expired or deleted)")

    settings = Settings(
        storage_connection=storage,
        lake_container=get("LAKE_CONTAINER", "lake") or "lake",
        model_container=get("MODEL_CONTAINER", "models") or "models",
        dataverse_url=url,
        tenant_id=tenant,
        client_id=client_id,
        client_secret=secret,
        client_cert_path=cert_path,
        client_cert_thumbprint=thumbprint,
        use_managed_identity=managed,
        authority_host=authority_host,
        scope=scope,
        ca_bundle=ca_bundle,
        sync_schedule=schedule("SYNC_SCHEDULE", "0 0 */4 * * *"),
        scoring_schedule=schedule("SCORING_SCHEDULE", "0 30 5 * * *"),
        retrain_schedule=schedule("RETRAIN_SCHEDULE", "0 0 3 * * *"),
        license_tier=tier,
        monthly_quota=quota,
        org_status=org_status,
        org_status_since=org_since,
        training_queue=get("TRAINING_QUEUE", "training-jobs") or "training-jobs",
        scoring_queue=get("SCORING_QUEUE", "scoring-batches") or "scoring-batches",
        sync_queue=get("SYNC_QUEUE", "sync-jobs") or "sync-jobs",
        readiness_auc_ready=number("READINESS_AUC_READY", 0.75, 0.5, 1.0),
        readiness_auc_ok=number("READINESS_AUC_OK", 0.65, 0.5, 1.0),
        training_threads=threads,
        backtest_delivery_seconds=backtest_seconds,
        scoring_batch_size=batch_size,
        job_stale_seconds=stale,
        write_parallelism=write_parallelism,
        storage_client_id=storage_client_id,
        storage_identity=storage_identity,
        appinsights_connection_string=get("APPLICATIONINSIGHTS_CONNECTION_STRING"),
        # 1.0 keeps every trace: a fixed ratio keeps a share of a burst, where the distro's default rate
        # limit (5 traces/s) drops what a scoring run's burst sends after start-up.
        telemetry_sampling_ratio=number("TELEMETRY_SAMPLING_RATIO", 1.0, 0.0, 1.0),
        # The Python worker configures Azure Monitor itself when this is on: the app then never does.
        worker_configures_telemetry=flag("PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"),
    )
    if settings.readiness_auc_ok > settings.readiness_auc_ready:
        problems.append("READINESS_AUC_OK must not exceed READINESS_AUC_READY")
    if problems:
        raise SettingsError(problems)
    return settings


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once. Tests call `get_settings.cache_clear()` after changing env."""
    return load_settings()
