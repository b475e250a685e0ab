"""The Web API under /api/data/v9.2/: routing, reads with paging and change tracking, writes, actions,
metadata. Transport-free: `Api.handle(Request) -> Response`, used by the HTTP server and by $batch."""

from __future__ import annotations

import json
import re
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote, urlencode

from . import errors as E
from . import metadata as M
from .bulk import BULK_ACTIONS, bulk_action
from .errors import DataverseError, bad_request
from .meta_relations import relationship_route
from .odata_params import substitute_aliases
from .query import (
    FilterCompiler,
    Shaper,
    annotations_wanted,
    parse_expand,
    parse_orderby,
    parse_select,
    sort_rows,
)
from .schema import CHOICE_TYPES, Table
from .sdkmessages import refuse_write
from .store import Org, Row
from .writes import KEY_RE, check_closed, close_opportunity, parse_key, sync_bpf, validate_body

MAX_PAGE = 5000
JSON_CT = "application/json; odata.metadata=minimal"
ALLOWED_OPTIONS = {
    "$select",
    "$filter",
    "$orderby",
    "$top",
    "$count",
    "$expand",
    "$skiptoken",
    "$deltatoken",
    "$apply",
    "annotations",
}
SKIPTOKEN_RE = re.compile(r'pagenumber="(\d+)"[^>]*pagingcookie="([^"]*)"')


@dataclass
class Request:
    method: str
    path: str  # after /api/data/v9.2/ (no query string)
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes = b""
    content_ids: dict[str, str] | None = None  # $batch change set references


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    table: str | None = None  # entity set, for stats
    write: bool = False
    operations: int = 0  # writes applied one by one ($batch parts), for the cost model; 0: 1 if write
    bulk_operations: int = 0  # targets of a bulk message, for the cost model
    rows: int = 0  # rows read, for the cost model

    @staticmethod
    def json(
        status: int, obj: Any, headers: dict[str, str] | None = None, table: str | None = None
    ) -> Response:
        h = {"Content-Type": JSON_CT, "OData-Version": "4.0"}
        h.update(headers or {})
        return Response(status, json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode(), h, table)

    @staticmethod
    def error(err: DataverseError) -> Response:
        return Response.json(err.status, err.body(), err.headers)


@dataclass
class Cursor:
    items: list[tuple[bool, str]]  # (deleted?, id)
    delta: str | None  # deltatoken to hand out on the last page


