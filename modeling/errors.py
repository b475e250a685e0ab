"""Typed errors of the modeling domain: each carries an HTTP `status`, a `code` and a message."""

from __future__ import annotations

from typing import Any


class TypedError(Exception):
    """Base of every error meant for a caller (modeling, the model store, scoring): an HTTP `status`, a
    `code`, the message and optional `details`; `functions/http.py` maps them to a JSON error response."""

    status = 500
    code = "Error"

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None, **details: Any):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.details: dict[str, Any] | None = details or None

    @property
    def detail(self) -> dict[str, Any]:
        return self.details or {}

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        out.update(self.detail)
        return out


class ModelingError(TypedError):
    """Base of the modeling domain's errors (bad configurations and data are 4xx)."""

    status = 400
    code = "ModelingError"


class ConfigError(ModelingError):
    """An invalid configuration field (400): names the `field` and the `rule` it breaks."""

    status = 400
    code = "InvalidConfiguration"

    def __init__(self, field: str, rule: str):
        super().__init__(f"{field}: {rule}", field=field, rule=rule)
        self.field = field
        self.rule = rule


class ConflictError(ModelingError):
    """A request that conflicts with the registry's state (409): overlap, limit, name taken, delete rule."""

    status = 409
    code = "Conflict"

    def __init__(self, message: str, *, code: str = "Conflict", **detail: Any):
        super().__init__(message, code=code, **detail)


class InsufficientDataError(ModelingError):
    """Not enough closed opportunities to train (422): carries the counts found and needed."""

    status = 422
    code = "InsufficientData"

    def __init__(self, message: str, *, found: dict[str, int], needed: dict[str, int]):
        super().__init__(message, found=found, needed=needed)
        self.found = found
        self.needed = needed


class ExportError(ModelingError):
    """The ONNX export does not reproduce scikit-learn's probabilities (500: a defect, never bad input)."""

    status = 500
    code = "ExportMismatch"


class ModelMetaError(ModelingError):
    """A model version's meta cannot be used for scoring (500: corrupt or incompatible artifact)."""

    status = 500
    code = "InvalidModelMeta"
