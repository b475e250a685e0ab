"""Seeded org generator: users, accounts, contacts, the two opportunity BPFs, opportunities with stage
history and a planted win signal (documented in docs/MOCK.md). Deterministic for (seed, now, count).

Each opportunity gets a hidden `Fate` (won or lost, when, at which stage) so that `simulate` can move
open deals forward consistently with the same signal.
"""

from __future__ import annotations

import itertools
import math
import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .schema import (
    CHANNEL,
    DEFAULT_BPF_ID,
    DEFAULT_STAGE_IDS,
    INDUSTRY,
    NS,
    PARTNER_BPF_ID,
    PARTNER_STAGE_IDS,
    STAGE_NAMES,
)
from .store import Org, iso

HISTORY_DAYS = 1000  # ~2.7 years of created opportunities before `now`
STAGE_FRACTIONS = (0.0, 0.2, 0.45, 0.75)  # stage start as a fraction of the planned cycle

FIRST = [
    "Alex",
    "Sam",
    "Jordan",
    "Taylor",
    "Morgan",
    "Casey",
    "Riley",
    "Jamie",
    "Avery",
    "Quinn",
    "Drew",
    "Harper",
    "Rowan",
    "Emerson",
    "Reese",
    "Skyler",
    "Parker",
    "Dakota",
    "Finley",
    "Sage",
    "Robin",
    "Kai",
    "Noel",
    "Lee",
    "Ari",
]
LAST = [
    "Garcia",
    "Smith",
    "Chen",
    "Patel",
    "Kowalski",
    "Nguyen",
    "Okafor",
    "Silva",
    "Müller",
    "Rossi",
    "Johansson",
    "Dubois",
    "Tanaka",
    "Haddad",
    "O'Brien",
    "Novak",
    "Costa",
    "Schmidt",
    "Kim",
    "Ivanova",
]
SYLL = [
    "ac",
    "ve",
    "lo",
    "tri",
    "nex",
    "ora",
    "cal",
    "dyn",
    "zen",
    "bri",
    "quo",
    "sol",
    "mar",
    "tek",
    "vio",
    "pra",
    "lum",
    "for",
    "gen",
    "kin",
]
SUFFIX = ["Corp", "Ltd", "Group", "Systems", "Industries", "Partners", "Labs", "Holdings", "GmbH", "SA"]
COUNTRIES = [
    "United States",
    "United Kingdom",
    "Germany",
    "France",
    "Canada",
    "Netherlands",
    "Japan",
    "Australia",
    "Brazil",
    "India",
]
PRODUCTS = [
    "Analytics Suite",
    "Field Service",
    "Cloud Platform",
    "Support Plan",
    "Integration Pack",
    "Security Add-on",
    "Training",
    "Hardware Bundle",
]

# Planted signal: contributions to the log-odds of winning (see docs/MOCK.md).
BASE = -0.95
BUDGET_EFF = {0: -0.9, 1: -0.2, 2: 0.35, 3: 0.8}
NEED_EFF = {0: 0.7, 1: 0.25, 2: -0.3, 3: -1.0}
RATING_EFF = {1: 0.6, 2: 0.0, 3: -0.6}
TIMEFRAME_EFF = {0: 0.45, 1: 0.25, 2: 0.0, 3: -0.25, 4: -0.5}
CHANNEL_EFF = {100000000: 0.0, 100000001: 0.3, 100000002: -0.45, 100000003: 0.55}
INDUSTRY_EFF = {
    1: 0.1,
    2: -0.2,
    3: -0.1,
    6: 0.2,
    7: 0.3,
    12: -0.3,
    16: 0.25,
    20: 0.0,
    21: 0.15,
    30: -0.25,
    31: -0.1,
    33: 0.05,
}
DECISIONMAKER_EFF = 0.55
VALUE_EFF = -0.35  # per log(value / 25,000): large deals lose more
SLIP_EFF = -0.3  # per close-date slip (slips also stretch time in stage)
COMPETITOR_EFF = -0.12  # per competitor
SIZE_EFF = 0.12  # per log10(employees) - 2
NOISE_SD = 0.5
SIGNAL_SCALE = 1.7  # multiplies every planted effect above (tuned for AUC ~0.8-0.85)


@dataclass
class Fate:
    won: bool
    close: datetime  # when the deal closes (won or lost)
    last_stage: int  # stage at which it closes (3 for won)
    starts: list[datetime]  # start of each stage reached


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


class Weights:
    """A weighted choice prepared once (population + cumulative weights): `rng.choices` with cum_weights
    draws exactly what it draws with weights, without rebuilding both lists on each of ~8 calls a row."""

    def __init__(self, weights: dict[Any, float]):
        self.population = list(weights)
        self.cum = list(itertools.accumulate(weights.values()))


