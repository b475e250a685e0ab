"""Typed errors of the model registry: each carries an HTTP `status`, a `code` and a message.

`functions/http.py` maps them to `{"error": {"code", "message", "details"}}` with that status."""

from __future__ import annotations

from modeling.errors import TypedError


class ModelStoreError(TypedError):
    status = 500
    code = "ModelStoreError"


class ModelNotFound(ModelStoreError):
    status = 404
    code = "ModelNotFound"


class VersionNotFound(ModelStoreError):
    status = 404
    code = "VersionNotFound"


class ModelAlreadyExists(ModelStoreError):
    status = 409
    code = "ModelExists"


class NothingToRevert(ModelStoreError):
    status = 409
    code = "NothingToRevert"


class ConcurrentUpdate(ModelStoreError):
    """The configuration changed since the caller read it (its ETag no longer matches)."""

    status = 412
    code = "PreconditionFailed"


class IntegrityError(ModelStoreError):
    """A stored model.onnx does not match the sha256 in its meta.json: the artifact was altered or torn.

    Not bad input, so a 5xx; the model is never loaded (and so never scores) in that state."""

    status = 500
    code = "ModelIntegrityError"
