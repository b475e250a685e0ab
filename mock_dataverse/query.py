"""OData query options over in-memory rows: $filter (parsed by `odata-query`), $select, $orderby,
$expand of single-valued navigation properties, and formatted-value / lookup annotations.

$filter is parsed with the `odata-query` package (its sly-based OData v4 grammar and AST): a
maintained parser that already handles operator precedence, literals (GUID, date, datetime, strings
with '' escapes), `in`, functions and parentheses. We only write the evaluator: each AST node is
compiled once into a Python closure over a row dict, so a scan of 100k rows stays cheap.
"""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from odata_query import ast as oast  # type: ignore[import-untyped]
from odata_query.exceptions import ODataException  # type: ignore[import-untyped]
from odata_query.grammar import ODataLexer, ODataParser  # type: ignore[import-untyped]

from .errors import DataverseError, bad_request, no_property
from .schema import CHOICE_TYPES, EDM_TYPES, LOOKUP_TYPES, NUMERIC_TYPES, Attribute, Table
from .store import Org, Row

Pred = Callable[[Row], bool]
Getter = Callable[[Row], Any]

_GUID_TYPES = LOOKUP_TYPES | {"Uniqueidentifier"}
_CMP: dict[type, Callable[[Any, Any], bool]] = {
    oast.Lt: operator.lt,
    oast.LtE: operator.le,
    oast.Gt: operator.gt,
    oast.GtE: operator.ge,
}
_OPNAME = {
    oast.Eq: "Equal",
    oast.NotEq: "NotEqual",
    oast.Lt: "LessThan",
    oast.LtE: "LessThanOrEqual",
    oast.Gt: "GreaterThan",
    oast.GtE: "GreaterThanOrEqual",
    oast.In: "In",
}
_GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


@functools.lru_cache(maxsize=512)
def parse_filter(text: str) -> Any:
    try:
        return ODataParser().parse(ODataLexer().tokenize(text))
    except ODataException as exc:
        raise bad_request(f"Syntax error in $filter '{text}': {exc}") from None
    except Exception as exc:  # noqa: BLE001 - sly raises plain errors on some inputs
        raise bad_request(f"Syntax error in $filter '{text}': {type(exc).__name__}") from None


def _fmt_dt(value: str, dateonly: bool) -> str:
    if dateonly:
        return value[:10]
    try:
        d = datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        raise bad_request(f"The DateTimeOffset text '{value}' is not valid.") from None
    return d.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Operand:
    getter: Getter | None  # None for literals
    attr: Attribute | None = None
    literal: Any = None
    node: Any = None


