"""The bulk messages bound to an entity set: `POST <set>/Microsoft.Dynamics.CRM.CreateMultiple`,
`UpdateMultiple` and `UpsertMultiple` with `{"Targets": [...]}` (PA `bulk-operations.md`).

As Dataverse does for standard tables, a request is all or nothing: the targets are applied in one
transaction and the first failing target rolls every one back; the answer is that target's own error
(status, code and message, as the single request would have given), so a client cannot tell which target
failed except by sending fewer. Each target must carry `"@odata.type": "Microsoft.Dynamics.CRM.<table>"`.

- `CreateMultiple` -> 200 `{"@odata.context": ...CreateMultipleResponse, "Ids": [...]}`.
- `UpdateMultiple` -> 204; each target names its row by primary key (or `@odata.id`); a missing row is 404.
- `UpsertMultiple` -> 204 ("The UpsertMultiple action returns 204 NoContent. The UpsertMultipleResponse
  complex type is not returned", PA `webapi/reference/upsertmultiple`); a target is found by `@odata.id`
  (`msdyn_predictivescores(msdyn_entityid='...',msdyn_entitytype='opportunity')`, relative or absolute),
  by its primary key, or by the columns of an alternate key in the body; created when absent.

Limits: the table must list the message in `sdkmessagefilters` (400 `0x80040203` otherwise); at most
`MAX_TARGETS` targets (Dataverse sets no count, only size and time limits: 10,000 is the mock's own) and
`MAX_BODY_BYTES` of body (116.85 MB, the size at which Dataverse refuses to pass a request to plug-ins),
413 beyond. Every refusal is a 4xx naming what was wrong.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from . import errors as E
from .errors import DataverseError
from .schema import Table
from .sdkmessages import is_supported
from .writes import KEY_RE, check_closed, coerce, parse_key, payload_error, sync_bpf, validate_body

if TYPE_CHECKING:
    from .api import Api, Response

NS = "Microsoft.Dynamics.CRM."
BULK_ACTIONS = {NS + m: m for m in ("CreateMultiple", "UpdateMultiple", "UpsertMultiple")}
MAX_TARGETS = 10_000
MAX_BODY_BYTES = int(116.85 * 1024 * 1024)


def bulk_action(api: Api, table: Table, action: str, body: Any, size: int) -> Response:
    from .api import Response

    message = BULK_ACTIONS[action]
    if size > MAX_BODY_BYTES:
        raise DataverseError(
            413,
            E.GENERIC,
            f"The request body ({size:,} bytes) exceeds the {MAX_BODY_BYTES:,} "
            f"bytes {message} accepts; send fewer Targets.",
        )
    if not is_supported(api.org, table.logical, message):
        raise DataverseError(
            400, E.INVALID_ARGUMENT, f"The '{message}' message is not supported for entities of type '{table.logical}'."
        )
    targets = _targets(body, message, table)
    with api.org.lock, api.org.transaction():
        ids = [_apply(api, table, message, i, t) for i, t in enumerate(targets)]
    if message != "CreateMultiple":
        resp = Response(204, headers={"OData-Version": "4.0"})
    else:
        ctx = f"{api.base}$metadata#Microsoft.Dynamics.CRM.{message}Response"
        resp = Response.json(200, {"@odata.context": ctx, "Ids": ids})
    resp.write = True
    resp.bulk_operations = len(targets)
    return resp


def _targets(body: Any, message: str, table: Table) -> list[dict[str, Any]]:
    if not isinstance(body, dict):
        raise payload_error(f"The {message} payload must be a JSON object with a 'Targets' array.")
    unknown = sorted(set(body) - {"Targets"})
    if unknown:
        raise payload_error(
            f"The parameter '{unknown[0]}' in the request payload is not a valid parameter for "
            f"the operation '{message}'."
        )
    targets = body.get("Targets")
    if not isinstance(targets, list):
        raise payload_error(f"The parameter 'Targets' of the operation '{message}' is required and must be an array.")
    if not targets:
        raise payload_error(f"The parameter 'Targets' of the operation '{message}' must hold at least one record.")
    if len(targets) > MAX_TARGETS:
        raise DataverseError(
            400,
            E.GENERIC,
            f"{message} received {len(targets):,} Targets; the mock accepts at most {MAX_TARGETS:,} per request.",
        )
    expected = NS + table.logical
    for i, t in enumerate(targets):
        if not isinstance(t, dict):
            raise payload_error(f"Targets[{i}] must be a JSON object.")
        odata_type = t.get("@odata.type")
        if not isinstance(odata_type, str):
            raise payload_error(f"Targets[{i}] has no '@odata.type'; each item must set it to '{expected}'.")
        if odata_type.lstrip("#") != expected:
            raise payload_error(
                f"Targets[{i}] is of type '{odata_type}', but {message} on '{table.set_name}' takes '{expected}'."
            )
    return targets


def _apply(api: Api, table: Table, message: str, index: int, target: dict[str, Any]) -> str:
    org = api.org
    if message == "CreateMultiple":
        changes = validate_body(org, table, target, creating=True, api_base=api.base)
        return str(org.insert(table.logical, api._defaults(table, changes))[table.pk])
    keyvals = _key(api, table, index, target, required=message == "UpdateMultiple")
    row = None if keyvals is None else api._find(table, keyvals)
    if row is None:
        if message == "UpdateMultiple":
            raise api._missing(table, keyvals or {})
        changes = validate_body(org, table, target, creating=True, api_base=api.base)
        changes.update(keyvals or {})
        return str(org.insert(table.logical, api._defaults(table, changes))[table.pk])
    changes = validate_body(org, table, target, creating=False, api_base=api.base)
    check_closed(table, row, changes)
    changes.pop(table.pk, None)
    updated = org.update(table.logical, row[table.pk], changes)
    if table.logical == "opportunity" and "statecode" in changes:
        sync_bpf(org, updated)
    return str(updated[table.pk])


def _key(api: Api, table: Table, index: int, target: dict[str, Any], required: bool) -> dict[str, Any] | None:
    ref = target.get("@odata.id")
    if ref is not None:
        if not isinstance(ref, str):
            raise payload_error(f"Targets[{index}]['@odata.id'] must be a string like '{table.set_name}(<key>)'.")
        path = re.sub(r"^.*?/api/data/v\d+\.\d+/", "", ref).lstrip("/")
        m = KEY_RE.match(path)
        if not m or m.group(1) != table.set_name:
            raise payload_error(f"Targets[{index}]['@odata.id'] '{ref}' does not address a row of '{table.set_name}'.")
        keyvals = parse_key(api.org, table, m.group(2))
        return {c: coerce(table.attrs[c], v, table.logical) for c, v in keyvals.items()}
    if target.get(table.pk) is not None:
        return {table.pk: coerce(table.attrs[table.pk], target[table.pk], table.logical)}
    for cols in table.alt_keys:
        if all(target.get(c) is not None for c in cols):
            return {c: coerce(table.attrs[c], target[c], table.logical) for c in cols}
    if required:
        raise payload_error(f"Targets[{index}] must name its row: set '{table.pk}' or '@odata.id'.")
    return None
