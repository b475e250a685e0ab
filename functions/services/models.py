"""Admin operations of the "Predictive opportunity scoring" settings page: list, create, get, edit, delete,
train, publish, revert, performance, insights and the audit trail. Every action is audited with its actor
and outcome, refusals included. Validation rules live in `modeling.config` (one rule set); the registry in
`model_store`; training in `functions.services.training`.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from connectors.clock import utcnow
from functions.services import segments, training
from functions.services.scoring import drift
from model_store import lifecycle
from model_store.errors import InvalidVersion, VersionNotFound
from model_store.store import ModelStore
from modeling.values import AUDIT_CURSOR, MAX_INT_DIGITS, MODEL_NAME, bounded_int, matches

if TYPE_CHECKING:
    from functions.app_context import AppContext

log = logging.getLogger(__name__)
T = TypeVar("T")

STATUS_FIELDS = training._STATUS_FIELDS
REGISTRY_LEASE = "model-registry"  # held while a creation re-checks the rules and stores its configuration
REGISTRY_LEASE_WAIT = 20.0  # seconds a creation waits for another one before 409 RegistryBusy


def audited(
    store: ModelStore,
    action: str,
    actor: str,
    model: str | None,
    fn: Callable[[], T],
    *,
    version: int | None = None,
    detail: Any = None,
) -> T:
    """Run `fn`; audit it as succeeded, or refused (4xx typed error) / failed (anything else); re-raise."""
    try:
        result = fn()
    except Exception as exc:
        outcome = "refused" if getattr(exc, "refusal", False) else "failed"
        try:
            store.audit(
                action,
                actor=actor,
                model=model,
                version=version,
                outcome=outcome,
                detail={
                    "code": getattr(exc, "code", type(exc).__name__),
                    "message": str(exc)[:500],
                    **({"request": detail} if detail else {}),
                },
            )
        except Exception:  # noqa: BLE001 - the caller's error matters more than the audit write
            log.warning("could not audit a %s of model=%r", action, model)
        raise
    return result


def _existing(store: ModelStore) -> list[Any]:
    from modeling.config import ModelConfig

    return [ModelConfig.from_json(doc) for doc in store.list_configs()]


def _config_json(config: Any) -> dict[str, Any]:
    return dict(config.to_json())


# ---------------------------------------------------------------------------------------------- reads


def _version_summary(store: ModelStore, ctx: AppContext, name: str, version: int) -> dict[str, Any]:
    meta = store.get_meta(name, version)
    metrics = meta.get("metrics") or {}
    insights = meta.get("insights") or {}
    return {
        "version": version,
        "trainedAt": meta.get("trainedAt") or meta.get("createdAt"),
        "reason": meta.get("reason"),
        "actor": meta.get("actor"),
        "auc": metrics.get("auc"),
        "readiness": lifecycle.readiness(
            metrics.get("auc"), ready=ctx.settings.readiness_auc_ready, ok=ctx.settings.readiness_auc_ok
        ),
        "topFields": insights.get("top_fields"),
        "counts": meta.get("counts"),
    }


def _view(ctx: AppContext, doc: dict[str, Any], *, detailed: bool) -> dict[str, Any]:
    store: ModelStore = ctx.model_store
    name = str(doc["name"])
    alias = store.get_alias(name)
    versions = store.versions(name)
    reverted = set(alias["reverted"])
    latest = store.latest_version(name)
    view: dict[str, Any] = {
        "name": name,
        "status": doc.get("status") or "created",
        "publishedVersion": alias["published"],
        "publishedAt": alias["publishedAt"],
        "latestVersion": latest,
        "autoRetrain": bool(doc.get("autoRetrain", True)),
        "autoRetrainActive": lifecycle.auto_retrain_active(doc, alias["published"]),
        "lastTrainedAt": doc.get("lastTrainedAt"),
        "jobId": doc.get("jobId"),
        "error": doc.get("error"),
        "retrainNote": doc.get("retrainNote"),
        "canRevert": bool(store.unpublished_retrains(name))
        and (alias["published"] is not None or len([v for v in versions if v not in reverted]) > 1),
    }
    if latest is not None:
        summary = _version_summary(store, ctx, name, latest)
        view["readiness"] = summary["readiness"]
        view["auc"] = summary["auc"]
    else:
        view["readiness"] = None
    if detailed:
        view["configuration"] = {k: v for k, v in doc.items() if k not in STATUS_FIELDS}
        view["createdAt"] = doc.get("createdAt")
        view["createdBy"] = doc.get("createdBy")
        view["previousVersion"] = alias["previous"]
        view["drift"] = drift.view(drift.latest(ctx, name, alias["published"]))
        view["versions"] = [
            dict(
                _version_summary(store, ctx, name, v),
                reverted=v in reverted,
                published=v == alias["published"],
            )
            for v in versions
        ]
    return view


def list_models(ctx: AppContext) -> dict[str, Any]:
    docs = ctx.model_store.list_configs()
    from modeling.config import MAX_MODELS

    return {
        "models": [_view(ctx, d, detailed=False) for d in docs[:MAX_MODELS]],
        "count": len(docs),
        "limit": MAX_MODELS,
    }


def get_model(ctx: AppContext, name: str) -> tuple[dict[str, Any], str]:
    doc, etag = ctx.model_store.get_config_with_etag(name)
    return _view(ctx, doc, detailed=True), etag


def _resolve_version(store: ModelStore, name: str, version: Any) -> int:
    """`version` from a query string or body: a positive integer, or None for published else latest."""
    if version is None or version == "":
        alias = store.get_alias(name)
        chosen = alias["published"] or store.latest_version(name)
        if chosen is None:
            store.get_config(name)
            raise VersionNotFound(f"model {name} has no trained version yet", model=name)
        return int(chosen)
    if isinstance(version, float) and version.is_integer():
        version = int(version)  # JSON's 2.0 is the integer 2 (as JSON Schema counts it)
    number = bounded_int(version, minimum=1)
    if number is None:
        shown = repr(version)
        shown = shown[:40] + "..." if len(shown) > 40 else shown
        raise InvalidVersion(
            f"version must be a positive integer of at most {MAX_INT_DIGITS} digits, got {shown}", field="version"
        )
    return number


_PERFORMANCE_KEYS = (
    "accuracy",
    "precision",
    "recall",
    "f1",
    "conversionRate",
    "conversion_rate",
    "confusionMatrix",
    "confusion_matrix",
    "threshold",
    "auc",
    "brier",
    "ece",
    "calibration",
    "testSize",
    "test_size",
    "baselines",
)


def performance(ctx: AppContext, name: str, version: Any = None, segment: str | None = None) -> dict[str, Any]:
    """A version's test metrics, with accuracy per owner, stage, region and the `segment` column
    (functions.services.segments)."""
    store: ModelStore = ctx.model_store
    number = _resolve_version(store, name, version)
    meta = store.get_meta(name, number)
    metrics = meta.get("metrics") or {}
    return {
        "segments": segments.segment_performance(ctx, meta, segment or None),
        "model": name,
        "version": number,
        "trainedAt": meta.get("trainedAt") or meta.get("createdAt"),
        "readiness": lifecycle.readiness(
            metrics.get("auc"), ready=ctx.settings.readiness_auc_ready, ok=ctx.settings.readiness_auc_ok
        ),
        "readinessCutoffs": {"ready": ctx.settings.readiness_auc_ready, "ok": ctx.settings.readiness_auc_ok},
        "metrics": metrics,
        "choice": _choice(meta),
        "leakage": meta.get("leakage"),
        "counts": meta.get("counts"),
        "period": meta.get("period"),
        "published": store.get_alias(name)["published"] == number,
    }


def _choice(meta: dict[str, Any]) -> dict[str, Any]:
    """How the version's model and calibration were chosen on the validation fold (modeling.choice)."""
    cal = meta.get("calibration") or {}
    return {
        "candidate": meta.get("candidate") or meta.get("algorithm"),
        "rule": (meta.get("choice") or {}).get("rule"),
        "validationRows": (meta.get("choice") or {}).get("validation_rows"),
        "candidates": {
            name: {
                "validationAuc": c.get("validation_auc"),
                "behindBest": c.get("behind_best"),
                "standardError": c.get("se"),
                "iterations": c.get("iterations"),
            }
            for name, c in (meta.get("candidates") or {}).items()
        },
        "calibration": {"method": cal.get("method"), "fittedOn": cal.get("fitted_on"), "trials": cal.get("trials")},
    }


