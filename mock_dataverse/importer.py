"""CSV import through a JSON mapping (format in docs/MOCK.md): closed and open deals become opportunities
with their BPF instance, owners and accounts; `new_` columns get their own option sets.

pandas reads the CSV (plain or zipped, any delimiter, `keep_default_na=False` so a literal "None" stays a
value); everything else is plain Python over the rows.
"""

from __future__ import annotations

import json
import random
import re
import uuid
import zipfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .generator import Generator
from .schema import (
    CHOICE_TYPES,
    DEFAULT_BPF_ID,
    DEFAULT_STAGE_IDS,
    NS,
    STAGE_NAMES,
    Attribute,
    Table,
)
from .store import Org, iso

TYPES = {
    "money": "Money",
    "integer": "Integer",
    "decimal": "Decimal",
    "choice": "Picklist",
    "boolean": "Boolean",
    "text": "String",
    "date": "DateTime",
}
COMPATIBLE = {
    "money": {"Money", "Decimal", "Double"},
    "integer": {"Integer", "BigInt"},
    "decimal": {"Decimal", "Double", "Money"},
    "choice": {"Picklist"},
    "boolean": {"Boolean"},
    "text": {"String", "Memo"},
    "date": {"DateTime"},
}
TOP_KEYS = {
    "name",
    "description",
    "file",
    "csv",
    "id_column",
    "name_template",
    "order_by",
    "outcome",
    "stage",
    "columns",
    "ignore",
    "dates",
    "synthesize_dates",
    "owner",
    "account",
    "related",
    "ignore_unlisted",
    "shift_dates_to_now",
    "shuffle_seed",
}
TRUE = {"yes", "true", "1", "y", "t"}
FALSE = {"no", "false", "0", "n", "f"}


class MappingError(ValueError):
    """An invalid mapping or CSV; the message names the offending field."""


def _need(cond: bool, field: str, message: str) -> None:
    if not cond:
        raise MappingError(f"mapping.{field}: {message}")


