"""Training orchestration: lake -> modeling -> model store, as a queued job; and the auto-retrain timer.

`train()` reads the lake's tables into pandas, builds the training set and trains through `modeling`,
stores the version (ONNX + JSON only) in the registry, records status and audit, and, for an automatic
retrain, applies the auto-publish rule of `model_store.lifecycle` with both versions' AUC measured on the
new version's test records (the current published version scored through the shared `Scorer`).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from connectors import telemetry
from connectors.clock import iso, utcnow
from connectors.jobs import JobNotFound
from functions.services.jobs import execute
from functions.services.jobs import record_poisoned as poisoned_job
from functions.services.scoring import drift
from model_store import lifecycle
from model_store.errors import ModelNotFound
from model_store.store import ModelStore

if TYPE_CHECKING:
    from functions.app_context import AppContext

log = logging.getLogger(__name__)

LAKE_TABLES = ("opportunity", "account", "systemuser", "opportunitysalesprocess", "processstage", "workflow")
REASONS = ("create", "manual", "auto-retrain")
AUTO_ACTOR = "system:auto-retrain"


# ---------------------------------------------------------------------------------------------- lake inputs


def load_metadata(lake: Any) -> dict[str, Any]:
    """Org metadata the sync keeps in the lake: attributes per table, option sets, business process flows."""
    attributes = {
        table: lake.read_json(f"metadata/attributes/{table}.json") or [] for table in ("opportunity", "account")
    }
    return {
        "attributes": attributes,
        "optionsets": lake.read_json("metadata/optionsets.json") or {},
        "processes": lake.read_json("metadata/processes.json") or [],
    }


def load_tables(
    lake: Any, *, history: bool = True, history_columns: Sequence[str] | None = None
) -> dict[str, pd.DataFrame]:
    """The lake's current tables as pandas frames, plus `opportunity_history` (point-in-time values; only
    `history_columns` when given)."""
    from modeling.dataset.tables import BPF_COLUMNS

    columns: dict[str, Sequence[str]] = {"opportunitysalesprocess": BPF_COLUMNS}
    tables = {name: lake.read_current(name, columns.get(name)).to_pandas() for name in LAKE_TABLES}
    if history:
        tables["opportunity_history"] = lake.read_history("opportunity", history_columns).to_pandas()
    return tables


def build_training_data(ctx: AppContext, config_doc: dict[str, Any], now: dt.datetime) -> Any:
    """The modeling TrainingData for a stored configuration; raises InsufficientDataError (422)."""
    from modeling.config import ModelConfig
    from modeling.dataset import build_training_frame
    from modeling.dataset.history import history_columns

    started = time.perf_counter()
    config = ModelConfig.from_json(config_doc)
    metadata = load_metadata(ctx.lake)
    tables = load_tables(ctx.lake, history_columns=history_columns(config, metadata))
    data = build_training_frame(tables, metadata, config, now)
    log.info(
        "training set model=%s rows=%d counts=%s in %.1f s",
        config_doc.get("name"),
        len(data.frame),
        data.counts,
        time.perf_counter() - started,
    )
    return data


# ---------------------------------------------------------------------------------------------- training


def train_model(
    data: Any,
    config_doc: dict[str, Any],
    *,
    seed: int = 0,
    readiness: tuple[float, float] | None = None,
    threads: int | None = None,
) -> Any:
    """modeling.train.train_model on a stored configuration -> TrainedModel(onnx_bytes, meta, ...)."""
    from modeling.config import ModelConfig
    from modeling.evaluation import DEFAULT_READINESS
    from modeling.train import train_model as fit

    return fit(
        data, ModelConfig.from_json(config_doc), seed=seed, readiness=readiness or DEFAULT_READINESS, threads=threads
    )


def scorer(onnx: bytes, meta: dict[str, Any]) -> Any:
    """The shared modeling Scorer for a stored version."""
    from modeling.scoring import Scorer

    return Scorer(onnx, meta)


def _summary(meta: dict[str, Any], ctx: AppContext) -> dict[str, Any]:
    metrics = meta.get("metrics") or {}
    auc = metrics.get("auc")
    return {
        "auc": auc,
        "accuracy": metrics.get("accuracy"),
        "f1": metrics.get("f1"),
        "readiness": lifecycle.readiness(auc, ready=ctx.settings.readiness_auc_ready, ok=ctx.settings.readiness_auc_ok),
    }


@telemetry.traced("training.run")
def train(
    ctx: AppContext,
    name: str,
    *,
    reason: str,
    actor: str,
    job_id: str | None = None,
    now: dt.datetime | None = None,
    seed: int = 0,
    trigger: str | None = None,
) -> dict[str, Any]:
    """Train a new version of `name` and register it. Returns version info (also the job's result).
    `trigger`: why an automatic retrain started early (kept in the version's meta and the audit).

    On any failure the configuration's status becomes `failed` with the error, the audit log records it,
    and the exception propagates (the queue worker turns it into a failed job)."""
    store: ModelStore = ctx.model_store
    now = now or utcnow()
    started = time.perf_counter()
    telemetry.annotate(model=name, **{"job.id": job_id or "", "training.reason": reason})
    config_doc = store.get_config(name)
    store.set_status(name, status="training", jobId=job_id, error=None, trainingStartedAt=iso(now))
    try:
        data = build_training_data(ctx, config_doc, now)
        cutoffs = (ctx.settings.readiness_auc_ready, ctx.settings.readiness_auc_ok)
        trained = train_model(data, config_doc, seed=seed, readiness=cutoffs, threads=ctx.settings.training_threads)
        meta = dict(trained.meta)
        meta.update(
            {
                "trainedAt": iso(now),
                "reason": reason,
                "actor": actor,
                "jobId": job_id,
                "counts": meta.get("counts") or data.counts,
                "config": {k: v for k, v in config_doc.items() if k not in _STATUS_FIELDS},
                "pipelineSeconds": round(time.perf_counter() - started, 2),
                **({"trigger": trigger} if trigger else {}),
            }
        )
        version = store.save_version(name, trained.onnx_bytes, meta)
        info: dict[str, Any] = {"model": name, "version": version, "reason": reason, **_summary(meta, ctx)}
        info["counts"] = data.counts
        if trigger:
            info["trigger"] = trigger
        decision = None
        if reason == "auto-retrain":
            decision = _auto_publish(ctx, name, version, meta, data, trained, now)
            info["autoPublish"] = decision.to_json()
        store.set_status(
            name,
            status="ready",
            error=None,
            lastTrainedAt=iso(now),
            lastTrainedVersion=version,
            retrainNote=None if decision is None or decision.publish else decision.reason,
        )
        store.audit(
            "train",
            actor=actor,
            model=name,
            version=version,
            detail={
                "reason": reason,
                "trigger": trigger,
                "jobId": job_id,
                "auc": info["auc"],
                "counts": data.counts,
                "seconds": meta["pipelineSeconds"],
            },
        )
        telemetry.annotate(**{"model.version": version})
        telemetry.TRAINING_DURATION.record(time.perf_counter() - started, {"model": name})
        log.info(
            "trained model=%s@%d reason=%s auc=%s in %.1f s",
            name,
            version,
            reason,
            info["auc"],
            time.perf_counter() - started,
        )
        return info
    except Exception as exc:
        error = {"code": str(getattr(exc, "code", type(exc).__name__)), "message": str(exc)[:1000]}
        try:
            store.set_status(name, status="failed", error=error)
            store.audit(
                "train",
                actor=actor,
                model=name,
                outcome="failed",
                detail={"reason": reason, "jobId": job_id, "error": error},
            )
        except Exception:  # noqa: BLE001 - the model may have been deleted meanwhile; keep the first error
            log.warning("could not record the failed training of model=%s", name)
        raise


_STATUS_FIELDS = frozenset(
    {
        "status",
        "jobId",
        "error",
        "trainingStartedAt",
        "lastTrainedAt",
        "lastTrainedVersion",
        "retrainNote",
        "createdAt",
        "updatedAt",
        "createdBy",
    }
)


def _auto_publish(
    ctx: AppContext, name: str, version: int, meta: dict[str, Any], data: Any, trained: Any, now: dt.datetime
) -> lifecycle.PublishDecision:
    """Publish the retrained `version` if the lifecycle rule says so; else record why it was kept."""
    store: ModelStore = ctx.model_store
    new_auc = (meta.get("metrics") or {}).get("auc")
    current_auc = None
    current_trained_at = None
    current_version = store.get_alias(name)["published"]
    try:
        current = store.load_published(name)
        current_trained_at = lifecycle.parse_time(current.meta.get("trainedAt") or current.meta.get("createdAt"))
        rows = np.asarray(trained.test_index if trained.test_index is not None else [], dtype=int)
        if len(rows):
            frame = data.frame.iloc[rows].reset_index(drop=True)
            labels = np.asarray(data.labels)[rows]
            scored = scorer(current.onnx, current.meta).score(frame, with_reasons=False)
            column = "probability" if "probability" in scored.columns else "score"
            current_auc = _auc(labels, scored[column].to_numpy(dtype=float))
    except Exception as exc:  # noqa: BLE001 - a broken current version must not block the decision
        log.warning("could not score model=%s@%s on the new test set: %s", name, current_version, type(exc).__name__)
    decision = lifecycle.auto_publish_decision(
        new_auc=new_auc, current_auc=current_auc, current_trained_at=current_trained_at, now=now
    )
    detail = {
        "decision": decision.to_json(),
        "newAuc": new_auc,
        "currentAucSameRecords": current_auc,
        "currentVersion": current_version,
    }
    if decision.publish:
        store.publish(name, version)
        store.audit("publish", actor=AUTO_ACTOR, model=name, version=version, detail=detail)
    else:
        store.audit(
            "publish",
            actor=AUTO_ACTOR,
            model=name,
            version=version,
            outcome="kept-unpublished",
            detail=detail,
        )
    return decision


def _auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    if len(set(labels.tolist())) < 2:
        return None
    return float(roc_auc_score(labels, scores))


# ---------------------------------------------------------------------------------------------- jobs


def enqueue_training(
    ctx: AppContext, name: str, *, reason: str, actor: str, trigger: str | None = None
) -> dict[str, Any]:
    """Create a `train` job, mark the model as training and queue the message for `train_worker`; `trigger`
    says why an automatic retrain started early (drift)."""
    params = {"model": name, "reason": reason, "actor": actor, **({"trigger": trigger} if trigger else {})}
    job = ctx.jobs.create("train", params)
    ctx.model_store.set_status(name, status="training", jobId=job["id"], error=None)
    ctx.queue(ctx.settings.training_queue).send({"jobId": job["id"], **params})
    log.info("queued training job=%s model=%s reason=%s trigger=%s", job["id"], name, reason, trigger or "-")
    return job


def run_training_job(
    ctx: AppContext, message: dict[str, Any], *, trainer: Callable[..., dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The queue worker's body: claim the job, train, and end the job succeeded or failed (never silently).

    A message of a finished job, or of a job another live worker trains, does nothing; one whose worker
    died takes it over (`functions.services.jobs.execute`). Errors are recorded, not re-raised, so the host
    does not retry a training that failed for a reason a retry would not fix."""
    trainer = trainer or train
    job_id = str(message.get("jobId") or "")
    name = str(message["model"])
    reason = str(message.get("reason") or "manual")
    actor = str(message.get("actor") or "anonymous")
    extra = {"trigger": str(message["trigger"])} if message.get("trigger") else {}
    return execute(
        ctx.jobs,
        job_id,
        lambda: trainer(ctx, name, reason=reason, actor=actor, job_id=job_id, **extra),
        what="training",
    )


def release_lost(ctx: AppContext, config: dict[str, Any]) -> dict[str, Any]:
    """A model left `training` by a worker that died: end its job `failed` (WorkerLost) and the model
    `failed` with the reason, so it can be trained again. Returns the configuration as it now is."""
    job_id = config.get("jobId")
    if config.get("status") not in ("queued", "training") or not job_id:
        return config
    try:
        job = ctx.jobs.get(str(job_id))
    except JobNotFound:
        job = {"status": "failed", "error": {"code": "JobNotFound", "message": f"job {job_id} does not exist"}}
    else:
        if job["status"] not in ("succeeded", "failed"):
            job = ctx.jobs.abandon(str(job_id), LOST_MESSAGE) or job
    if job["status"] not in ("succeeded", "failed"):
        return config
    return fail_model(ctx, str(config["name"]), str(job_id), job.get("error") or {})


LOST_MESSAGE = "the training's worker stopped (killed or timed out) without finishing; train again"


def fail_model(ctx: AppContext, name: str, job_id: str, error: dict[str, Any]) -> dict[str, Any]:
    """Mark `name` failed with `error` if its current job is still `job_id` (a newer training stands)."""

    def apply(doc: dict[str, Any]) -> None:
        if doc.get("jobId") == job_id and doc.get("status") in ("queued", "training"):
            doc.update(status="failed", error=error or {"code": "WorkerLost", "message": LOST_MESSAGE})

    try:
        return ctx.model_store.update_config(name, apply)
    except ModelNotFound:
        return {"name": name}


def record_poisoned(ctx: AppContext, body: bytes | str) -> dict[str, Any] | None:
    """The host gave up on a training message: the job and its model end `failed` (WorkerLost)."""
    job = poisoned_job(ctx, body, what="training")
    if job is not None and job.get("params", {}).get("model"):
        fail_model(ctx, str(job["params"]["model"]), str(job["id"]), dict(job.get("error") or {}))
    return job


def retrain_due_models(ctx: AppContext, *, now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """The daily timer: queue a retraining for every published model with auto-retrain on whose last
    training is at least 15 days old, or earlier on drift (`lifecycle.early_retrain`, recorded as the
    job's and version's `trigger`). Returns the queued jobs."""
    now = now or utcnow()
    store: ModelStore = ctx.model_store
    jobs = []
    configs = store.list_configs()
    for config in configs:
        name = str(config["name"])
        config = release_lost(ctx, config)
        published = store.get_alias(name)["published"]
        if lifecycle.retrain_due(config, published, now):
            jobs.append(enqueue_training(ctx, name, reason="auto-retrain", actor=AUTO_ACTOR))
        elif trigger := lifecycle.early_retrain(config, published, drift.latest(ctx, name, published), now):
            log.warning("auto-retrain: model=%s@%s retrained early: %s", name, published, trigger)
            jobs.append(enqueue_training(ctx, name, reason="auto-retrain", actor=AUTO_ACTOR, trigger=trigger))
    log.info("auto-retrain: %d model(s) due of %d", len(jobs), len(configs))
    return jobs