def insights(ctx: AppContext, name: str, version: Any = None) -> dict[str, Any]:
    store: ModelStore = ctx.model_store
    number = _resolve_version(store, name, version)
    meta = store.get_meta(name, number)
    found = meta.get("insights") or {}
    return {
        "model": name,
        "version": number,
        # what impacts scores in this org (the card's About view): mean |contribution| in points, a sentence
        "topAttributes": found.get("top_attributes") or [],
        "insights": found,
        "leakage": meta.get("leakage"),
    }


def audit_log(ctx: AppContext, name: str, *, limit: Any = None, before: Any = None) -> dict[str, Any]:
    """One page of the model's audit trail, newest first: `?limit=` (1-500, default 50) and `?before=`
    (the `next` cursor of the previous page)."""
    from model_store.audit import MAX_PAGE
    from modeling.errors import InvalidInput

    ctx.model_store.get_config(name)
    text = "50" if limit is None or limit == "" else str(limit).strip()
    if not text.isdigit() or not 1 <= int(text) <= MAX_PAGE:
        raise InvalidInput(f"limit must be an integer from 1 to {MAX_PAGE}, got {limit!r}", code="InvalidLimit")
    if before not in (None, "") and not matches(AUDIT_CURSOR, before):
        shown = repr(before)[:60]
        raise InvalidInput(f"before must be the `next` cursor of a previous page, got {shown}", code="InvalidCursor")
    page = ctx.model_store.audit_page(name, limit=int(text), before=str(before) if before else None)
    return {"model": name, **page}


