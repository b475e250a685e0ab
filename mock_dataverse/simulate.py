"""`POST /_mock/simulate {"days": N, "seed": optional, "shift": optional}`: moves the org forward in time, one
day at a time.

Open opportunities follow their hidden fate (stage advances, then won or lost on the planned date, with the
planted signal), sellers edit fields (close dates slip, budget status changes, probability moves), new
opportunities arrive at the recent creation rate and a few open ones are deleted. Every change goes
through the store, so versionnumber/modifiedon move and change tracking sees it.

`shift` changes one segment (mock_dataverse/shift.py): `{"attribute": "new_channel", "value": 100000003,
"winRate": 0.9, "share": 0.8}` - deals of the segment closing meanwhile are won with probability `winRate`,
and `share` of the new deals are put in the segment (with that win probability), so the open population's
mix moves too. A bad setting is a 400 naming it.
"""

from __future__ import annotations

import random
from datetime import date, timedelta
from typing import Any

from .errors import bad_request
from .generator import STAGE_NAMES, Generator
from .schema import DEFAULT_STAGE_IDS, PARTNER_STAGE_IDS
from .shift import Shift, parse_shift
from .store import Org, Row, iso, parse_iso
from .writes import sync_bpf

MAX_DAYS = 3650


def _instance(org: Org, oid: str) -> Row | None:
    ids = org.ids_where("opportunitysalesprocess", "_opportunityid_value", oid) or set()
    rows = [org.data["opportunitysalesprocess"].rows[i] for i in ids]
    return max(rows, key=lambda r: r["modifiedon"] or "") if rows else None


def simulate(org: Org, gen: Generator | None, body: dict[str, Any]) -> dict[str, Any]:
    days = body.get("days")
    if isinstance(days, bool) or not isinstance(days, int) or not 0 < days <= MAX_DAYS:
        raise bad_request(f"'days' must be an integer between 1 and {MAX_DAYS}.")
    unknown = set(body) - {"days", "seed", "shift"}
    if unknown:
        raise bad_request(f"Unknown simulate setting '{sorted(unknown)[0]}'; known: days, seed, shift.")
    shift = parse_shift(body.get("shift"))
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise bad_request("'seed' must be an integer.")
    if gen is None:
        raise bad_request("This org has no generator to simulate with.")
    rng = random.Random(seed) if seed is not None else gen.rng
    gen.rng = rng
    report: dict[str, Any] = {
        "days": days, "advanced": 0, "won": 0, "lost": 0, "created": 0, "updated": 0, "deleted": 0,
    }  # fmt: skip
    if shift is not None:
        report["shift"] = {"attribute": shift.attribute, "value": shift.value, "winRate": shift.win_rate,
                           "share": shift.share, "created": 0, "won": 0, "lost": 0}  # fmt: skip
    owners = [
        u["systemuserid"]
        for u in org.rows("systemuser")
        if u["systemuserid"] != org.app_user_id and not u["isdisabled"]
    ] or [org.app_user_id]
    accounts = [a["accountid"] for a in org.rows("account")]
    with org.lock:
        for _ in range(days):
            org.clock.advance(1)
            now = org.now()
            gen.now = now
            _day(org, gen, rng, now, owners, accounts, report, shift)
    report["now"] = org.now_iso()
    return report


def _day(
    org: Org,
    gen: Generator,
    rng: random.Random,
    now: Any,
    owners: list[str],
    accounts: list[str],
    report: dict[str, Any],
    shift: Shift | None = None,
) -> None:
    opps = org.data["opportunity"].rows
    account_rows = org.data["account"].rows
    open_ids = [oid for oid, r in opps.items() if r["statecode"] == 0]
    since = iso(now - timedelta(days=90))
    recent = sum(1 for r in opps.values() if (r["createdon"] or "") > since)
    for oid in open_ids:
        row = opps[oid]
        fate = gen.fates.get(oid)
        if fate is None:  # created through the API or imported: give it a fate with the same signal
            fate = gen.fate(parse_iso(row["createdon"] or iso(now)), {"_p": 0.4, "slips": 0})
            gen.fates[oid] = fate
        if rng.random() < 0.0007:
            inst = _instance(org, oid)
            if inst is not None:
                org.delete("opportunitysalesprocess", inst["businessprocessflowinstanceid"])
            org.delete("opportunity", oid)
            report["deleted"] += 1
            continue
        if fate.close <= now:
            won = fate.won
            if shift is not None and shift.matches(row, account_rows.get(row["_parentaccountid_value"] or "")):
                won = rng.random() < shift.win_rate
                report["shift"]["won" if won else "lost"] += 1
            _close(org, rng, row, won, now)
            report["won" if won else "lost"] += 1
            continue
        stage = row["salesstage"] or 0
        reached = max(i for i, s in enumerate(fate.starts) if s <= now)
        if reached > stage:
            _advance(org, row, reached, now)
            report["advanced"] += 1
        elif rng.random() < 0.03:
            _edit(org, rng, row, now)
            report["updated"] += 1
    n_new = sum(1 for _ in range(max(1, round(recent / 90 * 2))) if rng.random() < 0.5)
    for _ in range(n_new):
        if not accounts:
            break
        account = rng.choice(accounts) if shift is None else shift.account(rng, accounts, account_rows)
        oid = gen.opportunity(now, account, rng.choice(owners), shift=shift)
        report["created"] += 1
        if shift is not None and shift.matches(opps[oid], account_rows.get(account)):
            report["shift"]["created"] += 1


def _close(org: Org, rng: random.Random, row: Row, won: bool, now: Any) -> None:
    value = row["estimatedvalue"] or 0.0
    changes: Row = {
        "statecode": 1 if won else 2,
        "statuscode": 3 if won else rng.choice((4, 5, 5)),
        "actualclosedate": now.date().isoformat(),
        "actualvalue": round(value * rng.uniform(0.85, 1.1), 2) if won else None,
    }
    if won and rng.random() < 0.97:
        changes["new_contractnumber"] = f"CN-{rng.randrange(100000, 999999)}"
    updated = org.update("opportunity", row["opportunityid"], changes)
    sync_bpf(org, updated)


def _advance(org: Org, row: Row, stage: int, now: Any) -> None:
    inst = _instance(org, row["opportunityid"])
    org.update(
        "opportunity",
        row["opportunityid"],
        {"salesstage": stage, "stepname": f"{stage + 1}-{STAGE_NAMES[stage]}"},
    )
    if inst is None:
        return
    stages = PARTNER_STAGE_IDS if inst["_activestageid_value"] in PARTNER_STAGE_IDS else DEFAULT_STAGE_IDS
    org.update(
        "opportunitysalesprocess",
        inst["businessprocessflowinstanceid"],
        {
            "_activestageid_value": stages[stage],
            "activestagestartedon": iso(now),
            "traversedpath": ",".join(stages[: stage + 1]),
        },
    )


def _edit(org: Org, rng: random.Random, row: Row, now: Any) -> None:
    changes: Row = {}
    what = rng.random()
    if what < 0.5 and row["estimatedclosedate"]:
        slipped = date.fromisoformat(row["estimatedclosedate"]) + timedelta(days=rng.randint(7, 45))
        changes["estimatedclosedate"] = slipped.isoformat()
    elif what < 0.75:
        changes["budgetstatus"] = rng.randrange(4)
    else:
        changes["closeprobability"] = max(0, min(100, (row["closeprobability"] or 40) + rng.randint(-15, 15)))
    org.update("opportunity", row["opportunityid"], changes)