class Api:
    def __init__(self, org: Org, base: str):
        self.org = org
        self.base = base  # https://host:port/api/data/v9.2/
        self._cursors: OrderedDict[str, Cursor] = OrderedDict()
        self._cursor_lock = threading.Lock()

    # -- entry -----------------------------------------------------------------------------------------
    def handle(self, req: Request) -> Response:
        try:
            return self._route(req)
        except DataverseError as err:
            return Response.error(err)

    def table_of(self, path: str) -> str | None:
        head = path.split("/", 1)[0]
        m = KEY_RE.match(head)
        name = m.group(1) if m else head
        return name if name in self.org.by_set else None

    def _route(self, req: Request) -> Response:
        path = req.path
        for k in req.query:
            if k.startswith("$") and k not in ALLOWED_OPTIONS:
                if k == "$skip":
                    raise bad_request("Skip Clause is not supported in CRM")
                raise bad_request(f"The query parameter {k} is not supported")
        if path in ("", "/"):
            self._method(req, "GET")
            return Response.json(200, M.service_document(self.base, list(self.org.schema.values())))
        if path == "$metadata":
            self._method(req, "GET")
            body = M.csdl(list(self.org.schema.values()), req.query.get("annotations") == "true").encode()
            return Response(200, body, {"Content-Type": "application/xml", "OData-Version": "4.0"})
        if path in ("WhoAmI", "WhoAmI()"):
            self._method(req, "GET")
            return Response.json(
                200,
                {
                    "@odata.context": f"{self.base}$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse",
                    "BusinessUnitId": self.org.business_unit_id,
                    "UserId": self.org.app_user_id,
                    "OrganizationId": self.org.org_id,
                },
            )
        if path in ("WinOpportunity", "LoseOpportunity"):
            self._method(req, "POST")
            close_opportunity(self.org, self._json(req), path == "WinOpportunity", self.base, req.content_ids)
            return Response(204, headers={"OData-Version": "4.0"}, table="opportunities", write=True)
        if path.startswith("EntityDefinitions"):
            self._method(req, "GET")
            return self._metadata(req)
        parts = path.split("/")
        head = parts[0]
        m = KEY_RE.match(head)
        set_name, key = (m.group(1), m.group(2)) if m else (head, None)
        logical = self.org.by_set.get(set_name)
        if logical is None:
            raise DataverseError(
                404, E.SEGMENT_NOT_FOUND, f"Resource not found for the segment '{set_name}'."
            )
        table = self.org.table(logical)
        rest = parts[1:]
        resp = self._entity(req, table, key, rest)
        resp.table = set_name
        return resp

    def _method(self, req: Request, *allowed: str) -> None:
        if req.method not in allowed:
            raise DataverseError(
                405,
                "",
                f"No HTTP resource was found that matches the request URI "
                f"'{self.base}{req.path}' for method {req.method}.",
            )

    def _json(self, req: Request) -> Any:
        if not req.body.strip():
            raise DataverseError(
                400, E.PAYLOAD_ERROR, "The request body is empty; a JSON payload is required."
            )
        try:
            return json.loads(req.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise DataverseError(
                400, E.PAYLOAD_ERROR, f"Invalid JSON. The payload could not be parsed: {exc}"
            ) from None

    # -- entity sets -------------------------------------------------------------------------------------
    def _entity(self, req: Request, table: Table, key: str | None, rest: list[str]) -> Response:
        refuse_write(table, req.method)
        if key is None and len(rest) == 1 and rest[0] in BULK_ACTIONS:
            self._method(req, "POST")
            return bulk_action(self, table, rest[0], self._json(req), len(req.body))
        if key is None:
            if rest == ["$count"]:
                self._method(req, "GET")
                n = len(self.org.data[table.logical].rows)
                return Response(
                    200,
                    str(min(n, MAX_PAGE)).encode(),
                    {"Content-Type": "text/plain", "OData-Version": "4.0"},
                )
            if rest:
                raise DataverseError(
                    404, E.SEGMENT_NOT_FOUND, f"Resource not found for the segment '{rest[0]}'."
                )
            self._method(req, "GET", "POST")
            return self._collection(req, table) if req.method == "GET" else self._create(req, table)
        if key.startswith("$") and req.content_ids is not None and not rest:
            pass
        keyvals = parse_key(self.org, table, key)
        row = self._find(table, keyvals)
        if rest:
            return self._property(req, table, row, keyvals, rest)
        self._method(req, "GET", "PATCH", "DELETE")
        if req.method == "GET":
            return self._get_one(req, table, row, keyvals)
        if req.method == "DELETE":
            return self._delete(req, table, row, keyvals)
        return self._patch(req, table, row, keyvals)

    def _find(self, table: Table, keyvals: dict[str, Any]) -> Row | None:
        if table.pk in keyvals:
            return self.org.get(table.logical, keyvals[table.pk])
        return self.org.find_alt(table.logical, keyvals)

    def _missing(self, table: Table, keyvals: dict[str, Any]) -> DataverseError:
        if table.pk in keyvals:
            return E.not_found(table.logical, keyvals[table.pk])
        return DataverseError(
            404,
            E.KEY_NOT_FOUND,
            f"A record with the specified key values does not exist in {table.logical} entity",
        )

    def _entity_url(self, table: Table, row: Row) -> str:
        return f"{self.base}{table.set_name}({row[table.pk]})"

    def _prefer(self, req: Request) -> str:
        return req.headers.get("prefer", "")

    # -- reads ---------------------------------------------------------------------------------------------
    def _shaper(self, req: Request, table: Table) -> Shaper:
        select = parse_select(req.query.get("$select"), table)
        expands = parse_expand(req.query.get("$expand"), self.org, table)
        return Shaper(self.org, table, select, annotations_wanted(self._prefer(req)), expands)

    def _get_one(self, req: Request, table: Table, row: Row | None, keyvals: dict[str, Any]) -> Response:
        shaper = self._shaper(req, table)
        if row is None:
            raise self._missing(table, keyvals)
        etag = f'W/"{row["versionnumber"]}"'
        inm = req.headers.get("if-none-match")
        if inm and inm != "null" and inm == etag and not shaper.expands and not shaper.ann:
            return Response(304, headers={"ETag": etag, "OData-Version": "4.0"})
        with self.org.lock:
            body = shaper.shape(row)
        ctx = f"{self.base}$metadata#{table.set_name}"
        if shaper.select is not None:
            ctx += f"({','.join(shaper.select)})"
        return Response.json(200, {"@odata.context": ctx + "/$entity", **body}, {"ETag": etag})

    def _property(
        self, req: Request, table: Table, row: Row | None, keyvals: dict[str, Any], rest: list[str]
    ) -> Response:
        prop = rest[0]
        attr = table.attrs.get(prop)
        if attr is None or len(rest) > 1:
            raise E.no_property(prop, table.logical)
        if row is None:
            raise self._missing(table, keyvals)
        self._method(req, "GET", "PUT", "DELETE")
        if req.method == "GET":
            return Response.json(
                200,
                {
                    "@odata.context": f"{self.base}$metadata#{table.set_name}({row[table.pk]})/{prop}",
                    "value": row.get(prop),
                },
            )
        value = self._json(req).get("value") if req.method == "PUT" else None
        changes = validate_body(self.org, table, {prop: value}, creating=False)
        check_closed(table, row, changes)
        self.org.update(table.logical, row[table.pk], changes)
        return Response(204, headers={"OData-Version": "4.0"}, write=True)

    def _collection(self, req: Request, table: Table) -> Response:
        q = req.query
        prefer = self._prefer(req)
        tracking = "odata.track-changes" in prefer or "$deltatoken" in q
        if tracking:
            for opt in ("$filter", "$orderby", "$expand", "$top"):
                if opt in q:
                    raise bad_request(
                        f'The "{opt}" query parameter isn\'t supported when Change Tracking is enabled.'
                    )
        shaper = self._shaper(req, table)
        m = re.search(r"odata\.maxpagesize\s*=\s*(\d+)", prefer)
        page = min(int(m.group(1)), MAX_PAGE) if m else MAX_PAGE
        if m and int(m.group(1)) < 1:
            raise bad_request("odata.maxpagesize must be a positive integer.")
        top: int | None = None
        if "$top" in q and not m:
            try:
                top = int(q["$top"])
            except ValueError:
                raise bad_request(f"Invalid value '{q['$top']}' for $top query option found.") from None
            if top < 0:
                raise bad_request(f"Invalid value '{q['$top']}' for $top query option found.")
            page = min(top, MAX_PAGE) or 0
        count = q.get("$count", "false").lower()
        if count not in ("true", "false"):
            raise bad_request(f"'{q['$count']}' is not a valid count option.")

        offset, pagenumber, cursor = 0, 1, None
        if "$skiptoken" in q:
            cursor, offset, pagenumber = self._read_skiptoken(q["$skiptoken"])
        with self.org.lock:
            cur = self._cursors.get(cursor) if cursor else None
            if cur is None:
                cur = self._run(req, table, tracking)
                if top is not None:
                    cur.items = cur.items[:top]
                cursor = secrets.token_hex(8)
                with self._cursor_lock:
                    self._cursors[cursor] = cur
                    while len(self._cursors) > 64:
                        self._cursors.popitem(last=False)
            items = cur.items[offset : offset + page]
            rows = self.org.data[table.logical].rows
            value: list[dict[str, Any]] = []
            for deleted, rid in items:
                if deleted:
                    value.append(
                        {
                            "@odata.context": f"{self.base}$metadata#{table.set_name}/$deletedEntity",
                            "id": rid,
                            "reason": "deleted",
                        }
                    )
                else:
                    r = rows.get(rid)
                    if r is not None:
                        value.append(shaper.shape(r))
        ctx = f"{self.base}$metadata#{table.set_name}"
        if shaper.select is not None:
            ctx += f"({','.join(c for c in shaper.select)})"
        body: dict[str, Any] = {"@odata.context": ctx + ("/$delta" if "$deltatoken" in q else "")}
        if count == "true":
            total = len(cur.items)
            body["@odata.count"] = min(total, MAX_PAGE)
            if shaper.ann:
                body["@Microsoft.Dynamics.CRM.totalrecordcount"] = min(total, MAX_PAGE)
                body["@Microsoft.Dynamics.CRM.totalrecordcountlimitexceeded"] = total > MAX_PAGE
        body["value"] = value
        applied = []
        if m:
            applied.append(f"odata.maxpagesize={page}")
        if shaper.ann:
            applied.append('odata.include-annotations="' + ",".join(sorted(shaper.ann)) + '"')
        if tracking:
            applied.append("odata.track-changes")
        nxt = offset + page
        if nxt < len(cur.items) and page > 0:
            params = {k: v for k, v in q.items() if k != "$skiptoken"}
            cookie = (
                f'<cookie pagenumber="{pagenumber + 1}" pagingcookie="{cursor}.{nxt}" '
                f'istracking="{tracking}" />'
            )
            body["@odata.nextLink"] = (
                f"{self.base}{table.set_name}?"
                + urlencode(params, quote_via=quote)
                + ("&" if params else "")
                + "$skiptoken="
                + quote(cookie, safe="")
            )
        elif tracking and cur.delta is not None:
            params = {k: v for k, v in q.items() if k in ("$select",)}
            body["@odata.deltaLink"] = (
                f"{self.base}{table.set_name}?"
                + urlencode(params, quote_via=quote)
                + ("&" if params else "")
                + "$deltatoken="
                + quote(cur.delta, safe="")
            )
        headers = {"Preference-Applied": ",".join(applied)} if applied else {}
        resp = Response.json(200, body, headers)
        resp.rows = len(value)
        return resp

    def _read_skiptoken(self, token: str) -> tuple[str | None, int, int]:
        m = SKIPTOKEN_RE.search(unquote(token))
        if not m:
            raise bad_request("The $skiptoken is not valid.")
        cursor, _, off = m.group(2).rpartition(".")
        if not off.isdigit():
            raise bad_request("The $skiptoken is not valid.")
        return cursor or None, int(off), int(m.group(1))

    def _run(self, req: Request, table: Table, tracking: bool) -> Cursor:
        """Evaluate filter/order (or a delta) into a cursor of ids."""
        q = req.query
        td = self.org.data[table.logical]
        if tracking:
            since = -1
            if "$deltatoken" in q:
                tok = unquote(q["$deltatoken"]).split("!", 1)[0]
                if not tok.isdigit():
                    raise bad_request("The $deltatoken is not valid.")
                since = int(tok)
            changed = sorted(
                (r for r in td.rows.values() if r["versionnumber"] > since), key=lambda r: r["versionnumber"]
            )
            items = [(False, r[table.pk]) for r in changed]
            if since >= 0:
                seen = set()
                for v, rid in td.deleted:
                    if v > since and rid not in td.rows and rid not in seen:
                        seen.add(rid)
                        items.append((True, rid))
            return Cursor(items, f"{self.org.version}!{self.org.now().strftime('%m/%d/%Y %H:%M:%S')}")
        rows: list[Row]
        flt = substitute_aliases(q.get("$filter"), q)
        if flt:
            comp = FilterCompiler(self.org, table)
            pred = comp.compile(flt)
            cand = comp.candidates(flt)
            source = (td.rows[i] for i in cand if i in td.rows) if cand is not None else td.rows.values()
            rows = [r for r in source if pred(r)]
            if cand is not None:
                rows.sort(key=lambda r: r["versionnumber"])  # keep creation order as for a scan
        else:
            rows = list(td.rows.values())
        order = parse_orderby(q.get("$orderby"), table)
        if order:
            sort_rows(rows, order)
        pk = table.pk
        return Cursor([(False, r[pk]) for r in rows], None)

    # -- writes --------------------------------------------------------------------------------------------
    def _representation(self, req: Request) -> bool:
        return "return=representation" in self._prefer(req)

    def _create(self, req: Request, table: Table) -> Response:
        changes = validate_body(
            self.org, table, self._json(req), creating=True, content_ids=req.content_ids, api_base=self.base
        )
        with self.org.lock:
            row = self.org.insert(table.logical, self._defaults(table, changes))
        return self._written(req, table, row, created=True)

    def _defaults(self, table: Table, changes: Row) -> Row:
        out = dict(changes)
        st = table.attrs.get("statecode")
        if st is not None and out.get("statecode") is None:
            out["statecode"] = min(st.options)
            out.setdefault("statuscode", st.state_default[out["statecode"]])
            if out["statuscode"] is None:
                out["statuscode"] = st.state_default[out["statecode"]]
        if table.logical == "opportunity":
            for k, v in (("salesstage", 0), ("stepname", "1-Qualify"), ("decisionmaker", False)):
                if out.get(k) is None:
                    out[k] = v
        if "_ownerid_value" in table.attrs and out.get("_ownerid_value") is None:
            out["_ownerid_value"] = self.org.app_user_id
        return out

    def _written(
        self, req: Request, table: Table, row: Row, created: bool, status_plain: int = 204
    ) -> Response:
        url = self._entity_url(table, row)
        etag = f'W/"{row["versionnumber"]}"'
        if self._representation(req):
            shaper = self._shaper(req, table)
            shaper.expands = []
            body = {"@odata.context": f"{self.base}$metadata#{table.set_name}/$entity", **shaper.shape(row)}
            resp = Response.json(
                201 if created else 200, body, {"ETag": etag, "Preference-Applied": "return=representation"}
            )
        else:
            resp = Response(
                status_plain, headers={"OData-Version": "4.0", "OData-EntityId": url, "ETag": etag}
            )
        resp.write = True
        resp.headers["Location"] = url
        if self._representation(req):
            del resp.headers["Location"]
        return resp

    def _check_etag(self, req: Request, row: Row) -> None:
        im = req.headers.get("if-match")
        if im and im != "*" and im != f'W/"{row["versionnumber"]}"':
            raise DataverseError(
                412,
                E.CONCURRENCY,
                "The version of the existing record doesn't match the RowVersion property provided.",
            )

    def _patch(self, req: Request, table: Table, row: Row | None, keyvals: dict[str, Any]) -> Response:
        body = self._json(req)
        im, inm = req.headers.get("if-match"), req.headers.get("if-none-match")
        inm = None if inm == "null" else inm
        with self.org.lock:
            changes = validate_body(
                self.org, table, body, creating=row is None, content_ids=req.content_ids, api_base=self.base
            )
            if row is None:
                if im:
                    raise self._missing(table, keyvals)
                for k, v in keyvals.items():
                    changes[k] = v  # URL key values identify the new record
                new = self.org.insert(table.logical, self._defaults(table, changes))
                return self._written(req, table, new, created=True)
            if inm == "*":
                raise DataverseError(412, E.DUPLICATE, "A record with matching key values already exists.")
            self._check_etag(req, row)
            check_closed(table, row, changes)
            changes.pop(table.pk, None)
            with self.org.transaction():
                updated = self.org.update(table.logical, row[table.pk], changes)
                if table.logical == "opportunity" and "statecode" in changes:
                    sync_bpf(self.org, updated)
            return self._written(req, table, updated, created=False)

    def _delete(self, req: Request, table: Table, row: Row | None, keyvals: dict[str, Any]) -> Response:
        with self.org.lock:
            if row is None:
                raise self._missing(table, keyvals)
            self._check_etag(req, row)
            self.org.delete(table.logical, row[table.pk])
        return Response(204, headers={"OData-Version": "4.0"}, write=True)

    # -- metadata -------------------------------------------------------------------------------------------
    def _metadata(self, req: Request) -> Response:
        related = relationship_route(self, req)
        if related is not None:
            return Response.json(200, related)
        m = re.fullmatch(
            r"EntityDefinitions(?:\((.*?)\))?(?:/Attributes(?:\((.*?)\))?(?:/Microsoft\.Dynamics\.CRM\."
            r"([A-Za-z]+))?)?",
            req.path,
        )
        if not m:
            raise DataverseError(
                404, E.SEGMENT_NOT_FOUND, f"Resource not found for the segment '{req.path}'."
            )
        ent_key, attr_key, cast = m.group(1), m.group(2), m.group(3)
        defs = self.definitions()
        ctx = f"{self.base}$metadata#EntityDefinitions"
        if ent_key is None:
            items = [d for _, d in defs]
            return Response.json(200, {"@odata.context": ctx, "value": self._meta_query(req, items)})
        t, d = self._find_entity(defs, ent_key)
        if "/Attributes" not in req.path:
            return Response.json(200, {"@odata.context": ctx + "/$entity", **self._meta_project(req, d)})
        attrs = list(t.attrs.values())
        if cast:
            wanted = {v: k for k, v in M.CAST.items() if k not in ("Owner", "Customer")}
            if cast not in wanted:
                raise DataverseError(400, E.GENERIC, f"Cast to '{cast}' is not supported.")
            attrs = [a for a in attrs if M.CAST[a.type] == cast]
        expand = req.query.get("$expand", "")
        expand_os = "OptionSet" in expand or "GlobalOptionSet" in expand
        if expand_os and cast not in (
            "PicklistAttributeMetadata",
            "StateAttributeMetadata",
            "StatusAttributeMetadata",
            "BooleanAttributeMetadata",
        ):
            raise bad_request(
                "Could not find a property named 'OptionSet' on type "
                "'Microsoft.Dynamics.CRM.AttributeMetadata'."
            )

        def render(a: Any) -> dict[str, Any]:
            out = self._meta_project(req, M.attribute_definition(t, a))
            if expand_os:
                os_ = M.option_set(t, a)
                if "OptionSet" in expand:
                    out["OptionSet"] = os_
                if "GlobalOptionSet" in expand:
                    out["GlobalOptionSet"] = os_ if a.global_option_set else None
            return out

        actx = f"{ctx}('{t.logical}')/Attributes"
        if attr_key is not None:
            name = _meta_key(attr_key)
            found = [a for a in attrs if a.name == name or M.attribute_definition(t, a)["MetadataId"] == name]
            if not found:
                raise DataverseError(
                    404, E.NOT_FOUND, f"Could not find attribute '{name}' on entity '{t.logical}'."
                )
            return Response.json(200, {"@odata.context": actx + "/$entity", **render(found[0])})
        rendered = [M.attribute_definition(t, a) for a in attrs]
        keep = {d["LogicalName"] for d in self._meta_filter(req, rendered)}
        return Response.json(
            200, {"@odata.context": actx, "value": [render(a) for a in attrs if a.name in keep]}
        )

    def definitions(self) -> list[tuple[Table, dict[str, Any]]]:
        return [(t, M.entity_definition(t, 10000 + i)) for i, t in enumerate(self.org.schema.values())]

    def _find_entity(
        self, defs: list[tuple[Table, dict[str, Any]]], key: str
    ) -> tuple[Table, dict[str, Any]]:
        name = _meta_key(key)
        for t, d in defs:
            if name in (t.logical, d["MetadataId"]):
                return t, d
        raise DataverseError(404, E.NOT_FOUND, f"Could not find an entity with key value '{name}'.")

    def _meta_filter(self, req: Request, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        flt = req.query.get("$filter")
        if not flt:
            return items
        pred = FilterCompiler(None, None).compile(flt)
        try:
            return [d for d in items if pred(d)]
        except TypeError:  # metadata is untyped: a complex property compared with a literal
            raise bad_request(f"A binary operator with incompatible types was detected in $filter '{flt}'.") from None

    def _meta_project(self, req: Request, d: dict[str, Any]) -> dict[str, Any]:
        sel = req.query.get("$select")
        if not sel:
            return d
        cols = [c.strip() for c in sel.split(",") if c.strip()]
        for c in cols:
            if c not in d:
                raise E.no_property(c, "EntityMetadata")
        out = {c: d[c] for c in cols}
        out["MetadataId"] = d["MetadataId"]
        if "@odata.type" in d:
            out["@odata.type"] = d["@odata.type"]
        return out

    def _meta_query(self, req: Request, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [self._meta_project(req, d) for d in self._meta_filter(req, items)]


def _meta_key(text: str) -> str:
    text = unquote(text)
    m = re.fullmatch(r"(?:LogicalName\s*=\s*)?'?([^']*)'?", text.strip())
    return (m.group(1) if m else text).lower()


__all__ = ["Api", "CHOICE_TYPES", "Request", "Response"]
