"""The model registry on one blob container: configurations, immutable versions, the published alias and
an audit log. Layout (docs/CONTRACTS.md "Model store"):

    configs/<name>.json                  configuration (camelCase) + status fields, updated with ETags
    versions/<name>/<NNNN>/model.onnx    immutable; the version number is claimed by this create-only write
    versions/<name>/<NNNN>/meta.json     metrics, spec, insights... + sha256 of model.onnx (create-only)
    aliases/<name>.json                  {"published", "previous", "reverted": [...], "publishedAt"}
    audit/<model>/<ts>-<uuid>.json       {"at", "actor", "action", "model", "version", "outcome", "detail"}
    backtests/<name>/...                 the last backtest's report and scores (model_store/backtests.py)
                                         (refusals counted per hour: model_store/audit.py)

Only ONNX and JSON are stored (never a pickle). Every load recomputes the sha256 of model.onnx and refuses
a mismatch with `IntegrityError`. A version is visible only once its meta.json exists, so a reader never
sees a half-written version; two trainings racing for one number both try the create-only write of
model.onnx and the loser moves on to the next number.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from azure.storage.blob import ContainerClient

from connectors import telemetry
from connectors.blobs import BlobChanged, BlobExists, BlobMissing, JsonBlobs, UpdateConflict
from connectors.clock import iso, utcnow
from model_store.audit import AuditLog
from model_store.backtests import Backtests
from model_store.errors import (
    ConcurrentUpdate,
    IntegrityError,
    ModelAlreadyExists,
    ModelNotFound,
    ModelStoreError,
    NothingToRevert,
    VersionNotFound,
)
from modeling.values import MODEL_NAME, matches

log = logging.getLogger(__name__)

_VERSION_DIR = re.compile(r"^versions/[^/]+/(\d{4,})/meta\.json$")
_MAX_CLAIM_ATTEMPTS = 50
_EMPTY_ALIAS: dict[str, Any] = {"published": None, "previous": None, "publishedAt": None, "reverted": []}


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class LoadedVersion:
    """A version's artifact, checked against its sha256."""

    name: str
    version: int
    onnx: bytes
    meta: dict[str, Any]
    etag: str | None = None  # of model.onnx as read: a changed ETag means the stored bytes changed


