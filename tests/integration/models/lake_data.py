"""A small synthetic org written into a real lake (Azurite) through the Lake API, in the sync's layout,
so the training pipeline can run for real before/independently of the sync. Planted signal: budget status
and the account's industry drive the win rate."""

from __future__ import annotations

import datetime as dt
import random
import uuid
from typing import Any

from connectors.lake import Lake, rows_to_table, schema_from_attributes

OPP_ATTRS = [
    {"name": "opportunityid", "type": "Uniqueidentifier", "custom": False, "label": "Opportunity"},
    {"name": "name", "type": "String", "custom": False, "label": "Topic"},
    {"name": "statecode", "type": "State", "custom": False, "label": "Status"},
    {"name": "estimatedvalue", "type": "Money", "custom": False, "label": "Est. Revenue"},
    {"name": "budgetstatus", "type": "Picklist", "custom": False, "label": "Budget"},
    {"name": "new_region", "type": "Picklist", "custom": True, "label": "Region"},
    {"name": "createdon", "type": "DateTime", "custom": False, "label": "Created On"},
    {"name": "modifiedon", "type": "DateTime", "custom": False, "label": "Modified On"},
    {"name": "actualclosedate", "type": "DateTime", "custom": False, "label": "Actual Close Date"},
    {"name": "estimatedclosedate", "type": "DateTime", "custom": False, "label": "Est. Close Date"},
    {"name": "_parentaccountid_value", "type": "Lookup", "custom": False, "label": "Account"},
    {"name": "_ownerid_value", "type": "Owner", "custom": False, "label": "Owner"},
]
ACC_ATTRS = [
    {"name": "accountid", "type": "Uniqueidentifier", "custom": False, "label": "Account"},
    {"name": "name", "type": "String", "custom": False, "label": "Account Name"},
    {"name": "industrycode", "type": "Picklist", "custom": False, "label": "Industry"},
]
OPTIONSETS = {
    "opportunity": {
        "statecode": {"0": "Open", "1": "Won", "2": "Lost"},
        "budgetstatus": {"0": "No Committed Budget", "1": "May Buy", "2": "Can Buy", "3": "Will Buy"},
        "new_region": {"1": "North", "2": "South", "3": "East", "4": "West"},
    },
    "account": {"industrycode": {"1": "Accounting", "2": "Consulting", "3": "Retail"}},
}
PROCESSES: list[dict[str, Any]] = [
    {
        "workflowid": "919e14d1-6489-4852-abd0-a63a6ecaac5d",
        "name": "Opportunity Sales Process",
        "uniquename": "opportunitysalesprocess",
        "stages": [
            {
                "processstageid": "6b9ce83d-0000-0000-0000-000000000001",
                "stagename": "Qualify",
                "stagecategory": 0,
                "order": 0,
            },
            {
                "processstageid": "6b9ce83d-0000-0000-0000-000000000002",
                "stagename": "Close",
                "stagecategory": 3,
                "order": 1,
            },
        ],
    }
]


def _write_table(
    lake: Lake,
    table: str,
    attrs: list[dict[str, Any]],
    key: str,
    rows: list[dict[str, Any]],
    *,
    history: bool = False,
) -> None:
    schema = schema_from_attributes(attrs, key=key)
    lake.tables.overwrite(lake.current_path(table), rows_to_table(rows, schema), metadata={"sync_id": "seed"})


def seed_lake(lake: Lake, *, opportunities: int = 600, seed: int = 3, now: dt.datetime | None = None) -> dict:
    """Writes opportunity, account, systemuser (+ empty BPF tables) and metadata; returns counts."""
    now = now or dt.datetime.now(dt.UTC)
    rng = random.Random(seed)
    accounts = [
        {
            "accountid": str(uuid.UUID(int=rng.getrandbits(128))),
            "name": f"Account {i}",
            "industrycode": 1 + i % 3,
        }
        for i in range(40)
    ]
    owners = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(8)]
    rows = []
    counts = {"won": 0, "lost": 0, "open": 0}
    for i in range(opportunities):
        created = now - dt.timedelta(days=rng.uniform(20, 540))
        account = rng.choice(accounts)
        budget = rng.choice([0, 1, 2, 3])
        logit = -1.2 + 0.9 * budget + (0.8 if account["industrycode"] == 2 else 0.0)
        p_win = 1 / (1 + pow(2.718281828, -logit))
        cycle = dt.timedelta(days=rng.uniform(10, 120))
        closed = created + cycle < now - dt.timedelta(days=1) and rng.random() < 0.9
        state = 0
        close_at = None
        if closed:
            state = 1 if rng.random() < p_win else 2
            close_at = created + cycle
        counts[{0: "open", 1: "won", 2: "lost"}[state]] += 1
        rows.append(
            {
                "opportunityid": str(uuid.UUID(int=rng.getrandbits(128))),
                "name": f"Deal {i}",
                "statecode": state,
                "estimatedvalue": round(rng.lognormvariate(10, 1), 2) if rng.random() > 0.05 else None,
                "budgetstatus": budget if rng.random() > 0.07 else None,
                "new_region": rng.choice([1, 2, 3, 4]),
                "createdon": created,
                "modifiedon": close_at or created + dt.timedelta(days=3),
                "actualclosedate": close_at,
                "estimatedclosedate": created + dt.timedelta(days=60),
                "_parentaccountid_value": account["accountid"],
                "_ownerid_value": rng.choice(owners),
            }
        )
    _write_table(lake, "opportunity", OPP_ATTRS, "opportunityid", rows)
    _write_table(lake, "account", ACC_ATTRS, "accountid", accounts)
    user_attrs = [
        {"name": "systemuserid", "type": "Uniqueidentifier"},
        {"name": "fullname", "type": "String"},
    ]
    _write_table(
        lake,
        "systemuser",
        user_attrs,
        "systemuserid",
        [{"systemuserid": o, "fullname": f"User {j}"} for j, o in enumerate(owners)],
    )
    lake.write_json("metadata/attributes/opportunity.json", OPP_ATTRS)
    lake.write_json("metadata/attributes/account.json", ACC_ATTRS)
    lake.write_json("metadata/optionsets.json", OPTIONSETS)
    lake.write_json("metadata/processes.json", PROCESSES)
    return counts
