"""Typed errors of the modeling domain: each carries an HTTP `status`, a `code` and a message."""

from __future__ import annotations

from typing import Any


class ModelingError(Exception):
    """Base of every error meant for a caller; `functions/http.py` maps `status`/`code` to a response."""

    status = 400
    code = "ModelingError"

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None, **detail: Any):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.detail: dict[str, Any] = detail

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        out.update(self.detail)
        return out


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
