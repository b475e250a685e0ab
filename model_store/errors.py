"""Typed errors of the model registry: each carries a `code` and a message; `functions/http.py` maps the
types to statuses and writes `{"error": {"code", "message", "details"}}`."""

from __future__ import annotations

from modeling.errors import TypedError


class ModelStoreError(TypedError):
    code = "ModelStoreError"


class ModelNotFound(ModelStoreError):
    refusal = True
    code = "ModelNotFound"


class VersionNotFound(ModelStoreError):
    refusal = True
    code = "VersionNotFound"


class InvalidVersion(ModelStoreError):
    """A version number that is not a positive integer."""

    refusal = True
    code = "InvalidVersion"


class ModelAlreadyExists(ModelStoreError):
    refusal = True
    code = "ModelExists"


class NothingToRevert(ModelStoreError):
    refusal = True
    code = "NothingToRevert"


class ConcurrentUpdate(ModelStoreError):
    """The configuration changed since the caller read it (its ETag no longer matches)."""

    refusal = True
    code = "PreconditionFailed"


class IntegrityError(ModelStoreError):
    """A stored model.onnx does not match the sha256 in its meta.json: the artifact was altered or torn.

    Not bad input: a failure of ours; the model is never loaded (and so never scores) in that state."""

    code = "ModelIntegrityError"