class FilterCompiler:
    """Compiles a $filter AST for one table into a predicate; `candidates` narrows by indexes."""

    def __init__(self, org: Org | None, table: Table | None):
        self.org = org
        self.table = table

    def compile(self, text: str) -> Pred:
        return self._bool(parse_filter(text))

    # -- boolean nodes ---------------------------------------------------------------------------
    def _bool(self, node: Any) -> Pred:
        if isinstance(node, oast.BoolOp):
            left, right = self._bool(node.left), self._bool(node.right)
            if isinstance(node.op, oast.And):
                return lambda r: left(r) and right(r)
            return lambda r: left(r) or right(r)
        if isinstance(node, oast.UnaryOp) and isinstance(node.op, oast.Not):
            inner = self._bool(node.operand)
            return lambda r: not inner(r)
        if isinstance(node, oast.Compare):
            return self._compare(node)
        if isinstance(node, oast.Call):
            return self._call(node)
        if isinstance(node, (oast.Identifier, oast.Attribute)):
            op = self._operand(node)
            g = op.getter
            assert g is not None
            return lambda r: g(r) is True
        if isinstance(node, oast.Boolean):
            v = node.val.lower() == "true"
            return lambda r: v
        raise bad_request(f"The $filter expression '{type(node).__name__}' is not supported.")

    def _call(self, node: Any) -> Pred:
        name = node.func.name.lower()
        if name not in ("contains", "startswith", "endswith") or len(node.args) != 2:
            raise bad_request(f"The function '{node.func.name}' is not supported in $filter.")
        col, lit = self._operand(node.args[0]), self._operand(node.args[1])
        if col.getter is None or not isinstance(lit.node, oast.String):
            raise bad_request(f"{node.func.name} needs a property and a string literal.")
        needle = lit.node.val.lower()
        g = col.getter
        method = {"contains": str.__contains__, "startswith": str.startswith, "endswith": str.endswith}[name]

        def pred(r: Row) -> bool:
            v = g(r)
            return isinstance(v, str) and method(v.lower(), needle)

        return pred

    def _compare(self, node: Any) -> Pred:
        left, right = self._operand(node.left), self._operand(node.right)
        op = type(node.comparator)
        if left.getter is None and right.getter is not None:
            left, right = right, left
            op = {oast.Lt: oast.Gt, oast.Gt: oast.Lt, oast.LtE: oast.GtE, oast.GtE: oast.LtE}.get(op, op)
        if left.getter is None:
            raise bad_request("A $filter comparison needs at least one property.")
        lg = self._fold(left)
        if op is oast.In:
            if not isinstance(right.node, oast.List):
                raise bad_request("The 'in' operator needs a list of literals.")
            vals = {self._coerce(left.attr, v, op) for v in right.node.val}
            return lambda r: lg(r) in vals
        if right.getter is not None:
            rg = self._fold(right)
            get_b: Getter = rg
        else:
            const = self._coerce(left.attr, right.node, op)

            def get_b(r: Row, c: Any = const) -> Any:
                return c

        if op is oast.Eq:
            return lambda r: lg(r) == get_b(r)
        if op is oast.NotEq:
            return lambda r: lg(r) != get_b(r)
        cmp = _CMP.get(op)
        if cmp is None:
            raise bad_request("Unsupported comparison operator in $filter.")

        def pred(r: Row) -> bool:
            a, b = lg(r), get_b(r)
            return a is not None and b is not None and cmp(a, b)

        return pred

    def _fold(self, op: Operand) -> Getter:
        g = op.getter
        assert g is not None
        if op.attr is not None and op.attr.type in {"String", "Memo"} | _GUID_TYPES:
            return lambda r: (v.lower() if isinstance(v := g(r), str) else v)
        return g

    def _coerce(self, attr: Attribute | None, node: Any, op: type) -> Any:
        if isinstance(node, oast.Null):
            return None
        kind = attr.type if attr is not None else None
        raw = getattr(node, "val", None)
        edm = {
            oast.String: "Edm.String",
            oast.Integer: "Edm.Int32",
            oast.Float: "Edm.Double",
            oast.Boolean: "Edm.Boolean",
            oast.GUID: "Edm.Guid",
            oast.Date: "Edm.Date",
            oast.DateTime: "Edm.DateTimeOffset",
        }.get(type(node), type(node).__name__)

        def mismatch() -> DataverseError:
            left = EDM_TYPES.get(kind or "", "Edm.String")
            return bad_request(
                f"A binary operator with incompatible types was detected. Found operand types "
                f"'{left}' and '{edm}' for operator kind '{_OPNAME.get(op, 'Equal')}'."
            )

        if kind is None:  # metadata rows: plain values
            if isinstance(node, oast.Integer):
                return int(raw)
            if isinstance(node, oast.Float):
                return float(raw)
            if isinstance(node, oast.Boolean):
                return raw.lower() == "true"
            return raw
        if kind in NUMERIC_TYPES or kind in CHOICE_TYPES:
            if isinstance(node, oast.Integer):
                return int(raw)
            if isinstance(node, oast.Float) and kind not in CHOICE_TYPES:
                return float(raw)
            raise mismatch()
        if kind == "Boolean":
            if isinstance(node, oast.Boolean):
                return raw.lower() == "true"
            if isinstance(node, oast.Integer) and raw in ("0", "1"):
                return raw == "1"
            raise mismatch()
        if kind in _GUID_TYPES:
            if isinstance(node, oast.GUID) or (isinstance(node, oast.String) and _GUID_RE.fullmatch(raw or "")):
                return raw.lower()
            raise mismatch()
        if kind == "DateTime":
            if isinstance(node, (oast.Date, oast.DateTime)) or isinstance(node, oast.String):
                text = raw if not isinstance(node, oast.Date) or attr.dateonly else raw + "T00:00:00Z"  # type: ignore[union-attr]
                return _fmt_dt(text, bool(attr and attr.dateonly))
            raise mismatch()
        if isinstance(node, oast.String):
            return raw.lower()
        raise mismatch()

    # -- operands --------------------------------------------------------------------------------
    def _operand(self, node: Any) -> Operand:
        if isinstance(node, oast.Identifier):
            name = node.name
            if self.table is None:
                return Operand(lambda r, n=name: r.get(n), None, node=node)
            attr = self.table.attrs.get(name)
            if attr is None:
                raise no_property(name, self.table.logical)
            return Operand(lambda r, n=name: r.get(n), attr, node=node)
        if isinstance(node, oast.Attribute) and isinstance(node.owner, oast.Identifier):
            if self.table is None or self.org is None:
                raise bad_request("Property paths are not supported here.")
            navs = self.table.nav_map()
            nav = node.owner.name
            if nav not in navs:
                raise no_property(nav, self.table.logical)
            lk, target = navs[nav]
            ttable = self.org.table(target)
            tattr = ttable.attrs.get(node.attr)
            if tattr is None:
                raise no_property(node.attr, target)
            rows = self.org.data[target].rows
            web, col = lk.web, node.attr
            return Operand(lambda r: (rows.get(r.get(web) or "") or {}).get(col), tattr, node=node)
        if (
            isinstance(node, oast.Call)
            and node.func.name.lower() in ("tolower", "toupper")
            and len(node.args) == 1
        ):
            inner = self._operand(node.args[0])
            g = inner.getter
            if g is None:
                raise bad_request("tolower/toupper need a property.")
            return Operand(lambda r: (v.lower() if isinstance(v := g(r), str) else v), inner.attr, node=node)
        if isinstance(node, oast._Literal) or isinstance(node, oast.List):
            return Operand(None, None, node=node)
        raise bad_request(f"The $filter expression '{type(node).__name__}' is not supported.")

    # -- index use -------------------------------------------------------------------------------
    def candidates(self, text: str) -> set[str] | None:
        """Ids that may match, from equality indexes on AND-ed conjuncts (None: scan everything)."""
        if self.org is None or self.table is None:
            return None
        return self._cand(parse_filter(text))

    def _cand(self, node: Any) -> set[str] | None:
        assert self.org is not None and self.table is not None
        if isinstance(node, oast.BoolOp):
            a, b = self._cand(node.left), self._cand(node.right)
            if isinstance(node.op, oast.And):
                if a is None or b is None:
                    return a if b is None else b
                return a & b
            return None if a is None or b is None else a | b
        if (
            isinstance(node, oast.Compare)
            and isinstance(node.comparator, oast.Eq)
            and isinstance(node.left, oast.Identifier)
            and isinstance(node.right, (oast.GUID, oast.String))
        ):
            return self.org.ids_where(self.table.logical, node.left.name, node.right.val)
        return None