# ---------------------------------------------------------------------------------------------- writes


def create_model(
    ctx: AppContext, payload: dict[str, Any], *, actor: str, now: dt.datetime | None = None
) -> dict[str, Any]:
    """Validate (400 / 409), check the lake holds enough data (422), store the configuration and queue its
    first training. Returns {"model", "job"}."""
    from connectors.lake import LeaseBusy
    from modeling.config import validate_with_metadata
    from modeling.errors import ConflictError

    store: ModelStore = ctx.model_store
    now = now or utcnow()
    # Audit records and log lines name the model only when the name is one (a refused name stays out).
    name_hint = payload.get("name") if matches(MODEL_NAME, payload.get("name")) else None

    def create() -> dict[str, Any]:
        metadata = training.load_metadata(ctx.lake)

        def validated() -> Any:
            return validate_with_metadata(payload, metadata, existing=_existing(store), now=now)

        config = validated()
        doc = _config_json(config)
        data = training.build_training_data(ctx, doc, now)  # InsufficientDataError (422) before anything
        # The 10-model limit and the overlap rule are checked again under the registry lease, so two
        # creations at once cannot both pass them (the slow data check above stays outside the lease).
        try:
            with ctx.lake.lease(REGISTRY_LEASE, duration=15, wait=REGISTRY_LEASE_WAIT):
                config = validated()
                doc = _config_json(config)
                doc.update({"status": "queued", "createdBy": actor})
                store.create_config(config.name, doc)
        except LeaseBusy as exc:
            raise ConflictError(
                f"another model is being created; retry in a few seconds ({exc})", code="RegistryBusy"
            ) from exc
        job = training.enqueue_training(ctx, config.name, reason="create", actor=actor)
        store.audit(
            "create",
            actor=actor,
            model=config.name,
            detail={"jobId": job["id"], "force": bool(payload.get("force", False)), "counts": data.counts},
        )
        return {"model": config.name, "job": job, "counts": data.counts}

    return audited(store, "create", actor, name_hint, create, detail={"fields": sorted(payload)})


