"""The registry's audit log: one JSON record per action, under the model's own prefix, so reading one
model's trail lists only its records and reads only the page asked for.

    audit/<model>/<yyyymmddThhmmssffffff>Z-<uuid>.json            one action (create-only, never rewritten)
    audit/<model>/<yyyymmddThh>5959999999Z-refused-<action>-<code>.json
                                                                   every refusal of that kind in that hour
    audit/_registry/...                                            actions without a model, and refusals
                                                                   naming a model that does not exist

Refusals (4xx) are counted, not appended: one summary per (model, action, code, UTC hour) carries the
first refusal, `count`, `lastAt` and up to 10 distinct actors (and requested names), so a client repeating
a bad request grows the log by at most one record per hour and kind, never by one per request.
Records written before this layout (`audit/<yyyy-mm-dd>/...`) are listed only by the registry-wide log.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from connectors.blobs import JsonBlobs
from connectors.clock import iso
from modeling.errors import InvalidInput

log = logging.getLogger(__name__)

PREFIX = "audit/"
REGISTRY = "_registry"
MAX_PAGE = 500
SAMPLES = 10
_SAFE = re.compile(r"[^A-Za-z0-9_]")


class AuditLog:
    def __init__(self, blobs: JsonBlobs, clock: Callable[[], dt.datetime], exists: Callable[[str], bool]):
        self.blobs = blobs
        self.clock = clock
        self.exists = exists  # whether a model name is a stored model (refusals of others go to _registry)

    def record(
        self,
        action: str,
        *,
        actor: str,
        model: str | None,
        version: int | None = None,
        outcome: str = "succeeded",
        detail: Any = None,
    ) -> dict[str, Any]:
        """Append one record, or, for a refusal, count it in its hour's summary."""
        now = self.clock().astimezone(dt.UTC)
        entry = {
            "at": iso(now),
            "actor": actor or "anonymous",
            "action": action,
            "model": model,
            "version": version,
            "outcome": outcome,
            "detail": detail,
        }
        if outcome == "refused":
            return self._refused(entry, now)
        path = f"{PREFIX}{model or REGISTRY}/{now:%Y%m%dT%H%M%S%f}Z-{uuid.uuid4().hex[:12]}.json"
        self.blobs.write(path, entry, create_only=True)
        log.info("audit action=%s model=%r version=%s outcome=%s", action, model, version, outcome)
        return entry

    def _refused(self, entry: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
        model = entry["model"]
        known = isinstance(model, str) and self.exists(model)
        code = _SAFE.sub("", str((entry["detail"] or {}).get("code", "") if isinstance(entry["detail"], dict) else ""))
        name = f"{now:%Y%m%dT%H}5959999999Z-refused-{_SAFE.sub('', entry['action'])}-{code or 'Refused'}.json"
        path = f"{PREFIX}{model if known else REGISTRY}/{name}"

        def count(doc: Any) -> dict[str, Any]:
            summary = dict(doc) if doc else {**entry, "model": model if known else None, "count": 0, "actors": []}
            summary["count"] = int(summary.get("count", 0)) + 1
            summary["lastAt"] = entry["at"]
            summary["lastStamp"] = f"{now:%Y%m%dT%H%M%S%f}Z"  # orders it among the records (to the µs)
            summary["actors"] = _sample(summary.get("actors") or [], entry["actor"])
            if not known and model:
                summary["requestedModels"] = _sample(summary.get("requestedModels") or [], str(model)[:100])
            return summary

        summary = dict(self.blobs.update(path, count))
        log.info("audit action=%s model=%r outcome=refused count=%d", entry["action"], model, summary["count"])
        return summary

    def page(self, model: str | None = None, *, limit: int = 200, before: str | None = None) -> dict[str, Any]:
        """Newest first: at most `limit` records older than the cursor `before` (the `next` of the previous
        page), and the cursor of the next page (None at the end). Lists names; reads only the page."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"limit must be 1 to {MAX_PAGE}", code="InvalidLimit")
        names = sorted(self.blobs.list(PREFIX + (f"{model}/" if model else "")), key=_key, reverse=True)
        if before:
            names = [n for n in names if _key(n) < before]
        chosen = names[:limit]
        read = zip(chosen, _read_all(self.blobs, chosen), strict=True)
        stamped = [(str(e.get("lastStamp") or _key(n)), dict(e)) for n, e in read if e is not None]
        entries = [e for _, e in sorted(stamped, key=lambda pair: pair[0], reverse=True)]
        return {"entries": entries, "next": _key(chosen[-1]) if len(names) > limit else None}


def _key(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def _sample(values: Sequence[str], value: str) -> list[str]:
    out = list(values)
    if value not in out and len(out) < SAMPLES:
        out.append(value)
    return out


def _read_all(blobs: JsonBlobs, paths: Sequence[str]) -> list[Any]:
    from concurrent.futures import ThreadPoolExecutor

    if len(paths) <= 1:
        return [blobs.read(p) for p in paths]
    with ThreadPoolExecutor(max_workers=min(8, len(paths))) as pool:
        return list(pool.map(blobs.read, paths))