# -- $select / $orderby / $expand -----------------------------------------------------------------
def split_top(text: str, sep: str = ",") -> list[str]:
    """Split on `sep` outside parentheses and quotes."""
    out, depth, cur, quoted = [], 0, [], False
    for ch in text:
        if ch == "'":
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
        if ch == sep and depth == 0 and not quoted:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        out.append("".join(cur).strip())
    return out


def parse_select(text: str | None, table: Table) -> list[str] | None:
    if text is None:
        return None
    cols = [c.strip() for c in text.split(",") if c.strip()]
    for c in cols:
        if c not in table.attrs:
            raise no_property(c, table.logical)
    if table.pk not in cols:
        cols.append(table.pk)
    return cols


def parse_orderby(text: str | None, table: Table) -> list[tuple[str, bool]]:
    if not text:
        return []
    out = []
    for part in text.split(","):
        bits = part.split()
        if not bits or len(bits) > 2 or (len(bits) == 2 and bits[1].lower() not in ("asc", "desc")):
            raise bad_request(f"Syntax error in $orderby '{text}'.")
        if bits[0] not in table.attrs:
            raise no_property(bits[0], table.logical)
        out.append((bits[0], len(bits) == 2 and bits[1].lower() == "desc"))
    return out


def sort_rows(rows: list[Row], order: list[tuple[str, bool]]) -> list[Row]:
    for col, desc in reversed(order):

        def key(r: Row, c: str = col) -> tuple[int, Any]:
            v = r.get(c)
            if v is None:
                return (0, 0)
            return (1, v.lower() if isinstance(v, str) else v)

        rows.sort(key=key, reverse=desc)
    return rows


@dataclass
class Expand:
    nav: str
    attr: Attribute
    target: str
    select: list[str] | None
    children: list[Expand] = field(default_factory=list)


def parse_expand(text: str | None, org: Org, table: Table) -> list[Expand]:
    if not text:
        return []
    out: list[Expand] = []
    navs = table.nav_map()
    for item in split_top(text):
        m = re.fullmatch(r"([A-Za-z0-9_]+)(?:\((.*)\))?", item, re.S)
        if not m:
            raise bad_request(f"Syntax error in $expand '{text}'.")
        nav, opts = m.group(1), m.group(2)
        if nav not in navs:
            raise no_property(nav, table.logical)
        attr, target = navs[nav]
        ttable = org.table(target)
        select, children = None, []
        for opt in split_top(opts or "", ";"):
            key, _, val = opt.partition("=")
            if key == "$select":
                select = parse_select(val, ttable)
            elif key == "$expand":
                children = parse_expand(val, org, ttable)
            else:
                raise bad_request(
                    f"The query option '{key}' is not supported inside $expand of a "
                    "single-valued navigation property."
                )
        out.append(Expand(nav, attr, target, select, children))
    return out