def _choice(rng: random.Random, weights: Weights) -> Any:
    return rng.choices(weights.population, cum_weights=weights.cum)[0]


CUSTOMER_TYPES = Weights({3: 0.6, 8: 0.25, 9: 0.1, 5: 0.05})
BUDGET_STATUSES = Weights({0: 0.2, 1: 0.3, 2: 0.3, 3: 0.2})
NEEDS = Weights({0: 0.25, 1: 0.35, 2: 0.3, 3: 0.1})
RATINGS = Weights({1: 0.25, 2: 0.45, 3: 0.3})
PURCHASE_TIMEFRAMES = Weights({0: 0.15, 1: 0.3, 2: 0.25, 3: 0.2, 4: 0.1})
PURCHASE_PROCESSES = Weights({0: 0.4, 1: 0.4, 2: 0.2})
INITIAL_COMMUNICATIONS = Weights({0: 0.7, 1: 0.3})
CHANNELS = Weights({100000000: 0.45, 100000001: 0.25, 100000002: 0.18, 100000003: 0.12})
LOST_AT_STAGE = Weights({0: 0.3, 1: 0.3, 2: 0.25, 3: 0.15})


def _maybe(rng: random.Random, value: Any, p_missing: float = 0.07) -> Any:
    return None if rng.random() < p_missing else value