class ModelStore:
    def __init__(self, container: ContainerClient, *, clock: Callable[[], dt.datetime] = utcnow):
        self.container = container
        self.blobs = JsonBlobs(container)
        self.clock = clock
        self._audit = AuditLog(self.blobs, lambda: self.clock(), self._config_exists)
        # Append one audit record (create-only); a refusal is counted in its hour's summary instead.
        self.audit = self._audit.record
        self.backtests = Backtests(self.blobs, self._name)  # the last backtest report of each model

    # ------------------------------------------------------------------ paths

    @staticmethod
    def _name(name: str) -> str:
        """Names are letters, digits and '_' (the Dynamics rule), which also keeps blob paths safe."""
        if not matches(MODEL_NAME, name):
            raise ModelNotFound(
                f"no model named {name!r} (names are letters, digits and '_')", model=str(name)
            )
        return name

    @classmethod
    def _config_path(cls, name: str) -> str:
        return f"configs/{cls._name(name)}.json"

    @classmethod
    def _alias_path(cls, name: str) -> str:
        return f"aliases/{cls._name(name)}.json"

    @classmethod
    def _version_prefix(cls, name: str, version: int) -> str:
        return f"versions/{cls._name(name)}/{version:04d}/"

    def _now_iso(self) -> str:
        return iso(self.clock())

    # ------------------------------------------------------------------ configurations

    def create_config(self, name: str, config: dict[str, Any]) -> dict[str, Any]:
        """Store a new configuration; `ModelAlreadyExists` (409) if the name is taken."""
        doc = dict(config, name=name)
        doc.setdefault("createdAt", self._now_iso())
        doc["updatedAt"] = self._now_iso()
        try:
            self.blobs.write(self._config_path(name), doc, create_only=True)
        except BlobExists as exc:
            raise ModelAlreadyExists(f"a model named {name} already exists", model=name) from exc
        return doc

    def get_config(self, name: str) -> dict[str, Any]:
        doc, _ = self.get_config_with_etag(name)
        return doc

    def get_config_with_etag(self, name: str) -> tuple[dict[str, Any], str]:
        doc, etag = self.blobs.read_with_etag(self._config_path(name))
        if doc is None:
            raise ModelNotFound(f"no model named {name}", model=name)
        return dict(doc), str(etag)

    def list_configs(self) -> list[dict[str, Any]]:
        out = []
        for path in self.blobs.list("configs/"):
            doc = self.blobs.read(path)
            if doc is not None:  # deleted between list and read
                out.append(dict(doc))
        return sorted(out, key=lambda d: str(d.get("name", "")))

    def save_config(self, name: str, doc: dict[str, Any], *, etag: str) -> tuple[dict[str, Any], str]:
        """Replace the configuration only if it is unchanged since it was read with `etag`."""
        doc = dict(doc, name=name, updatedAt=self._now_iso())
        try:
            new_etag = self.blobs.write(self._config_path(name), doc, etag=etag)
        except BlobChanged as exc:
            raise ConcurrentUpdate(
                f"model {name} was changed by someone else; read it again and retry", model=name
            ) from exc
        except BlobMissing as exc:
            raise ModelNotFound(f"no model named {name}", model=name) from exc
        return doc, new_etag

    def update_config(
        self, name: str, mutate: Callable[[dict[str, Any]], dict[str, Any] | None]
    ) -> dict[str, Any]:
        """Read-modify-write with ETags (`JsonBlobs.update`), retried when another writer got in between.
        `mutate` may change the dict in place or return a new one; it may raise to abort."""
        path = self._config_path(name)

        def apply(current: Any) -> dict[str, Any]:
            if current is None:
                raise ModelNotFound(f"no model named {name}", model=name)
            doc = dict(current)
            changed = mutate(doc)
            return dict(changed if changed is not None else doc, name=name, updatedAt=self._now_iso())

        try:
            return dict(self.blobs.update(path, apply))
        except UpdateConflict as exc:
            raise ConcurrentUpdate(f"model {name} kept changing; try again", model=name) from exc

    def set_status(self, name: str, **fields: Any) -> dict[str, Any]:
        """Merge status fields (status, jobId, error, lastTrainedAt, ...) into the configuration."""

        def apply(doc: dict[str, Any]) -> None:
            doc.update(fields)

        return self.update_config(name, apply)

    def delete_model(self, name: str) -> int:
        """Delete the configuration, alias and every version (the audit log stays). Returns blobs deleted."""
        self.get_config(name)  # 404 when absent
        deleted = 0
        for path in self.blobs.list(f"versions/{self._name(name)}/"):
            deleted += int(self.blobs.delete(path))
        deleted += self.backtests.delete(name)
        deleted += int(self.blobs.delete(self._alias_path(name)))
        deleted += int(self.blobs.delete(self._config_path(name)))
        return deleted

    # ------------------------------------------------------------------ versions

    def versions(self, name: str) -> list[int]:
        """Complete versions (meta.json written), ascending."""
        found = []
        for path in self.blobs.list(f"versions/{self._name(name)}/"):
            m = _VERSION_DIR.match(path)
            if m:
                found.append(int(m.group(1)))
        return sorted(found)

    def save_version(self, name: str, onnx: bytes, meta: dict[str, Any]) -> int:
        """Store a new immutable version and return its number.

        The number is claimed by writing model.onnx create-only at the next free number; on a clash (another
        training claimed it first) the next number is tried. meta.json gets the sha256 of the bytes."""
        if not isinstance(onnx, bytes | bytearray) or not onnx:
            raise ModelStoreError("a model version needs non-empty ONNX bytes", code="InvalidArtifact")
        name = self._name(name)
        digest = sha256_hex(bytes(onnx))
        claimed = set(self._claimed_numbers(name))
        version = max(claimed, default=0) + 1
        for _ in range(_MAX_CLAIM_ATTEMPTS):
            try:
                self.blobs.put_bytes(self._version_prefix(name, version) + "model.onnx", bytes(onnx), create_only=True)
                break
            except BlobExists:
                version += 1
        else:
            raise ModelStoreError(f"could not claim a version number for {name}", code="VersionClaimFailed")
        full = dict(meta)
        full.update(
            {
                "model": name,
                "version": version,
                "sha256": digest,
                "onnxBytes": len(onnx),
                "createdAt": full.get("createdAt") or self._now_iso(),
            }
        )
        self.blobs.write(self._version_prefix(name, version) + "meta.json", full, create_only=True)
        log.info("stored model=%s@%d bytes=%d", name, version, len(onnx))
        return version

    def _claimed_numbers(self, name: str) -> list[int]:
        out = []
        for path in self.blobs.list(f"versions/{name}/"):
            parts = path.split("/")
            if len(parts) >= 3 and parts[2].isdigit():
                out.append(int(parts[2]))
        return out

    def get_meta(self, name: str, version: int) -> dict[str, Any]:
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise VersionNotFound(f"version must be a positive integer, got {version!r}", model=name)
        meta = self.blobs.read(self._version_prefix(name, version) + "meta.json")
        if meta is None:
            self.get_config(name)  # a missing model is a ModelNotFound, not a VersionNotFound
            raise VersionNotFound(f"model {name} has no version {version}", model=name, version=version)
        return dict(meta)

    def load_version(self, name: str, version: int) -> LoadedVersion:
        """The ONNX bytes and meta of a version, after checking the sha256 (IntegrityError on mismatch)."""
        meta = self.get_meta(name, version)
        try:
            onnx, etag = self.blobs.get_bytes_with_etag(self._version_prefix(name, version) + "model.onnx")
        except BlobMissing as exc:
            raise IntegrityError(
                f"model {name}@{version} has no model.onnx", model=name, version=version
            ) from exc
        actual = sha256_hex(onnx)
        if actual != meta.get("sha256"):
            log.error("sha256 mismatch model=%s@%d", name, version)
            raise IntegrityError(
                f"model {name}@{version} failed its integrity check: model.onnx does not match the sha256 "
                "recorded when it was trained; retrain or publish another version",
                model=name,
                version=version,
            )
        return LoadedVersion(name, version, onnx, meta, etag)

    def version_etag(self, name: str, version: int) -> str | None:
        """The current ETag of a version's model.onnx (a cache of a loaded version is valid while it holds:
        versions are immutable, so a change means the artifact was altered)."""
        return self.blobs.etag(self._version_prefix(name, version) + "model.onnx")

    # ------------------------------------------------------------------ aliases

    def get_alias(self, name: str) -> dict[str, Any]:
        doc = self.blobs.read(self._alias_path(name))
        return {**_EMPTY_ALIAS, "reverted": [], **(doc or {})}

    def latest_version(self, name: str, *, include_reverted: bool = False) -> int | None:
        """The newest version that was not reverted (None when there is none)."""
        reverted = set() if include_reverted else set(self.get_alias(name)["reverted"])
        candidates = [v for v in self.versions(name) if v not in reverted]
        return candidates[-1] if candidates else None

    def unpublished_retrains(self, name: str) -> list[int]:
        """Versions newer than the published one that are neither published nor reverted."""
        alias = self.get_alias(name)
        published = alias["published"] or 0
        return [v for v in self.versions(name) if v > published and v not in set(alias["reverted"])]

    def _update_alias(self, name: str, mutate: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        def apply(doc: Any) -> dict[str, Any]:
            alias = {**_EMPTY_ALIAS, "reverted": [], **(doc or {})}
            mutate(alias)
            return alias

        try:
            return dict(self.blobs.update(self._alias_path(name), apply))
        except UpdateConflict as exc:
            raise ConcurrentUpdate(f"the published alias of {name} kept changing; try again", model=name) from exc

    def publish(self, name: str, version: int | None = None) -> dict[str, Any]:
        """Point the published alias at `version` (default: the latest non-reverted version)."""
        self.get_config(name)
        if version is None:
            version = self.latest_version(name)
            if version is None:
                raise VersionNotFound(f"model {name} has no trained version to publish", model=name)
        meta = self.get_meta(name, version)  # VersionNotFound when absent

        def apply(alias: dict[str, Any]) -> None:
            if alias["published"] != version:
                alias["previous"] = alias["published"]
            alias["published"] = version
            alias["publishedAt"] = self._now_iso()
            alias["reverted"] = [v for v in alias["reverted"] if v != version]

        alias = self._update_alias(name, apply)
        auc = (meta.get("metrics") or {}).get("auc")
        if isinstance(auc, (int, float)):
            telemetry.MODEL_AUC.set(float(auc), {"model": name, "model.version": int(version)})
        return alias

    def revert(self, name: str) -> dict[str, Any]:
        """Discard the unpublished retrain(s) newer than the published version: the model goes back to the
        published (or, if none was ever published, the previous) version. `NothingToRevert` (409) otherwise.
        Versions stay stored (immutable); they are only marked reverted."""
        self.get_config(name)
        pending = self.unpublished_retrains(name)
        alias = self.get_alias(name)
        if alias["published"] is None and len(pending) < 2:
            raise NothingToRevert(
                f"model {name} has no retrain to revert ({len(pending)} version(s), none published)",
                model=name,
            )
        if not pending:
            raise NothingToRevert(
                f"model {name} has no unpublished retrain to revert (published version {alias['published']})",
                model=name,
            )
        if alias["published"] is None:
            pending = pending[1:]  # keep the first training; revert the retrains after it

        def apply(doc: dict[str, Any]) -> None:
            doc["reverted"] = sorted(set(doc["reverted"]) | set(pending))
            doc["revertedAt"] = self._now_iso()

        result = self._update_alias(name, apply)
        result["revertedVersions"] = pending
        return result

    def load_published(self, name: str) -> LoadedVersion:
        alias = self.get_alias(name)
        if alias["published"] is None:
            self.get_config(name)
            raise VersionNotFound(f"model {name} has no published version", model=name, code="NotPublished")
        return self.load_version(name, int(alias["published"]))

    # ------------------------------------------------------------------ audit (model_store.audit)


    def audit_log(self, model: str | None = None, *, limit: int = 200) -> list[dict[str, Any]]:
        """Newest first; optionally only one model's records (the first page of `audit_page`)."""
        return list(self._audit.page(model, limit=limit)["entries"])

    def audit_page(self, model: str | None = None, *, limit: int = 200, before: str | None = None) -> dict[str, Any]:
        """`{"entries", "next"}`: one page of the log, newest first (`next` is the cursor of the next page)."""
        return self._audit.page(model, limit=limit, before=before)

    def _config_exists(self, name: str) -> bool:
        return matches(MODEL_NAME, name) and self.blobs.read(self._config_path(name)) is not None
