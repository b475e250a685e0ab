"""Write rules: payload validation (types, option values, lengths, @odata.bind), state/status rules,
opportunity close actions and the BPF instance that follows an opportunity's state."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any
from urllib.parse import unquote

from . import errors as E
from .errors import DataverseError, bad_request
from .schema import CHOICE_TYPES, DEFAULT_STAGE_IDS, EDM_TYPES, PARTNER_STAGE_IDS, Attribute, Table
from .store import Org, Row, iso, parse_iso

IGNORED_ON_WRITE = {"createdon", "modifiedon", "versionnumber"}
KEY_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\((.*)\)$", re.S)
GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def payload_error(message: str) -> DataverseError:
    return DataverseError(400, E.PAYLOAD_ERROR, message)


def _convert_error(value: Any, attr: Attribute) -> DataverseError:
    return payload_error(
        f"Cannot convert the literal '{value}' to the expected type '{EDM_TYPES[attr.type]}'."
    )


def coerce(attr: Attribute, value: Any, logical: str) -> Any:
    """Validate one JSON value for a column; returns the stored form."""
    if value is None:
        return None
    t = attr.type
    if t in ("String", "Memo"):
        if not isinstance(value, str):
            raise _convert_error(value, attr)
        if attr.max_length is not None and len(value) > attr.max_length:
            raise DataverseError(
                400,
                E.VALIDATION,
                f"A validation error occurred.  The length of the '{attr.name}' "
                f"attribute of the '{logical}' entity exceeded the maximum allowed length of "
                f"'{attr.max_length}'.",
            )
        return value
    if t in ("Integer", "BigInt") or t in CHOICE_TYPES:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer() and t not in CHOICE_TYPES:
                value = int(value)
            else:
                raise _convert_error(value, attr)
        if t in CHOICE_TYPES and value not in attr.options:
            raise DataverseError(
                400,
                E.PICKLIST_RANGE,
                f"A validation error occurred. The value {value} of "
                f"'{attr.name}' on record of type '{logical}' is outside the valid range. "
                f"Accepted Values: {','.join(str(k) for k in attr.options)}",
            )
        _range(attr, value, logical)
        return value
    if t in ("Money", "Decimal", "Double"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _convert_error(value, attr)
        _range(attr, value, logical)
        return float(value)
    if t == "Boolean":
        if not isinstance(value, bool):
            raise _convert_error(value, attr)
        return value
    if t == "DateTime":
        if not isinstance(value, str):
            raise _convert_error(value, attr)
        try:
            if attr.dateonly:
                return (
                    date.fromisoformat(value) if len(value) == 10 else parse_iso(value).date()
                ).isoformat()
            if len(value) == 10:
                return date.fromisoformat(value).isoformat() + "T00:00:00Z"
            return iso(parse_iso(value))
        except ValueError:
            raise _convert_error(value, attr) from None
    if t == "Uniqueidentifier":
        if not isinstance(value, str) or not GUID_RE.fullmatch(value):
            raise _convert_error(value, attr)
        return value.lower()
    raise payload_error(f"The property '{attr.web}' cannot be set directly; use a navigation property.")


def _range(attr: Attribute, value: float, logical: str) -> None:
    if (attr.min_value is not None and value < attr.min_value) or (
        attr.max_value is not None and value > attr.max_value
    ):
        raise DataverseError(
            400,
            E.VALIDATION,
            f"A validation error occurred. The value {value} of '{attr.name}' on "
            f"record of type '{logical}' is outside the valid range({attr.min_value} to "
            f"{attr.max_value}).",
        )


def parse_key(org: Org, table: Table, text: str) -> dict[str, Any]:
    """`guid`, `pk=guid` or `k1='v',k2=2` -> {column: value}."""
    text = unquote(text).strip()
    if GUID_RE.fullmatch(text):
        return {table.pk: text.lower()}
    out: dict[str, Any] = {}
    parts = re.findall(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*('(?:[^']|'')*'|[^,]+)\s*(?:,|$)", text)
    if not parts:
        raise bad_request(f"Bad Request - Error in query syntax: invalid key '{text}'.")
    for name, raw in parts:
        if raw.startswith("'"):
            val: Any = raw[1:-1].replace("''", "'")
        elif GUID_RE.fullmatch(raw):
            val = raw.lower()
        else:
            try:
                val = int(raw)
            except ValueError:
                raise bad_request(
                    f"Bad Request - Error in query syntax: invalid key value '{raw}'."
                ) from None
        out[name] = val
    if set(out) == {table.pk}:
        return out
    if not any(set(out) == set(k) for k in table.alt_keys):
        raise bad_request(
            f"The key specified ({', '.join(out)}) is not a key defined on entity '{table.logical}'."
        )
    return out


def resolve_ref(
    org: Org, ref: str, content_ids: dict[str, str] | None, api_base: str
) -> tuple[str, Row | None]:
    """A bind value (`/accounts(id)`, full URL, or `$1`) -> (logical name, row or None)."""
    if content_ids is not None and ref.startswith("$") and ref[1:].isdigit():
        if ref not in content_ids:
            raise bad_request(f"Content-ID Reference: '{ref}' does not exist in the batch context.")
        ref = content_ids[ref]
    path = ref.split("/api/data/", 1)[-1]
    path = re.sub(r"^v\d+\.\d+/", "", path).lstrip("/")
    m = KEY_RE.match(path)
    if not m or m.group(1) not in org.by_set:
        raise payload_error(f"The bind reference '{ref}' is not a valid entity reference.")
    logical = org.by_set[m.group(1)]
    table = org.table(logical)
    key = parse_key(org, table, m.group(2))
    row = org.get(logical, key[table.pk]) if table.pk in key else org.find_alt(logical, key)
    return logical, row


def validate_body(
    org: Org,
    table: Table,
    body: Any,
    *,
    creating: bool,
    content_ids: dict[str, str] | None = None,
    api_base: str = "",
) -> Row:
    """JSON body -> column changes (Web API names), or a 400 naming the first problem."""
    if not isinstance(body, dict):
        raise payload_error("The payload must be a JSON object.")
    navs = table.nav_map()
    changes: Row = {}
    for key, value in body.items():
        if key.endswith("@odata.bind") or key in navs:
            nav = key[: -len("@odata.bind")] if key.endswith("@odata.bind") else key
            if nav not in navs:
                raise payload_error(
                    f"An undeclared property '{nav}' which only has property annotations in the "
                    "payload but no property value was found in the payload. In OData, only declared "
                    "navigation properties and declared named streams can be represented as "
                    "properties without values."
                )
            attr, target = navs[nav]
            if value is None:
                changes[attr.web] = None
                continue
            if not isinstance(value, str):
                raise payload_error(f"The value of '{key}' must be an entity reference string.")
            logical, row = resolve_ref(org, value, content_ids, api_base)
            allowed = attr.targets if attr.type == "Owner" else [target]
            if logical not in allowed:
                raise payload_error(
                    f"The entity reference '{value}' is of type '{logical}', but '{nav}' expects '{target}'."
                )
            if row is None:
                raise E.not_found(logical, value)
            changes[attr.web] = row[org.table(logical).pk]
            continue
        if "@" in key:  # instance annotations (e.g. @odata.type, @odata.etag) are ignored
            continue
        attr = table.attrs.get(key)
        if attr is None or attr.web != key:
            raise payload_error(
                f"The property '{key}' does not exist on type 'Microsoft.Dynamics.CRM."
                f"{table.logical}'. Make sure to only use property names that are defined by "
                "the type."
            )
        if key in IGNORED_ON_WRITE:
            continue
        if key == table.pk and not creating:
            continue
        changes[key] = coerce(attr, value, table.logical)
    _state_rules(table, changes, creating)
    return changes


def _state_rules(table: Table, changes: Row, creating: bool) -> None:
    st, ss = table.attrs.get("statecode"), table.attrs.get("statuscode")
    if st is None or ss is None:
        return
    state, status = changes.get("statecode"), changes.get("statuscode")
    if "statecode" in changes and state is None or "statuscode" in changes and status is None:
        raise bad_request("statecode and statuscode cannot be null.", E.INVALID_ARGUMENT)
    if creating and table.logical == "opportunity" and state not in (None, 0):
        raise bad_request(
            "An opportunity can only be created open (statecode 0); use WinOpportunity or "
            "LoseOpportunity to close it.",
            E.INVALID_ARGUMENT,
        )
    if state is not None and status is None:
        changes["statuscode"] = st.state_default[state]
    elif status is not None and state is None:
        changes["statecode"] = ss.status_state[status]
    elif state is not None and ss.status_state.get(status) != state:
        raise bad_request(
            f"{status} is not a valid status code for state code {table.logical}State.{st.options[state]}",
            E.INVALID_ARGUMENT,
        )


def check_closed(table: Table, row: Row, changes: Row) -> None:
    """Won and lost opportunities are read-only (except reopening through statecode 0)."""
    if table.logical != "opportunity" or row.get("statecode") in (0, None):
        return
    if changes.get("statecode") == 0:
        return
    raise bad_request(
        "The opportunity is closed (won or lost) and cannot be updated; reopen it first.",
        E.OPP_ALREADY_CLOSED,
    )


def sync_bpf(org: Org, opportunity: Row) -> None:
    """Keep the latest BPF instance of an opportunity in line with its state."""
    ids = (
        org.ids_where("opportunitysalesprocess", "_opportunityid_value", opportunity["opportunityid"])
        or set()
    )
    instances = [org.data["opportunitysalesprocess"].rows[i] for i in ids]
    if not instances:
        return
    inst = max(instances, key=lambda r: r["modifiedon"] or "")
    state = opportunity["statecode"]
    now = org.now_iso()
    if state == 0 and inst["statecode"] != 0:
        org.update(
            "opportunitysalesprocess",
            inst["businessprocessflowinstanceid"],
            {"statecode": 0, "statuscode": 1, "completedon": None},
        )
    elif state in (1, 2) and inst["statecode"] == 0:
        changes: Row = {"statecode": 1, "statuscode": 2 if state == 1 else 3, "completedon": now}
        if state == 1:  # a won deal finishes the process at its last stage
            stages = (
                PARTNER_STAGE_IDS if inst["_activestageid_value"] in PARTNER_STAGE_IDS else DEFAULT_STAGE_IDS
            )
            if inst["_activestageid_value"] != stages[3]:
                changes.update(
                    _activestageid_value=stages[3], activestagestartedon=now, traversedpath=",".join(stages)
                )
        org.update("opportunitysalesprocess", inst["businessprocessflowinstanceid"], changes)


def close_opportunity(
    org: Org, body: Any, won: bool, api_base: str, content_ids: dict[str, str] | None = None
) -> None:
    """WinOpportunity / LoseOpportunity."""
    if not isinstance(body, dict) or not isinstance(body.get("OpportunityClose"), dict):
        raise payload_error("The parameter 'OpportunityClose' is required.")
    unknown = set(body) - {"Status", "OpportunityClose"}
    if unknown:
        raise payload_error(
            f"The parameter '{sorted(unknown)[0]}' in the request payload is not a valid parameter "
            f"for the operation '{'Win' if won else 'Lose'}Opportunity'."
        )
    status = body.get("Status", -1)
    if isinstance(status, bool) or not isinstance(status, int):
        raise payload_error(f"Cannot convert the literal '{status}' to the expected type 'Edm.Int32'.")
    close = body["OpportunityClose"]
    ref = close.get("opportunityid@odata.bind")
    if not isinstance(ref, str):
        raise payload_error("OpportunityClose must bind 'opportunityid@odata.bind' to an opportunity.")
    logical, row = resolve_ref(org, ref, content_ids, api_base)
    if logical != "opportunity":
        raise payload_error("OpportunityClose.opportunityid must reference an opportunity.")
    if row is None:
        raise E.not_found("opportunity", ref)
    if row["statecode"] != 0:
        raise bad_request("The opportunity is already closed.", E.OPP_ALREADY_CLOSED)
    state = 1 if won else 2
    allowed = (3,) if won else (4, 5)
    if status == -1:
        status = allowed[0]
    if status not in allowed:
        raise bad_request(
            f"{status} is not a valid status code for state code OpportunityState.{'Won' if won else 'Lost'}",
            E.INVALID_ARGUMENT,
        )
    changes: Row = {"statecode": state, "statuscode": status}
    end = close.get("actualend")
    changes["actualclosedate"] = str(end)[:10] if isinstance(end, str) else org.now().date().isoformat()
    revenue = close.get("actualrevenue")
    if revenue is not None and (isinstance(revenue, bool) or not isinstance(revenue, (int, float))):
        raise payload_error(f"Cannot convert the literal '{revenue}' to the expected type 'Edm.Decimal'.")
    changes["actualvalue"] = (
        float(revenue) if revenue is not None else (row["estimatedvalue"] if won else None)
    )
    with org.transaction():
        updated = org.update("opportunity", row["opportunityid"], changes)
        sync_bpf(org, updated)


def today_iso(now: datetime) -> str:
    return now.date().isoformat()
