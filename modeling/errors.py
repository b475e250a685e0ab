"""Typed errors of the domain: each carries a `code` and a message (and optional details), never an HTTP
status: the one table in `functions/http.py` maps error types to statuses at the edge."""

from __future__ import annotations

from typing import Any


class TypedError(Exception):
    """Base of every error meant for a caller (modeling, the model store, the services): a `code`, the
    message and optional `details`; `functions/http.py` turns them into a JSON error with the status its
    table gives the error's type."""

    code = "Error"
    # True when the request was refused for what it asked (bad input, a rule, a conflict); False for a
    # failure of ours. The audit log and the logs tell the two apart by it.
    refusal = False

    def __init__(self, message: str, *, code: str | None = None, **details: Any):
        super().__init__(message)
        self.message = message
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
    """Base of the modeling domain's errors (bad configurations and data are refusals)."""

    refusal = True
    code = "ModelingError"


class ConfigError(ModelingError):
    """An invalid configuration field (400): names the `field` and the `rule` it breaks."""

    code = "InvalidConfiguration"

    def __init__(self, field: str, rule: str):
        super().__init__(f"{field}: {rule}", field=field, rule=rule)
        self.field = field
        self.rule = rule


class ConflictError(ModelingError):
    """A request that conflicts with the registry's state (409): overlap, limit, name taken, delete rule."""

    code = "Conflict"

    def __init__(self, message: str, *, code: str = "Conflict", **detail: Any):
        super().__init__(message, code=code, **detail)


class InsufficientDataError(ModelingError):
    """Not enough closed opportunities to train (422): carries the counts found and needed."""

    code = "InsufficientData"

    def __init__(self, message: str, *, found: dict[str, int], needed: dict[str, int]):
        super().__init__(message, found=found, needed=needed)
        self.found = found
        self.needed = needed


class ExportError(ModelingError):
    """The ONNX export does not reproduce scikit-learn's probabilities (a defect, never bad input)."""

    refusal = False

    code = "ExportMismatch"


class ModelMetaError(ModelingError):
    """A model version's meta cannot be used for scoring (corrupt or incompatible artifact)."""

    refusal = False

    code = "InvalidModelMeta"


class InvalidInput(TypedError):
    """Something a caller sent cannot be used; the message names what was wrong."""

    refusal = True
    code = "BadRequest"


class FieldError(InvalidInput):
    """A request field with a bad value (400): names the `field` and the `rule` it breaks."""

    code = "InvalidField"

    def __init__(self, field: str, rule: str, *, code: str | None = None):
        super().__init__(f"{field}: {rule}", code=code, field=field, rule=rule)
        self.field = field
        self.rule = rule


class NotFoundError(TypedError):
    """What the caller asked for does not exist."""

    refusal = True
    code = "NotFound"


class Unavailable(TypedError):
    """A dependency is busy or down; trying again later may work."""

    code = "Unavailable"
