"""Dataverse Web API client: pooled session, typed errors, bounded retries, paging, change tracking,
`$batch` and metadata reads.

`DataverseClient` is the one class callers use. Its transport (session, the request loop with its
retries, the server's Date, stats) is `connectors.dataverse_transport.DataverseTransport`, which it
extends; the error types live in `connectors.dataverse_errors` (re-exported here), the `$batch` wire
format (`BatchOp`, `BatchResult`, body and response) in `connectors.dataverse_batch`, the metadata
helpers (`processes_from_rows`) in `connectors.dataverse_metadata`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from connectors.dataverse_batch import (
    MAX_BATCH,
    BatchOp,
    BatchResult,
    build_batch_body,
    entity_id,
    parse_batch_response,
)
from connectors.dataverse_errors import (
    DataverseAuthError,
    DataverseBadRequest,
    DataverseConflict,
    DataverseError,
    DataverseNotFound,
    DataverseProtocolError,
    DataverseServerError,
    DataverseThrottled,
    DataverseUnavailable,
    error_from_parts,
)
from connectors.dataverse_metadata import LOOKUP_TYPES, UNREADABLE_TYPES, localized_label, processes_from_rows
from connectors.dataverse_transport import DataverseTransport
from connectors.odata import key_segment

__all__ = [  # the error types are re-exported: callers catch them where they use the client
    "DataverseAuthError",
    "DataverseBadRequest",
    "DataverseClient",
    "DataverseConflict",
    "DataverseError",
    "DataverseNotFound",
    "DataverseProtocolError",
    "DataverseServerError",
    "DataverseThrottled",
    "DataverseUnavailable",
    "Page",
]

log = logging.getLogger(__name__)


@dataclass
class Page:
    """One response of a collection read: rows (annotations kept), ids of rows deleted (change tracking),
    the next link and, on the last page of a change-tracked read, the delta link."""

    rows: list[dict[str, Any]]
    deleted_ids: list[str] = field(default_factory=list)
    next_link: str | None = None
    delta_link: str | None = None


class DataverseClient(DataverseTransport):
    """The Web API of one org. `base_url` is the org root (https://org.crm.dynamics.com) or the API root."""

    # ------------------------------------------------------------------ reads
    def get(self, path: str, params: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None) -> Any:
        return self._json(self.request("GET", path, params=params, headers=headers))

    def who_am_i(self) -> dict[str, Any]:
        doc = self.get("WhoAmI")
        return dict(doc) if isinstance(doc, dict) else {}

    def server_now(self, max_retries: int | None = None) -> dt.datetime:
        """The server's clock (its Date header), read with one cheap request (WhoAmI)."""
        self.last_server_date = None
        self.request("GET", "WhoAmI", max_retries=max_retries)
        if self.last_server_date is None:
            raise DataverseProtocolError(502, "NoDateHeader", "the server sent no Date header")
        return self.last_server_date

    def iter_pages(
        self,
        entity_set: str,
        select: Sequence[str] | None = None,
        filter: str | None = None,
        orderby: str | None = None,
        page_size: int = 5000,
        track_changes: bool = False,
        expand: str | None = None,
    ) -> Iterator[Page]:
        """Every page of a collection, lazily, following `@odata.nextLink`. With `track_changes` the last
        page carries the delta link for `iter_delta` ($filter/$orderby/$expand are not allowed then)."""
        if track_changes and (filter or orderby or expand):
            raise ValueError("change tracking does not allow $filter, $orderby or $expand")
        if not 1 <= page_size <= 5000:
            raise ValueError("page_size must be between 1 and 5000")
        params: dict[str, str] = {}
        if select:
            params["$select"] = ",".join(select)
        if filter:
            params["$filter"] = filter
        if orderby:
            params["$orderby"] = orderby
        if expand:
            params["$expand"] = expand
        yield from self._follow(entity_set, params, page_size, track_changes)

    def iter_delta(self, delta_link: str, page_size: int = 5000) -> Iterator[Page]:
        """The changes since a delta link: new/changed rows, deleted ids, and a new delta link at the end."""
        yield from self._follow(delta_link, None, page_size, True)

    def _follow(self, path: str, params: Mapping[str, str] | None, page_size: int, track: bool) -> Iterator[Page]:
        prefer = [f"odata.maxpagesize={page_size}"]
        if track:
            prefer.append("odata.track-changes")
        headers = {"Prefer": ",".join(prefer)}
        url: str | None = path
        seen: set[str] = set()
        while url:
            doc = self.get(url, params=params, headers=headers)
            params = None  # the next link carries the query
            if not isinstance(doc, dict) or not isinstance(doc.get("value"), list):
                raise DataverseProtocolError(502, "InvalidResponse", "a collection response has no 'value' list")
            rows: list[dict[str, Any]] = []
            deleted: list[str] = []
            for item in doc["value"]:
                if not isinstance(item, dict):
                    continue
                ctx = str(item.get("@odata.context", ""))
                if ctx.endswith("$deletedEntity") or (item.get("reason") == "deleted" and "id" in item):
                    deleted.append(str(item.get("id")))
                else:
                    rows.append(item)
            next_link = doc.get("@odata.nextLink")
            if next_link and next_link in seen:
                raise DataverseProtocolError(502, "PagingLoop", "the server repeated a next link")
            if next_link:
                seen.add(next_link)
            yield Page(rows, deleted, next_link, doc.get("@odata.deltaLink"))
            url = next_link

    # ------------------------------------------------------------------ writes
    def create(self, entity_set: str, body: Mapping[str, Any]) -> str | None:
        """POST a row; return its id (from OData-EntityId) when the server gives it."""
        resp = self.request("POST", entity_set, json_body=dict(body))
        return entity_id(resp.headers.get("OData-EntityId") or resp.headers.get("Location"))

    def upsert(self, entity_set: str, key: Mapping[str, object] | str | uuid.UUID, body: Mapping[str, Any]) -> None:
        """PATCH without If-Match: creates or updates by primary or alternate key."""
        self.request("PATCH", key_segment(entity_set, key), json_body=dict(body))

    def update(self, entity_set: str, key: Mapping[str, object] | str | uuid.UUID, body: Mapping[str, Any]) -> None:
        """PATCH with If-Match: * (update only; DataverseNotFound when absent)."""
        self.request("PATCH", key_segment(entity_set, key), json_body=dict(body), headers={"If-Match": "*"})

    def delete(self, entity_set: str, key: Mapping[str, object] | str | uuid.UUID) -> None:
        self.request("DELETE", key_segment(entity_set, key))

    def batch(
        self, operations: Sequence[BatchOp], *, continue_on_error: bool = True, atomic: bool = False
    ) -> list[BatchResult]:
        """Send `operations` through `$batch`, at most 1,000 per request, and return one result per op in
        order. `atomic` puts each request's ops in one change set (all or nothing); otherwise ops are
        independent parts and, with `continue_on_error`, every part is attempted."""
        results: list[BatchResult] = []
        for start in range(0, len(operations), MAX_BATCH):
            chunk = list(operations[start : start + MAX_BATCH])
            results.extend(self._batch_chunk(chunk, start, continue_on_error, atomic))
        return results

    def _batch_chunk(self, ops: list[BatchOp], offset: int, continue_on_error: bool, atomic: bool) -> list[BatchResult]:
        boundary = f"batch_{uuid.uuid4().hex}"
        body = build_batch_body(ops, boundary, self.api_path, atomic=atomic)
        headers = {"Content-Type": f'multipart/mixed; boundary="{boundary}"'}
        if continue_on_error and not atomic:
            headers["Prefer"] = "odata.continue-on-error"
        idempotent = all(op.method.upper() != "POST" for op in ops)
        started = time.perf_counter()
        try:
            resp = self.request("POST", "$batch", data=body, headers=headers, idempotent=idempotent)
            status, content_type, content = (
                resp.status_code,
                resp.headers.get("Content-Type", ""),
                resp.content,
            )
        except DataverseBadRequest as exc:
            # A non-continue batch that failed answers 400 with the parts; a malformed batch answers 400 JSON.
            raw = exc.response
            if raw is None or "multipart" not in raw.headers.get("Content-Type", ""):
                raise
            status, content_type, content = raw.status_code, raw.headers.get("Content-Type", ""), raw.content
        parts = parse_batch_response(content_type, content)
        results: list[BatchResult] = []
        for i in range(len(ops)):
            if i < len(parts):
                st, hdrs, raw_body = parts[i]
                doc: Any = None
                if raw_body:
                    try:
                        doc = json.loads(raw_body)
                    except ValueError:
                        doc = raw_body.decode("utf-8", "replace")
                ok = 200 <= st < 300
                err = None if ok else error_from_parts(st, raw_body, hdrs)
                eid = entity_id(hdrs.get("OData-EntityId") or hdrs.get("Location"))
                results.append(BatchResult(offset + i, st, ok, doc, eid, err))
            else:
                err = DataverseError(0, "NotExecuted", "not executed: an earlier operation in the batch failed")
                results.append(BatchResult(offset + i, 0, False, None, None, err))
        failed = sum(1 for r in results if not r.ok)
        log.info(
            "dataverse $batch: %d ops, %d failed, outer %d, in %.0f ms",
            len(ops),
            failed,
            status,
            (time.perf_counter() - started) * 1000,
        )
        return results

    # ------------------------------------------------------------------ metadata
    def entity_definition(self, logicalname: str) -> dict[str, Any]:
        """{LogicalName, EntitySetName, PrimaryIdAttribute, ...} of a table."""
        from connectors.odata import quote

        doc = self.get(
            f"EntityDefinitions(LogicalName={quote(logicalname)})",
            params={"$select": "LogicalName,EntitySetName,PrimaryIdAttribute,PrimaryNameAttribute"},
        )
        if isinstance(doc, dict) and isinstance(doc.get("value"), list):  # some servers answer a collection
            doc = doc["value"][0] if doc["value"] else {}
        return dict(doc) if isinstance(doc, dict) else {}

    def attributes(self, logicalname: str) -> list[dict[str, Any]]:
        """Readable columns of a table: [{"name" (Web API column), "attribute" (logical name), "type",
        "custom", "label", "dateonly"}]. Lookups are named `_<attribute>_value` as in the Web API."""
        from connectors.odata import quote

        doc = self.get(f"EntityDefinitions(LogicalName={quote(logicalname)})/Attributes")
        out: list[dict[str, Any]] = []
        for a in doc.get("value", []) if isinstance(doc, dict) else []:
            logical = a.get("LogicalName")
            atype = str(a.get("AttributeType") or "")
            if not logical or a.get("AttributeOf") or a.get("IsValidForRead") is False:
                continue
            if atype in UNREADABLE_TYPES:
                continue
            name = f"_{logical}_value" if atype in LOOKUP_TYPES else logical
            behavior = a.get("DateTimeBehavior")
            behavior = behavior.get("Value") if isinstance(behavior, dict) else behavior
            out.append(
                {
                    "name": name,
                    "attribute": logical,
                    "type": atype,
                    "custom": bool(a.get("IsCustomAttribute")),
                    "label": localized_label(a.get("DisplayName")) or logical,
                    "dateonly": atype == "DateTime" and (a.get("Format") == "DateOnly" or behavior == "DateOnly"),
                }
            )
        return out

    def option_sets(self, logicalname: str) -> dict[str, dict[str, str]]:
        """Labels of every choice column: {column: {"<value>": "<label>"}}; booleans use "true"/"false"."""
        from connectors.odata import quote

        out: dict[str, dict[str, str]] = {}
        base = f"EntityDefinitions(LogicalName={quote(logicalname)})/Attributes/Microsoft.Dynamics.CRM."
        for cast in (
            "PicklistAttributeMetadata",
            "StateAttributeMetadata",
            "StatusAttributeMetadata",
            "BooleanAttributeMetadata",
        ):
            params = {"$select": "LogicalName", "$expand": "OptionSet"}
            if cast == "PicklistAttributeMetadata":
                params["$expand"] = "OptionSet,GlobalOptionSet"
            try:
                doc = self.get(base + cast, params=params)
            except (DataverseBadRequest, DataverseNotFound) as exc:
                log.warning("option sets of %s: %s not readable (%s); skipped", logicalname, cast, exc.code)
                continue
            for a in doc.get("value", []) if isinstance(doc, dict) else []:
                opts = a.get("OptionSet") or a.get("GlobalOptionSet") or {}
                labels: dict[str, str] = {}
                if cast == "BooleanAttributeMetadata":
                    for key, opt_name in (("true", "TrueOption"), ("false", "FalseOption")):
                        opt = opts.get(opt_name) if isinstance(opts, dict) else None
                        if isinstance(opt, dict):
                            labels[key] = localized_label(opt.get("Label")) or key
                else:
                    for opt in opts.get("Options", []) if isinstance(opts, dict) else []:
                        if "Value" in opt:
                            labels[str(opt["Value"])] = localized_label(opt.get("Label")) or str(opt["Value"])
                if a.get("LogicalName") and labels:
                    out[str(a["LogicalName"])] = labels
        return out

    def processes(self, primary_entity: str = "opportunity") -> list[dict[str, Any]]:
        """Business process flows of a table with their stages (see `processes_from_rows`)."""
        from connectors.odata import filter_eq

        flows = [r for p in self.iter_pages("workflows", filter=filter_eq("category", 4)) for r in p.rows]
        stages = [r for p in self.iter_pages("processstages") for r in p.rows]
        return processes_from_rows(flows, stages, primary_entity)