def edit_model(
    ctx: AppContext, name: str, patch: dict[str, Any], *, actor: str, etag: str | None = None
) -> dict[str, Any]:
    """Apply an edit (attributes, stageAttributes, gradeRanges, autoRetrain; the documented rules) with an
    ETag check: `etag` from If-Match, else the one just read."""
    from modeling.config import ModelConfig, apply_edit

    store: ModelStore = ctx.model_store

    def edit() -> dict[str, Any]:
        doc, current_etag = store.get_config_with_etag(name)
        metadata = training.load_metadata(ctx.lake) if {"attributes", "stageAttributes"} & set(patch) else None
        new = apply_edit(
            ModelConfig.from_json(doc),
            patch,
            attributes=metadata["attributes"] if metadata else None,
            processes=metadata["processes"] if metadata else (),
        )
        status = {k: v for k, v in doc.items() if k in STATUS_FIELDS}
        saved, _ = store.save_config(name, {**_config_json(new), **status}, etag=etag or current_etag)
        store.audit("edit", actor=actor, model=name, detail={"fields": sorted(patch)})
        return saved

    audited(
        store,
        "edit",
        actor,
        name,
        edit,
        detail={"fields": sorted(patch) if isinstance(patch, dict) else None},
    )
    view, _ = get_model(ctx, name)
    return view


def delete_model(ctx: AppContext, name: str, *, actor: str) -> dict[str, Any]:
    """Delete (409 while auto-retrain is active, the Dynamics rule)."""
    from modeling.errors import ConflictError

    store: ModelStore = ctx.model_store

    def delete() -> dict[str, Any]:
        doc = store.get_config(name)
        if lifecycle.auto_retrain_active(doc, store.get_alias(name)["published"]):
            raise ConflictError(f"turn autoRetrain off before deleting {name}", code="AutoRetrainOn", model=name)
        blobs = store.delete_model(name)
        drift.forget(ctx, name)
        store.audit("delete", actor=actor, model=name, detail={"blobs": blobs})
        return {"model": name, "deleted": True}

    return audited(store, "delete", actor, name, delete)


def start_training(ctx: AppContext, name: str, *, actor: str) -> dict[str, Any]:
    """Retrain now (manual): 409 while a training is already queued or running."""
    from modeling.errors import ConflictError

    store: ModelStore = ctx.model_store

    def start() -> dict[str, Any]:
        doc = training.release_lost(ctx, store.get_config(name))
        if doc.get("status") in ("queued", "training") and doc.get("jobId"):
            job = ctx.jobs.get(str(doc["jobId"]))
            if job["status"] in ("queued", "running"):
                raise ConflictError(
                    f"model {name} is already training (job {job['id']})",
                    code="TrainingInProgress",
                    jobId=job["id"],
                )
        job = training.enqueue_training(ctx, name, reason="manual", actor=actor)
        store.audit("train-requested", actor=actor, model=name, detail={"jobId": job["id"]})
        return job

    return audited(store, "train-requested", actor, name, start)


def publish(ctx: AppContext, name: str, version: Any, *, actor: str) -> dict[str, Any]:
    store: ModelStore = ctx.model_store

    def run() -> dict[str, Any]:
        number = None if version is None else _resolve_version(store, name, version)
        alias = store.publish(name, number)
        store.set_status(name, retrainNote=None)
        store.audit(
            "publish",
            actor=actor,
            model=name,
            version=alias["published"],
            detail={"previous": alias["previous"]},
        )
        return {"model": name, **alias}

    return audited(store, "publish", actor, name, run)


def revert(ctx: AppContext, name: str, *, actor: str) -> dict[str, Any]:
    store: ModelStore = ctx.model_store

    def run() -> dict[str, Any]:
        result = store.revert(name)
        store.set_status(name, retrainNote=None)
        store.audit(
            "revert",
            actor=actor,
            model=name,
            version=store.latest_version(name),
            detail={"revertedVersions": result["revertedVersions"]},
        )
        return {"model": name, "currentVersion": store.latest_version(name), **result}

    return audited(store, "revert", actor, name, run)