# -- annotations ----------------------------------------------------------------------------------
FORMATTED = "OData.Community.Display.V1.FormattedValue"
LOOKUPNAME = "Microsoft.Dynamics.CRM.lookuplogicalname"
NAVPROP = "Microsoft.Dynamics.CRM.associatednavigationproperty"


def annotations_wanted(prefer: str | None) -> set[str]:
    """Parse `odata.include-annotations` from a Prefer header (quoted or not, '*' or list)."""
    if not prefer:
        return set()
    m = re.search(r'odata\.include-annotations\s*=\s*"?([^",;]*(?:,[^",;]*)*)"?', prefer)
    if not m:
        return set()
    names = {n.strip() for n in m.group(1).split(",") if n.strip()}
    if "*" in names or "OData.Community.Display.V1.*" in names or "Microsoft.Dynamics.CRM.*" in names:
        return {FORMATTED, LOOKUPNAME, NAVPROP}
    return names & {FORMATTED, LOOKUPNAME, NAVPROP}


def format_value(attr: Attribute, v: Any) -> str | None:
    t = attr.type
    if t in CHOICE_TYPES:
        return attr.options.get(v)
    if t == "Boolean":
        return attr.options.get(1 if v else 0, "Yes" if v else "No")
    if t == "Money":
        return f"${v:,.2f}" if v >= 0 else f"-${-v:,.2f}"
    if t in ("Integer", "BigInt"):
        return f"{v:,}"
    if t in ("Decimal", "Double"):
        return f"{v:,.2f}"
    if t == "DateTime" and isinstance(v, str):
        if attr.dateonly or len(v) == 10:
            return f"{int(v[5:7])}/{int(v[8:10])}/{v[:4]}"
        h = int(v[11:13])
        return f"{int(v[5:7])}/{int(v[8:10])}/{v[:4]} {(h % 12) or 12}:{v[14:16]} {'AM' if h < 12 else 'PM'}"
    return None


class Shaper:
    """Turns stored rows into response rows (projection, etag, annotations, expands)."""

    def __init__(
        self, org: Org, table: Table, select: list[str] | None, annotations: set[str], expands: list[Expand]
    ):
        self.org, self.table, self.select, self.ann, self.expands = org, table, select, annotations, expands
        cols = select if select is not None else list(table.attrs)
        self.ann_cols = [
            (c, table.attrs[c])
            for c in cols
            if table.attrs[c].type not in ("String", "Memo", "Uniqueidentifier")
        ]
        self.sub = {
            e.nav: Shaper(org, org.table(e.target), e.select, annotations, e.children) for e in expands
        }

    def shape(self, row: Row) -> dict[str, Any]:
        out: dict[str, Any] = {"@odata.etag": f'W/"{row.get("versionnumber")}"'}
        if self.select is None:
            out.update(row)
        else:
            for c in self.select:
                out[c] = row.get(c)
        if self.ann:
            self._annotate(row, out)
        for e in self.expands:
            target = self.org.data[e.target].rows.get(row.get(e.attr.web) or "")
            out[e.nav] = self.sub[e.nav].shape(target) if target is not None else None
        return out

    def _annotate(self, row: Row, out: dict[str, Any]) -> None:
        for c, attr in self.ann_cols:
            v = row.get(c)
            if v is None:
                continue
            if attr.type in LOOKUP_TYPES:
                logical, name = self.lookup_target(attr, v)
                if FORMATTED in self.ann and name is not None:
                    out[f"{c}@{FORMATTED}"] = name
                if NAVPROP in self.ann:
                    nav = f"{attr.name}_{logical}" if attr.type == "Customer" else attr.name
                    out[f"{c}@{NAVPROP}"] = nav
                if LOOKUPNAME in self.ann:
                    out[f"{c}@{LOOKUPNAME}"] = logical
            elif FORMATTED in self.ann:
                f = format_value(attr, v)
                if f is not None:
                    out[f"{c}@{FORMATTED}"] = f

    def lookup_target(self, attr: Attribute, rid: str) -> tuple[str, str | None]:
        for t in attr.targets:
            r = self.org.data[t].rows.get(rid)
            if r is not None:
                return t, r.get(self.org.table(t).primary_name)
        return attr.targets[0], None
