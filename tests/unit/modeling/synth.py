"""Deterministic synthetic lake-shaped tables with planted signal and a leakage trap (unit tests only)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
BPF_ID = "bpf-0001"
STAGES = ["Qualify", "Develop", "Propose", "Close"]
STAGE_IDS = {s: f"stage-{i}" for i, s in enumerate(STAGES)}

OPTIONSETS: dict[str, Any] = {
    "opportunity": {
        "statecode": {"0": "Open", "1": "Won", "2": "Lost"},
        "statuscode": {"1": "In Progress", "3": "Won", "4": "Canceled", "5": "Out-Sold"},
        "budgetstatus": {"0": "No Committed Budget", "1": "May Buy", "2": "Can Buy", "3": "Will Buy"},
        "need": {"0": "Must have", "1": "Should have", "2": "Good to have", "3": "No need"},
        "new_channel": {"100000000": "Direct", "100000001": "Partner", "100000002": "Web"},
    },
    "account": {"industrycode": {"1": "Accounting", "2": "Retail", "3": "Manufacturing"}},
}

ATTRIBUTES: dict[str, Any] = {
    "opportunity": [
        {"name": "opportunityid", "type": "Uniqueidentifier", "custom": False, "label": "Opportunity"},
        {"name": "name", "type": "String", "custom": False, "label": "Topic"},
        {"name": "_parentaccountid_value", "type": "Lookup", "custom": False, "label": "Account"},
        {"name": "_ownerid_value", "type": "Owner", "custom": False, "label": "Owner"},
        {"name": "estimatedvalue", "type": "Money", "custom": False, "label": "Est. Revenue"},
        {"name": "budgetamount", "type": "Money", "custom": False, "label": "Budget Amount"},
        {"name": "closeprobability", "type": "Integer", "custom": False, "label": "Probability"},
        {
            "name": "estimatedclosedate",
            "type": "DateTime",
            "custom": False,
            "label": "Est. Close Date",
            "dateonly": True,
        },
        {"name": "actualclosedate", "type": "DateTime", "custom": False, "label": "Actual Close Date"},
        {"name": "actualvalue", "type": "Money", "custom": False, "label": "Actual Revenue"},
        {"name": "budgetstatus", "type": "Picklist", "custom": False, "label": "Budget"},
        {"name": "need", "type": "Picklist", "custom": False, "label": "Need"},
        {"name": "stepname", "type": "String", "custom": False, "label": "Pipeline Phase"},
        {"name": "statecode", "type": "State", "custom": False, "label": "Status"},
        {"name": "statuscode", "type": "Status", "custom": False, "label": "Status Reason"},
        {"name": "createdon", "type": "DateTime", "custom": False, "label": "Created On"},
        {"name": "modifiedon", "type": "DateTime", "custom": False, "label": "Modified On"},
        {"name": "versionnumber", "type": "BigInt", "custom": False, "label": "Version Number"},
        {"name": "new_channel", "type": "Picklist", "custom": True, "label": "Channel"},
        {"name": "new_competitorcount", "type": "Integer", "custom": True, "label": "Competitors"},
        {"name": "new_contractnumber", "type": "String", "custom": True, "label": "Contract Number"},
    ],
    "account": [
        {"name": "accountid", "type": "Uniqueidentifier", "custom": False, "label": "Account"},
        {"name": "name", "type": "String", "custom": False, "label": "Account Name"},
        {"name": "industrycode", "type": "Picklist", "custom": False, "label": "Industry"},
        {"name": "revenue", "type": "Money", "custom": False, "label": "Annual Revenue"},
        {"name": "numberofemployees", "type": "Integer", "custom": False, "label": "Employees"},
    ],
}

PROCESSES = [
    {
        "workflowid": BPF_ID,
        "name": "Opportunity Sales Process",
        "uniquename": "opportunitysalesprocess",
        "stages": [
            {"processstageid": STAGE_IDS[s], "stagename": s, "stagecategory": i, "order": i}
            for i, s in enumerate(STAGES)
        ],
    }
]


def metadata() -> dict[str, Any]:
    return {"attributes": ATTRIBUTES, "optionsets": OPTIONSETS, "processes": PROCESSES}


def make_tables(
    n: int = 1200, seed: int = 7, n_open: int = 200, now: datetime = NOW
) -> dict[str, pd.DataFrame]:
    """n closed + n_open open opportunities over the last 20 months, with planted signal:
    budgetstatus, need, channel, competitors and account industry drive the outcome; the trap
    new_contractnumber is filled on ~97% of won and ~2% of other deals; actualvalue is 0 when lost."""
    rng = np.random.default_rng(seed)
    total = n + n_open
    n_acc, n_own = 60, 12
    accounts = pd.DataFrame(
        {
            "accountid": [f"acc-{i:04d}" for i in range(n_acc)],
            "name": [f"Account {i}" for i in range(n_acc)],
            "industrycode": rng.integers(1, 4, n_acc).astype("int64"),
            "revenue": rng.lognormal(15, 1, n_acc).round(0),
            "numberofemployees": rng.integers(5, 5000, n_acc).astype("int64"),
        }
    )
    acc_skill = rng.normal(0, 0.6, n_acc)
    own_skill = rng.normal(0, 0.5, n_own)
    acc_idx = rng.integers(0, n_acc, total)
    own_idx = rng.integers(0, n_own, total)
    budget = rng.integers(0, 4, total)
    need = rng.integers(0, 4, total)
    channel = rng.choice([100000000, 100000001, 100000002], total)
    comp = rng.integers(0, 5, total)
    value = rng.lognormal(10, 1, total).round(2)
    industry = accounts["industrycode"].to_numpy()[acc_idx]
    logit = (
        -0.3
        + 0.8 * (budget - 1.5)
        - 0.5 * (need - 1.5)
        + 0.6 * (channel == 100000000)
        - 0.35 * comp
        + 0.4 * (industry == 3)
        + acc_skill[acc_idx]
        + own_skill[own_idx]
    )
    p = 1 / (1 + np.exp(-logit))
    won = rng.random(total) < p
    is_open = np.zeros(total, dtype=bool)
    is_open[n:] = True
    span_days = 600
    created = np.array([now - timedelta(days=float(d)) for d in rng.uniform(30, span_days, total)])
    cycle = np.where(won, rng.uniform(10, 60, total), rng.uniform(20, 120, total))
    closed_at = np.array([c + timedelta(days=float(d)) for c, d in zip(created, cycle, strict=False)])
    closed_at = np.where(closed_at > now - timedelta(days=1), now - timedelta(days=1), closed_at)
    created_open = np.array([now - timedelta(days=float(d)) for d in rng.uniform(1, 200, total)])
    created = np.where(is_open, created_open, created)
    state = np.where(is_open, 0, np.where(won, 1, 2))
    contract = np.where(
        ~is_open & won & (rng.random(total) < 0.97), [f"C-{i:06d}" for i in range(total)], None
    )
    contract = np.where(
        ~(~is_open & won) & (rng.random(total) < 0.02), [f"C-{i:06d}" for i in range(total)], contract
    )
    est_close = np.array(
        [c + timedelta(days=float(d)) for c, d in zip(created, rng.uniform(20, 90, total), strict=False)]
    )
    stage_idx = np.where(is_open, rng.integers(0, 4, total), np.where(won, 3, rng.integers(0, 4, total)))
    opp = pd.DataFrame(
        {
            "opportunityid": [f"opp-{i:05d}" for i in range(total)],
            "name": [f"Deal {i}" for i in range(total)],
            "_parentaccountid_value": [f"acc-{i:04d}" for i in acc_idx],
            "_ownerid_value": [f"usr-{i:03d}" for i in own_idx],
            "estimatedvalue": value,
            "budgetamount": (value * rng.uniform(0.5, 1.5, total)).round(2),
            "closeprobability": rng.integers(10, 90, total).astype("int64"),
            "estimatedclosedate": pd.to_datetime(list(est_close), utc=True),
            "actualclosedate": pd.to_datetime(
                [None if o else c for o, c in zip(is_open, closed_at, strict=False)], utc=True
            ),
            "actualvalue": np.where(is_open, np.nan, np.where(won, value, 0.0)),
            "budgetstatus": budget.astype("int64"),
            "need": need.astype("int64"),
            "stepname": [f"{i + 1}-{STAGES[i]}" for i in stage_idx],
            "statecode": state.astype("int64"),
            "statuscode": np.where(is_open, 1, np.where(won, 3, 5)).astype("int64"),
            "createdon": pd.to_datetime(list(created), utc=True),
            "modifiedon": pd.to_datetime(
                [now - timedelta(days=0.5) if o else c for o, c in zip(is_open, closed_at, strict=False)],
                utc=True,
            ),
            "versionnumber": np.arange(total, dtype="int64"),
            "new_channel": channel.astype("int64"),
            "new_competitorcount": comp.astype("int64"),
            "new_contractnumber": pd.array(contract, dtype="string"),
        }
    )
    bpf = pd.DataFrame(
        {
            "businessprocessflowinstanceid": [f"bpfi-{i:05d}" for i in range(total)],
            "_opportunityid_value": opp["opportunityid"],
            "_processid_value": BPF_ID,
            "_activestageid_value": [STAGE_IDS[STAGES[i]] for i in stage_idx],
            "activestagestartedon": opp["createdon"] + pd.to_timedelta(rng.uniform(0, 10, total), unit="D"),
            "traversedpath": [",".join(STAGE_IDS[s] for s in STAGES[: i + 1]) for i in stage_idx],
            "modifiedon": opp["modifiedon"],
        }
    )
    return {
        "opportunity": opp,
        "account": accounts,
        "systemuser": pd.DataFrame({"systemuserid": [f"usr-{i:03d}" for i in range(n_own)]}),
        "opportunitysalesprocess": bpf,
        "processstage": pd.DataFrame({"processstageid": list(STAGE_IDS.values()), "stagename": STAGES}),
        "workflow": pd.DataFrame({"workflowid": [BPF_ID], "name": ["Opportunity Sales Process"]}),
        "opportunity_history": opp.assign(_synced_at=opp["modifiedon"], _deleted=False),
    }
