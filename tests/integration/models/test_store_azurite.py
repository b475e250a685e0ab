"""The ModelStore tests of tests/unit/model_store/test_store.py, run against Azurite (real ETags, create-only)."""

from __future__ import annotations

import uuid

import pytest

from connectors.blobs import container_client
from model_store.store import ModelStore
from tests.unit.model_store.test_store import *  # noqa: F403 - the same tests, with the fixture below

pytestmark = pytest.mark.integration


@pytest.fixture
def store(azurite) -> ModelStore:  # noqa: F811 - overrides the in-memory store
    return ModelStore(container_client(azurite.connection_string, f"models-{uuid.uuid4().hex[:10]}"))
