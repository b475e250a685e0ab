"""`sdkmessages` and `sdkmessagefilters`: which messages each table of the mock supports.

Clients read them before the first write to learn whether a table takes the bulk messages, as Microsoft's
documentation shows (PA `bulk-operations.md` "Availability with standard tables"):

    GET sdkmessagefilters?$select=sdkmessagefilterid
        &$filter=sdkmessageid/name eq @message and primaryobjecttypecode eq @table
        &@message='CreateMultiple'&@table='sample_example'

Both are ordinary read-only tables of the org, so `$select`, `$filter` (also on the lookup path
`sdkmessageid/name`), parameter aliases, `$expand=sdkmessageid($select=name)` and paging behave as on
every other table. A write to them is 403 `0x80040220`, as for a user without the system privilege.
"""

from __future__ import annotations

import uuid

from .errors import DataverseError
from .schema import NS, Attribute, Table, _table, lookup, text
from .store import Org

PRIVILEGE_DENIED = "0x80040220"
READ_ONLY_TABLES = frozenset({"sdkmessage", "sdkmessagefilter"})
SINGLE = ("Create", "Update", "Delete", "Retrieve", "RetrieveMultiple", "Upsert")
BULK = ("CreateMultiple", "UpdateMultiple", "UpsertMultiple")
# Tables answering the bulk messages. Microsoft: "not all the core Dataverse tables support them, such as
# Account or Contact" (optimize-performance-create-update.md); the CE entity reference lists
# CreateMultiple/UpdateMultiple for msdyn_predictivescore, and the table has the alternate key that
# UpsertMultiple needs. opportunity (an application table) is given them too; the rest are core tables.
BULK_TABLES = frozenset({"msdyn_predictivescore", "opportunity"})


def message_tables() -> dict[str, Table]:
    """The two metadata tables, added to every org's schema."""
    msg = _table(
        "sdkmessage",
        "sdkmessages",
        "sdkmessageid",
        "name",
        "Sdk Message",
        [
            text("name", "Name", 256),
            text("categoryname", "Category Name", 25),
            Attribute("isprivate", "Boolean", "Is Private", options={0: "No", 1: "Yes"}),
            Attribute("isactive", "Boolean", "Is Active", options={0: "No", 1: "Yes"}),
            Attribute("versionnumber", "BigInt", "Version Number", read_only=True),
        ],
        ownership="OrganizationOwned",
    )
    flt = _table(
        "sdkmessagefilter",
        "sdkmessagefilters",
        "sdkmessagefilterid",
        "name",
        "Sdk Message Filter",
        [
            text("name", "Name", 256),
            lookup("sdkmessageid", "SDK Message ID", "sdkmessage"),
            text("primaryobjecttypecode", "Primary Object Type Code", 64),
            text("secondaryobjecttypecode", "Secondary Object Type Code", 64),
            Attribute(
                "iscustomprocessingstepallowed",
                "Boolean",
                "Custom Processing Step Allowed",
                options={0: "No", 1: "Yes"},
            ),
            Attribute("isvisible", "Boolean", "Is Visible", options={0: "No", 1: "Yes"}),
            Attribute("availability", "Integer", "Availability", min_value=0, max_value=2),
            Attribute("versionnumber", "BigInt", "Version Number", read_only=True),
        ],
        ownership="OrganizationOwned",
    )
    return {"sdkmessage": msg, "sdkmessagefilter": flt}


def supported(logical: str) -> tuple[str, ...]:
    """The messages a table of the mock answers."""
    return SINGLE + (BULK if logical in BULK_TABLES else ())


def seed_messages(org: Org) -> None:
    """One sdkmessage per message name and one filter per (message, table), with stable ids."""
    names = list(SINGLE + BULK)
    ids = {}
    for name in names:
        ids[name] = str(uuid.uuid5(NS, f"sdkmessage/{name}"))
        org.insert(
            "sdkmessage",
            {
                "sdkmessageid": ids[name],
                "name": name,
                "categoryname": "Bulk" if name in BULK else "Entity",
                "isprivate": False,
                "isactive": True,
            },
        )
    for logical in org.schema:
        if logical in READ_ONLY_TABLES:
            continue
        for name in supported(logical):
            org.insert(
                "sdkmessagefilter",
                {
                    "sdkmessagefilterid": str(uuid.uuid5(NS, f"sdkmessagefilter/{logical}/{name}")),
                    "name": f"{name} {logical}",
                    "_sdkmessageid_value": ids[name],
                    "primaryobjecttypecode": logical,
                    "secondaryobjecttypecode": "none",
                    "iscustomprocessingstepallowed": True,
                    "isvisible": True,
                    "availability": 0,
                },
            )


def is_supported(org: Org, logical: str, message: str) -> bool:
    """Whether the org's filters list `message` for `logical` (the bulk actions check it)."""
    ids = org.ids_where("sdkmessagefilter", "primaryobjecttypecode", logical)
    rows = org.data["sdkmessagefilter"].rows
    source = (rows[i] for i in ids) if ids is not None else rows.values()
    msg_rows = org.data["sdkmessage"].rows
    return any((msg_rows.get(r["_sdkmessageid_value"]) or {}).get("name") == message for r in source)


def refuse_write(table: Table, method: str) -> None:
    if table.logical in READ_ONLY_TABLES and method != "GET":
        raise DataverseError(
            403,
            PRIVILEGE_DENIED,
            f"Principal user is missing prvWrite{table.logical} privilege: the {table.set_name} table is read-only.",
        )


def disable(org: Org, pairs: object) -> list[str]:
    """Control plane: remove the filters of `["table/Message", ...]` (an org whose table lacks a message);
    `/_mock/reset` brings them back. Returns the pairs removed; 400 for a malformed or unknown pair."""
    if not isinstance(pairs, list) or not all(isinstance(p, str) and p.count("/") == 1 for p in pairs):
        raise DataverseError(400, "0x0", 'disable must be a list of "table/Message" strings.')
    removed = []
    for pair in pairs:
        logical, name = pair.split("/")
        rid = str(uuid.uuid5(NS, f"sdkmessagefilter/{logical}/{name}"))
        if org.get("sdkmessagefilter", rid) is None:
            raise DataverseError(400, "0x0", f"The org has no sdkmessagefilter for '{pair}'.")
        org.delete("sdkmessagefilter", rid)
        removed.append(pair)
    return removed
