"""CSV import through a JSON mapping (placeholder until the importer lands)."""

from __future__ import annotations

from typing import Any


class MappingError(ValueError):
    """An invalid mapping or CSV; the message names the offending field."""


def import_csv(org: Any, gen: Any, import_file: Any, mapping: Any) -> dict[str, Any]:
    raise MappingError("CSV import is not implemented yet")