def load_mapping(mapping: str | Path | dict[str, Any]) -> tuple[dict[str, Any], Path]:
    if isinstance(mapping, dict):
        return mapping, Path.cwd()
    path = Path(mapping)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MappingError(f"cannot read mapping file {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise MappingError(f"mapping file {path} is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise MappingError("mapping: the top level must be a JSON object")
    return obj, path.resolve().parent


def read_csv(path: Path, opts: dict[str, Any], field: str) -> pd.DataFrame:
    _need(isinstance(opts, dict), field, "must be an object")
    unknown = set(opts) - {"delimiter", "member", "encoding", "na_values"}
    _need(not unknown, field, f"unknown key(s) {sorted(unknown)}")
    sep = opts.get("delimiter", ",")
    _need(isinstance(sep, str) and len(sep) >= 1, f"{field}.delimiter", "must be a string ('auto' sniffs)")
    kw: dict[str, Any] = {
        "sep": None if sep == "auto" else sep,
        "dtype": str,
        "keep_default_na": False,
        "encoding": opts.get("encoding", "utf-8"),
    }
    if sep == "auto":
        kw["engine"] = "python"
    na = opts.get("na_values", [])
    _need(
        isinstance(na, list) and all(isinstance(v, str) for v in na), f"{field}.na_values", "must be strings"
    )
    if not path.exists():
        raise MappingError(f"CSV file not found: {path}")
    try:
        if path.suffix.lower() == ".zip":
            with zipfile.ZipFile(path) as zf:
                member = opts.get("member")
                if member is None:
                    csvs = [
                        n
                        for n in zf.namelist()
                        if n.lower().endswith(".csv") and not n.startswith("__MACOSX")
                    ]
                    _need(
                        len(csvs) == 1,
                        f"{field}.member",
                        f"the zip holds {len(csvs)} CSV files {csvs}; name one",
                    )
                    member = csvs[0]
                _need(member in zf.namelist(), f"{field}.member", f"'{member}' is not in the zip")
                with zf.open(member) as fh:
                    df = pd.read_csv(fh, **kw)
        else:
            df = pd.read_csv(path, **kw)
    except (ValueError, UnicodeDecodeError, zipfile.BadZipFile, pd.errors.ParserError) as exc:
        raise MappingError(f"cannot read CSV {path}: {exc}") from None
    df.columns = [str(c).strip() for c in df.columns]
    if na:
        df = df.replace({v: "" for v in na})
    return df


class _Column:
    """One mapped CSV column -> a target attribute, with its parsed values."""

    def __init__(self, table: Table, source: str, spec: Any, field: str, values: list[str]):
        _need(isinstance(spec, dict), field, 'must be an object like {"target": "new_x", "type": "choice"}')
        unknown = set(spec) - {"target", "type", "label", "true_values", "false_values", "format", "values"}
        _need(not unknown, field, f"unknown key(s) {sorted(unknown)}")
        kind, target = spec.get("type"), spec.get("target")
        _need(kind in TYPES, f"{field}.type", f"{kind!r} is not one of {', '.join(TYPES)}")
        _need(isinstance(target, str) and bool(target), f"{field}.target", "is required (a column name)")
        self.kind, self.source, self.field = kind, source, field
        existing = table.attrs.get(target)
        if target.startswith("new_"):
            _need(
                re.fullmatch(r"new_[a-z0-9_]{1,60}", target) is not None,
                f"{field}.target",
                "custom columns are lower case: new_[a-z0-9_]+",
            )
            attr = Attribute(
                target,
                TYPES[kind],
                spec.get("label") or source,
                custom=True,
                option_set_name=target if kind == "choice" else None,
                max_length=4000 if kind == "text" else None,
                options={1: "Yes", 0: "No"} if kind == "boolean" else {},
            )
            table.add(attr)
        else:
            _need(
                existing is not None and not existing.read_only or target == "createdon",
                f"{field}.target",
                f"'{target}' is not a writable {table.logical} column; use a standard or a new_ column",
            )
            assert existing is not None
            _need(
                existing.type in COMPATIBLE[kind],
                f"{field}.type",
                f"'{target}' is {existing.type}; type '{kind}' does not fit",
            )
            attr = existing
        self.attr = attr
        self.fmt = spec.get("format")
        self.true = {str(v).lower() for v in spec.get("true_values", TRUE)}
        self.false = {str(v).lower() for v in spec.get("false_values", FALSE)}
        if kind == "choice":
            given = spec.get("values")
            if given is not None:
                _need(
                    isinstance(given, dict) and all(isinstance(v, int) for v in given.values()),
                    f"{field}.values",
                    "must map CSV values to integer option values",
                )
                self.codes = {str(k): int(v) for k, v in given.items()}
            else:
                distinct = sorted({v for v in values if v != ""})
                self.codes = {v: 100000000 + i for i, v in enumerate(distinct)}
            # the option set is built from the values (it replaces a standard column's options)
            attr.options = {c: v for v, c in self.codes.items()}
        self.values = [self.parse(v, i) for i, v in enumerate(values)]

    def parse(self, raw: str, i: int) -> Any:
        if raw == "":
            return None
        k = self.kind
        try:
            if k == "money" or k == "decimal":
                return float(raw.replace(",", "")) if k == "money" else float(raw)
            if k == "integer":
                return int(float(raw))
            if k == "choice":
                return self.codes.get(raw)
            if k == "boolean":
                low = raw.lower()
                return True if low in self.true else False if low in self.false else None
            if k == "date":
                d = datetime.strptime(raw, self.fmt).date() if self.fmt else date.fromisoformat(raw[:10])
                return d.isoformat() if self.attr.dateonly else d.isoformat() + "T00:00:00Z"
            return raw[: self.attr.max_length] if self.attr.max_length else raw
        except ValueError:
            raise MappingError(
                f"mapping.{self.field}: row {i + 2} value {raw!r} is not a valid {k}"
            ) from None


def _columns(table: Table, df: pd.DataFrame, specs: Any, field: str) -> list[_Column]:
    _need(isinstance(specs, dict), field, "must be an object {csv column: {target, type}}")
    out = []
    for src, spec in specs.items():
        _need(src in df.columns, f"{field}['{src}']", f"column not in the CSV (columns: {list(df.columns)})")
        out.append(_Column(table, src, spec, f"{field}['{src}']", df[src].tolist()))
    return out


def import_csv(
    org: Org, gen: Generator, import_file: str | Path | None, mapping: str | Path | dict[str, Any] | None
) -> dict[str, Any]:
    if mapping is None:
        raise MappingError("--import needs --mapping")
    m, base = load_mapping(mapping)
    unknown = set(m) - TOP_KEYS
    _need(not unknown, "", f"unknown key(s) {sorted(unknown)}; known: {sorted(TOP_KEYS)}")
    file = Path(import_file) if import_file is not None else None
    if file is None:
        _need(isinstance(m.get("file"), str), "file", "give --import FILE or a 'file' in the mapping")
        file = base / m["file"]
    df = read_csv(file, m.get("csv", {}), "csv")
    n = len(df)
    _need(n > 0, "file", f"{file} has no rows")
    used: set[str] = set()

    out = m.get("outcome")
    _need(
        isinstance(out, dict) and isinstance(out.get("column"), str),
        "outcome",
        'is required: {"column": ..., "won": [...], "lost": [...]}',
    )
    _need(out["column"] in df.columns, "outcome.column", f"'{out['column']}' is not in the CSV")
    for k in ("won", "lost"):
        _need(
            isinstance(out.get(k), list) and out[k] and all(isinstance(v, str) for v in out[k]),
            f"outcome.{k}",
            "must be a non-empty list of strings",
        )
    used.add(out["column"])
    outcome = [
        "won" if v in out["won"] else "lost" if v in out["lost"] else "open" for v in df[out["column"]]
    ]

    # row order: the time order of the import
    order = list(range(n))
    if m.get("order_by") is not None:
        col = m["order_by"]
        _need(col in df.columns, "order_by", f"'{col}' is not in the CSV")
        key = pd.to_numeric(df[col], errors="coerce")
        series = key if key.notna().all() else df[col]
        order = sorted(range(n), key=lambda i: (series.iloc[i], i))
    if m.get("shuffle_seed") is not None:  # a random time order (no drift), the same for the same seed
        seed = m["shuffle_seed"]
        _need(isinstance(seed, int) and not isinstance(seed, bool), "shuffle_seed", "must be an integer")
        _need(m.get("order_by") is None, "shuffle_seed", "cannot be combined with order_by")
        order = [int(i) for i in np.random.default_rng(seed).permutation(n)]

    ignore = m.get("ignore", {})
    _need(isinstance(ignore, (dict, list)), "ignore", "must be {column: reason} or a list of columns")
    for col in ignore:
        _need(col in df.columns, f"ignore['{col}']", "column not in the CSV")
    used |= set(ignore)

    opp = org.table("opportunity")
    cols = _columns(opp, df, m.get("columns", {}), "columns")
    used |= {c.source for c in cols}
    id_col = m.get("id_column")
    if id_col is not None:
        _need(id_col in df.columns, "id_column", f"'{id_col}' is not in the CSV")
        used.add(id_col)

    # stage of open rows
    stage_of = [3] * n
    st = m.get("stage")
    if st is not None:
        _need(
            isinstance(st, dict) and st.get("column") in df.columns, "stage.column", "must name a CSV column"
        )
        vals = st.get("values", {})
        _need(
            isinstance(vals, dict) and all(v in STAGE_NAMES for v in vals.values()),
            "stage.values",
            f"must map CSV values to one of {STAGE_NAMES}",
        )
        used.add(st["column"])
        stage_of = [STAGE_NAMES.index(vals[v]) if v in vals else 0 for v in df[st["column"]]]
    for i in range(n):
        if outcome[i] != "open":
            stage_of[i] = 3
        elif st is None:
            stage_of[i] = 0

    now = org.now()
    rng = random.Random(0)
    created, closed = _dates(m, df, outcome, order, now, rng, used, n)

    owners = _owners(org, gen, m, df, used)
    accounts = _accounts(org, m, df, base, file, used, now)
    related_cols = _related(org, m, df, base, file, used)

    if not m.get("ignore_unlisted", False):
        extra = [c for c in df.columns if c not in used]
        _need(
            not extra,
            "ignore",
            f"CSV column(s) {extra} are neither mapped, ignored nor used; add them to "
            "'ignore' with the reason",
        )

    name_tpl = m.get("name_template")
    label = m.get("name") or file.stem
    ids_src = df[id_col].tolist() if id_col else None
    rank = {i: r for r, i in enumerate(order)}
    for pos, i in enumerate(order):
        oid = str(uuid.uuid5(NS, f"import/{label}/{i}"))
        row: dict[str, Any] = {"opportunityid": oid}
        for c in cols + related_cols:
            v = c.values[i]
            if v is not None or c.attr.web not in row:
                row[c.attr.web] = v
        if name_tpl:
            try:
                row["name"] = str(name_tpl).format(**df.iloc[i].to_dict())[:300]
            except (KeyError, IndexError, ValueError) as exc:
                raise MappingError(f"mapping.name_template: {exc}") from None
        elif not row.get("name"):
            row["name"] = f"{label} {ids_src[i] if ids_src else rank[i] + 1}"
        if owners is not None:
            row["_ownerid_value"] = owners[i]
        else:
            row["_ownerid_value"] = org.app_user_id
        if accounts is not None and accounts[i] is not None:
            row["_parentaccountid_value"] = row["_customerid_value"] = accounts[i]
        o = outcome[i]
        stage = stage_of[i]
        row.update(
            statecode={"won": 1, "lost": 2, "open": 0}[o],
            statuscode={"won": 3, "lost": 5, "open": 1}[o],
            salesstage=stage,
            stepname=f"{stage + 1}-{STAGE_NAMES[stage]}",
            createdon=created[i],
            modifiedon=iso(datetime.fromisoformat(closed[i]).replace(tzinfo=UTC) + timedelta(hours=17))
            if closed[i]
            else created[i],
        )
        row.setdefault("decisionmaker", False)
        if o != "open":
            row["actualclosedate"] = row.get("actualclosedate") or closed[i]
        org.insert("opportunity", row)
        org.insert(
            "opportunitysalesprocess",
            {
                "businessprocessflowinstanceid": str(uuid.uuid5(NS, f"import/{label}/{i}/bpf")),
                "name": row["name"][:200],
                "_opportunityid_value": oid,
                "_processid_value": DEFAULT_BPF_ID,
                "_activestageid_value": DEFAULT_STAGE_IDS[stage],
                "activestagestartedon": created[i],
                "traversedpath": ",".join(DEFAULT_STAGE_IDS[: stage + 1]),
                "statecode": 0 if o == "open" else 1,
                "statuscode": {"won": 2, "lost": 3, "open": 1}[o],
                "completedon": row["modifiedon"] if o != "open" else None,
                "createdon": created[i],
                "modifiedon": row["modifiedon"],
            },
        )
        _ = pos
    counts = {k: outcome.count(k) for k in ("won", "lost", "open")}
    return {
        "file": str(file),
        "rows": n,
        **counts,
        "owners": len(set(owners)) if owners else 0,
        "accounts": len({a for a in accounts if a}) if accounts else 0,
        "columns": {c.source: c.attr.name for c in cols + related_cols},
        "ignored": ignore if isinstance(ignore, dict) else {c: "" for c in ignore},
    }


def _dates(
    m: dict[str, Any],
    df: pd.DataFrame,
    outcome: list[str],
    order: list[int],
    now: datetime,
    rng: random.Random,
    used: set[str],
    n: int,
) -> tuple[list[str], list[str | None]]:
    """createdon (ISO datetime) and actualclosedate (ISO date or None) per row."""
    created: list[str | None] = [None] * n
    closed: list[str | None] = [None] * n
    d = m.get("dates")
    if d is not None:
        _need(
            isinstance(d, dict), "dates", 'must be {"createdon": col, "actualclosedate": col, "format": ...}'
        )
        fmt = d.get("format")
        for target in ("createdon", "actualclosedate"):
            col = d.get(target)
            if col is None:
                continue
            _need(col in df.columns, f"dates.{target}", f"'{col}' is not in the CSV")
            used.add(col)
            for i, raw in enumerate(df[col]):
                if raw == "":
                    continue
                try:
                    day = datetime.strptime(raw, fmt).date() if fmt else date.fromisoformat(raw[:10])
                except ValueError:
                    raise MappingError(
                        f"mapping.dates.{target}: row {i + 2} value {raw!r} is not a date"
                    ) from None
                (created if target == "createdon" else closed)[i] = day.isoformat()
        known = [x for x in created + closed if x]
        _need(bool(known), "dates", "no parsable dates in the mapped columns")
        last = max(date.fromisoformat(x) for x in known)
        shift = (now.date() - timedelta(days=1) - last) if m.get("shift_dates_to_now", True) else timedelta(0)
        for i in range(n):
            c = date.fromisoformat(created[i]) + shift if created[i] else None
            e = date.fromisoformat(closed[i]) + shift if closed[i] else None
            if c is None:  # e.g. prospects without an engage date: shortly before the close or the data's end
                c = (e or (last + shift)) - timedelta(days=rng.randint(1, 30))
            if outcome[i] != "open" and e is None:
                e = c + timedelta(days=rng.randint(10, 90))
            created[i] = iso(datetime(c.year, c.month, c.day, 9, tzinfo=UTC) + timedelta(minutes=i % 480))
            closed[i] = e.isoformat() if (e and outcome[i] != "open") else None
        return [c or "" for c in created], closed
    syn = m.get("synthesize_dates")
    _need(isinstance(syn, dict), "synthesize_dates", "give 'dates' or 'synthesize_dates': {\"span_days\": N}")
    span = syn.get("span_days")
    cycle = syn.get("cycle_days", 30)
    _need(isinstance(span, int) and span > 0, "synthesize_dates.span_days", "must be a positive integer")
    _need(isinstance(cycle, int) and cycle >= 0, "synthesize_dates.cycle_days", "must be an integer >= 0")
    end = now - timedelta(days=cycle + 1)
    start = end - timedelta(days=span)
    for pos, i in enumerate(order):
        c = start + timedelta(seconds=span * 86400 * pos / max(1, n - 1))
        created[i] = iso(c)
        if outcome[i] != "open":
            closed[i] = (c + timedelta(days=cycle)).date().isoformat()
    return [c or "" for c in created], closed


def _owners(
    org: Org, gen: Generator, m: dict[str, Any], df: pd.DataFrame, used: set[str]
) -> list[str] | None:
    spec = m.get("owner")
    if spec is None:
        return None
    _need(
        isinstance(spec, dict) and spec.get("column") in df.columns, "owner.column", "must name a CSV column"
    )
    col = spec["column"]
    used.add(col)
    ids: dict[str, str] = {}
    for name in sorted(set(df[col]) - {""}):
        uid = str(uuid.uuid5(NS, f"owner/{name}"))
        ids[name] = uid
        org.insert(
            "systemuser",
            {
                "systemuserid": uid,
                "fullname": name[:200],
                "isdisabled": False,
                "internalemailaddress": re.sub(r"[^a-z0-9.]", "", name.lower().replace(" ", "."))
                + "@import.example",
            },
        )
    return [ids.get(v, org.app_user_id) for v in df[col]]


def _accounts(
    org: Org, m: dict[str, Any], df: pd.DataFrame, base: Path, file: Path, used: set[str], now: datetime
) -> list[str | None] | None:
    spec = m.get("account")
    if spec is None:
        return None
    _need(
        isinstance(spec, dict) and spec.get("column") in df.columns,
        "account.column",
        "must name a CSV column",
    )
    col = spec["column"]
    used.add(col)
    names = sorted(set(df[col]) - {""})
    attrs: dict[str, dict[str, Any]] = {n: {} for n in names}
    if spec.get("file"):
        adf = read_csv(_related_path(spec["file"], base, file), spec.get("csv", {}), "account.csv")
        key = spec.get("key", col)
        _need(key in adf.columns, "account.key", f"'{key}' is not in {spec['file']}")
        acols = _columns(org.table("account"), adf, spec.get("columns", {}), "account.columns")
        ign = set(spec.get("ignore", {}))
        extra = [c for c in adf.columns if c not in ign and c != key and c not in {x.source for x in acols}]
        _need(not extra, "account.ignore", f"account file column(s) {extra} are neither mapped nor ignored")
        for j, k in enumerate(adf[key]):
            if k in attrs:
                attrs[k] = {c.attr.web: c.values[j] for c in acols}
    ids: dict[str, str] = {}
    for name in names:
        aid = str(uuid.uuid5(NS, f"account/{name}"))
        ids[name] = aid
        org.insert(
            "account",
            {
                "accountid": aid,
                "name": name[:160],
                "statecode": 0,
                "statuscode": 1,
                "_ownerid_value": org.app_user_id,
                "customertypecode": 3,
                "createdon": iso(now - timedelta(days=3 * 365)),
                **attrs[name],
            },
        )
    return [ids.get(v) for v in df[col]]


def _related_path(name: str, base: Path, file: Path) -> Path:
    p = file.parent / name
    return p if p.exists() else base / name


def _related(
    org: Org, m: dict[str, Any], df: pd.DataFrame, base: Path, file: Path, used: set[str]
) -> list[_Column]:
    """Columns joined from other CSVs (e.g. Maven's products.csv sales_price -> estimatedvalue)."""
    rel = m.get("related", [])
    _need(isinstance(rel, list), "related", "must be a list")
    out: list[_Column] = []
    for k, spec in enumerate(rel):
        f = f"related[{k}]"
        _need(isinstance(spec, dict) and isinstance(spec.get("file"), str), f"{f}.file", "is required")
        on, key = spec.get("on"), spec.get("key")
        _need(on in df.columns, f"{f}.on", f"'{on}' is not a column of the main CSV")
        rdf = read_csv(_related_path(spec["file"], base, file), spec.get("csv", {}), f"{f}.csv")
        _need(key in rdf.columns, f"{f}.key", f"'{key}' is not in {spec['file']}")
        aliases = spec.get("aliases", {})
        _need(isinstance(aliases, dict), f"{f}.aliases", "must map main-CSV values to related-file keys")
        used.add(on)
        index = {v: j for j, v in enumerate(rdf[key])}
        rows = [index.get(aliases.get(v, v)) for v in df[on]]
        joined = pd.DataFrame(
            {c: [rdf[c].iloc[j] if j is not None else "" for j in rows] for c in (spec.get("columns") or {})}
        )
        out += _columns(org.table("opportunity"), joined, spec.get("columns", {}), f"{f}.columns")
    return out


__all__ = ["CHOICE_TYPES", "MappingError", "import_csv", "load_mapping"]