class Generator:
    def __init__(self, org: Org, seed: int, now: datetime):
        self.org, self.rng, self.now = org, random.Random(seed), now
        self.skill: dict[str, float] = {}
        self.account_info: dict[str, tuple[int | None, int | None]] = {}
        self.fates: dict[str, Fate] = {}

    def uid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    # -- reference data ----------------------------------------------------------------------------
    def base(self) -> None:
        """App user, processes and stages (present in every org, seeded or imported)."""
        org, start = self.org, iso(self.now - timedelta(days=HISTORY_DAYS + 400))
        app = str(uuid.uuid5(NS, "application-user"))
        org.app_user_id = app
        org.insert(
            "systemuser",
            {
                "systemuserid": app,
                "fullname": "# Mock Dataverse App",
                "internalemailaddress": "app@mock.local",
                "isdisabled": False,
                "createdon": start,
            },
        )
        for wid, name, unique, stage_ids in (
            (DEFAULT_BPF_ID, "Opportunity Sales Process", "opportunitysalesprocess", DEFAULT_STAGE_IDS),
            (PARTNER_BPF_ID, "Partner Sales Process", "new_partnersalesprocess", PARTNER_STAGE_IDS),
        ):
            org.insert(
                "workflow",
                {
                    "workflowid": wid,
                    "name": name,
                    "uniquename": unique,
                    "category": 4,
                    "primaryentity": "opportunity",
                    "statecode": 1,
                    "statuscode": 2,
                    "_ownerid_value": app,
                    "createdon": start,
                },
            )
            for i, sid in enumerate(stage_ids):
                org.insert(
                    "processstage",
                    {
                        "processstageid": sid,
                        "stagename": STAGE_NAMES[i],
                        "stagecategory": i,
                        "_processid_value": wid,
                        "primaryentitytypecode": "opportunity",
                        "createdon": start,
                    },
                )

    def users(self, n: int = 25) -> list[str]:
        ids = []
        names = set()
        start = self.now - timedelta(days=HISTORY_DAYS + 300)
        while len(ids) < n:
            name = f"{self.rng.choice(FIRST)} {self.rng.choice(LAST)}"
            if name in names:
                continue
            names.add(name)
            uid = self.uid()
            self.skill[uid] = self.rng.gauss(0, 0.45)
            email = name.lower().replace(" ", ".").replace("'", "") + "@contoso.example"
            self.org.insert(
                "systemuser",
                {
                    "systemuserid": uid,
                    "fullname": name,
                    "internalemailaddress": email,
                    "isdisabled": self.rng.random() < 0.08,
                    "createdon": iso(start + timedelta(days=self.rng.uniform(0, 200))),
                },
            )
            ids.append(uid)
        return ids

    def accounts(self, n: int, owners: list[str]) -> list[str]:
        rng, ids, names = self.rng, [], set()
        while len(ids) < n:
            name = (
                (rng.choice(SYLL) + rng.choice(SYLL) + rng.choice(SYLL)).capitalize()
                + " "
                + rng.choice(SUFFIX)
            )
            if name in names:
                name += f" {len(ids)}"
            names.add(name)
            aid = self.uid()
            employees = int(10 ** rng.uniform(1, 5))
            industry = rng.choice(list(INDUSTRY))
            self.account_info[aid] = (industry, employees)
            created = self.now - timedelta(days=HISTORY_DAYS + rng.uniform(30, 365))
            self.org.insert(
                "account",
                {
                    "accountid": aid,
                    "name": name,
                    "industrycode": _maybe(rng, industry, 0.05),
                    "numberofemployees": _maybe(rng, employees, 0.08),
                    "revenue": _maybe(rng, round(employees * rng.uniform(80_000, 300_000), 2), 0.1),
                    "address1_country": _maybe(rng, rng.choice(COUNTRIES), 0.05),
                    "customertypecode": _choice(rng, CUSTOMER_TYPES),
                    "statecode": 0,
                    "statuscode": 1,
                    "_ownerid_value": rng.choice(owners),
                    "createdon": iso(created),
                    "modifiedon": iso(created + timedelta(days=rng.uniform(0, 30))),
                },
            )
            first, last = rng.choice(FIRST), rng.choice(LAST)
            self.org.insert(
                "contact",
                {
                    "fullname": f"{first} {last}",
                    "firstname": first,
                    "lastname": last,
                    "emailaddress1": f"{first}.{last}@{name.split()[0].lower()}.example".replace("'", ""),
                    "_parentcustomerid_value": aid,
                    "statecode": 0,
                    "statuscode": 1,
                    "_ownerid_value": rng.choice(owners),
                    "createdon": iso(created),
                    "contactid": self.uid(),
                },
            )
            ids.append(aid)
        return ids

    # -- opportunities -------------------------------------------------------------------------------
    def features(self, account: str, owner: str) -> dict[str, Any]:
        rng = self.rng
        industry, employees = self.account_info.get(account, (None, None))
        size = math.log10(employees) if employees else 2.0
        value = round(math.exp(rng.gauss(math.log(25_000), 0.9)) * (1 + 0.3 * (size - 2)), 2)
        value = max(500.0, value)
        f: dict[str, Any] = {
            "budgetstatus": _choice(rng, BUDGET_STATUSES),
            "need": _choice(rng, NEEDS),
            "decisionmaker": rng.random() < 0.45,
            "opportunityratingcode": _choice(rng, RATINGS),
            "purchasetimeframe": _choice(rng, PURCHASE_TIMEFRAMES),
            "purchaseprocess": _choice(rng, PURCHASE_PROCESSES),
            "initialcommunication": _choice(rng, INITIAL_COMMUNICATIONS),
            "new_channel": _choice(rng, CHANNELS),
            "new_competitorcount": min(6, int(rng.expovariate(0.8))),
            "estimatedvalue": value,
            "slips": min(5, int(rng.expovariate(1.4))),
        }
        f["timeline"] = f["purchasetimeframe"] if rng.random() < 0.7 else rng.randrange(5)
        logit = (
            BASE
            + SIGNAL_SCALE
            * (
                BUDGET_EFF[f["budgetstatus"]]
                + NEED_EFF[f["need"]]
                + DECISIONMAKER_EFF * f["decisionmaker"]
                + RATING_EFF[f["opportunityratingcode"]]
                + TIMEFRAME_EFF[f["purchasetimeframe"]]
                + CHANNEL_EFF[f["new_channel"]]
                + self.skill.get(owner, 0.0)
                + INDUSTRY_EFF.get(industry or 0, 0.0)
                + SIZE_EFF * (size - 2)
                + VALUE_EFF * math.log(value / 25_000)
                + SLIP_EFF * f["slips"]
                + COMPETITOR_EFF * f["new_competitorcount"]
            )
            + rng.gauss(0, NOISE_SD)
        )
        f["_p"] = sigmoid(logit)
        return f

    def fate(self, created: datetime, f: dict[str, Any]) -> Fate:
        rng = self.rng
        won = rng.random() < f["_p"]
        cycle = math.exp(rng.gauss(math.log(120), 0.55)) * (1 + 0.25 * f["slips"])
        if not won:
            last = _choice(rng, LOST_AT_STAGE)
            end_frac = STAGE_FRACTIONS[last + 1] if last < 3 else 1.0
            cycle *= rng.uniform(1.0, 1.4)  # lost deals linger
        else:
            last, end_frac = 3, 1.0
        starts = [
            created + timedelta(days=cycle * STAGE_FRACTIONS[i] * rng.uniform(0.85, 1.15) if i else 0)
            for i in range(last + 1)
        ]
        close = created + timedelta(days=cycle * end_frac)
        for i in range(1, len(starts)):
            starts[i] = min(max(starts[i], starts[i - 1] + timedelta(hours=1)), close)
        return Fate(won, close, last, starts)

    def opportunity(
        self, created: datetime, account: str | None, owner: str, contact: str | None = None, shift: Any = None
    ) -> str:
        """Create one opportunity (+ its BPF instance) as it stands at `self.now`; `shift` (mock_dataverse.shift)
        may put it in its segment and set its win probability."""
        f = self.features(account or "", owner)
        if shift is not None:
            shift.apply(self.rng, f, self.org.data["account"].rows.get(account or ""))
        fate = self.fate(created, f)
        oid = self.uid()
        self.fates[oid] = fate
        self.write_opportunity(oid, created, account, owner, f, fate, contact)
        return oid

    def write_opportunity(
        self,
        oid: str,
        created: datetime,
        account: str | None,
        owner: str,
        f: dict[str, Any],
        fate: Fate,
        contact: str | None,
    ) -> None:
        rng, org, now = self.rng, self.org, self.now
        closed = fate.close <= now
        stage = fate.last_stage if closed else max(i for i, s in enumerate(fate.starts) if s <= now)
        value = f["estimatedvalue"]
        planned = created + timedelta(days=rng.uniform(45, 100))
        est_close = planned + timedelta(days=25 * f["slips"])
        if closed:
            state, status = (1, 3) if fate.won else (2, rng.choice((4, 5, 5)))
        else:
            state, status = 0, (2 if rng.random() < 0.05 else 1)
        partner = f["new_channel"] == 100000001 and rng.random() < 0.8
        stage_ids = PARTNER_STAGE_IDS if partner else DEFAULT_STAGE_IDS
        prob = min(100, max(0, int(rng.gauss(40 + 15 * (2 - f["opportunityratingcode"]), 12))))
        contract = None
        if (fate.won and closed and rng.random() < 0.97) or rng.random() < 0.02:
            contract = f"CN-{rng.randrange(100000, 999999)}"
        modified = (
            fate.close if closed else max(fate.starts[stage], created + timedelta(days=rng.uniform(0, 20)))
        )
        modified = min(modified, now)
        created_iso, modified_iso = iso(created), iso(modified)
        row = {
            "opportunityid": oid,
            "name": f"{rng.randrange(2, 500)} units of {rng.choice(PRODUCTS)}",
            "_parentaccountid_value": account,
            "_customerid_value": account or contact,
            "_parentcontactid_value": contact,
            "_ownerid_value": owner,
            "estimatedvalue": _maybe(rng, value, 0.05),
            "budgetamount": _maybe(rng, round(value * rng.uniform(0.6, 1.4), 2), 0.15),
            "closeprobability": _maybe(rng, prob, 0.07),
            "estimatedclosedate": _maybe(rng, est_close.date().isoformat(), 0.05),
            "actualclosedate": fate.close.date().isoformat() if closed else None,
            "actualvalue": round(value * rng.uniform(0.85, 1.1), 2) if closed and fate.won else None,
            "salesstage": stage,
            "stepname": f"{stage + 1}-{STAGE_NAMES[stage]}",
            "statecode": state,
            "statuscode": status,
            "new_contractnumber": contract,
            "createdon": created_iso,
            "modifiedon": modified_iso,
        }
        for col in (
            "budgetstatus",
            "need",
            "purchasetimeframe",
            "purchaseprocess",
            "opportunityratingcode",
            "timeline",
            "initialcommunication",
            "new_channel",
            "new_competitorcount",
        ):
            row[col] = _maybe(rng, f[col], 0.07)
        row["decisionmaker"] = f["decisionmaker"]
        org.insert("opportunity", row)
        bpf_state = (0, 1) if not closed else ((1, 2) if fate.won else (1, 3))
        org.insert(
            "opportunitysalesprocess",
            {
                "businessprocessflowinstanceid": self.uid(),
                "name": row["name"],
                "_opportunityid_value": oid,
                "_processid_value": PARTNER_BPF_ID if partner else DEFAULT_BPF_ID,
                "_activestageid_value": stage_ids[stage],
                "activestagestartedon": iso(fate.starts[stage]),
                "traversedpath": ",".join(stage_ids[: stage + 1]),
                "statecode": bpf_state[0],
                "statuscode": bpf_state[1],
                "completedon": iso(fate.close) if closed else None,
                "createdon": created_iso,
                "modifiedon": modified_iso,
            },
        )

    def opportunities(self, n: int, accounts: list[str], owners: list[str]) -> None:
        rng = self.rng
        # Creation times: older ones sparser (a growing business); sorted so versions follow time.
        ages = sorted((HISTORY_DAYS * rng.random() ** 1.5 for _ in range(n)), reverse=True)
        weights_owner = [1.0 + rng.random() for _ in owners]
        for age in ages:
            created = self.now - timedelta(days=age)
            owner = rng.choices(owners, weights=weights_owner)[0]
            self.opportunity(created, rng.choice(accounts), owner)


def seed_org(org: Org, seed: int, opportunities: int, now: datetime) -> Generator:
    gen = Generator(org, seed, now)
    gen.base()
    owners = gen.users(25)
    accounts = gen.accounts(max(50, opportunities // 6), owners)
    gen.opportunities(opportunities, accounts, owners)
    return gen


__all__ = ["CHANNEL", "Fate", "Generator", "seed_org"]
