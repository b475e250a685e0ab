"""Triggers (thin), the settings reader and the composition root."""

from __future__ import annotations

import importlib
import logging

import azure.functions as func

log = logging.getLogger(__name__)

# One module per concern, each exposing `bp`. The catch-all 404 (jobs) is registered last so hosts that
# honour registration order still prefer every specific route.
_CONCERNS = ("health", "sync", "models", "scoring", "jobs")


def blueprints() -> list[func.Blueprint]:
    found = []
    for name in _CONCERNS:
        try:
            module = importlib.import_module(f"functions.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"functions.{name}":
                log.warning("functions.%s is not built yet; its routes are absent", name)
                continue
            raise
        found.append(module.bp)
    return found
