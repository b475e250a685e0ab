"""Tables, columns and option sets of the mock org (Web API names, reference dataverse-webapi.md 1-3).

`build_schema()` returns a fresh, mutable schema per org: the CSV import adds custom `new_` columns and
replaces option sets, so nothing here is shared between orgs.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

NS = uuid.UUID("6f1c1a52-6e0c-4d8a-9f55-2b8f7c3e1d10")

DEFAULT_BPF_ID = "3e8ebee6-a2bc-4451-9c5f-b146b085413a"
DEFAULT_STAGE_IDS = [
    "6b9ce798-221a-4260-90b2-2a95ed51a5bc",
    "650e06b4-789b-46c1-822b-0da76bedb1ed",
    "d3ca8878-8d7b-47b9-852d-fcd838790cfd",
    "bb7e830a-61bd-441b-b1fd-6bb104ffa027",
]
PARTNER_BPF_ID = str(uuid.uuid5(NS, "new_partnersalesprocess"))
PARTNER_STAGE_IDS = [str(uuid.uuid5(NS, f"new_partnersalesprocess/{i}")) for i in range(4)]
STAGE_NAMES = ["Qualify", "Develop", "Propose", "Close"]

# Attribute types that hold numbers / option values.
NUMERIC_TYPES = {"Money", "Integer", "Decimal", "Double", "BigInt"}
CHOICE_TYPES = {"Picklist", "State", "Status"}
LOOKUP_TYPES = {"Lookup", "Owner", "Customer"}
EDM_TYPES = {
    "Money": "Edm.Decimal",
    "Decimal": "Edm.Decimal",
    "Double": "Edm.Double",
    "Integer": "Edm.Int32",
    "BigInt": "Edm.Int64",
    "Picklist": "Edm.Int32",
    "State": "Edm.Int32",
    "Status": "Edm.Int32",
    "Boolean": "Edm.Boolean",
    "String": "Edm.String",
    "Memo": "Edm.String",
    "DateTime": "Edm.DateTimeOffset",
    "Lookup": "Edm.Guid",
    "Owner": "Edm.Guid",
    "Customer": "Edm.Guid",
    "Uniqueidentifier": "Edm.Guid",
}


@dataclass
class Attribute:
    name: str  # logical name
    type: str  # AttributeType
    label: str
    options: dict[int, str] = field(default_factory=dict)  # Picklist/State/Status/Boolean(0/1)
    status_state: dict[int, int] = field(default_factory=dict)  # Status: value -> state
    state_default: dict[int, int] = field(default_factory=dict)  # State: value -> default status
    targets: list[str] = field(default_factory=list)  # lookups: target logical names
    dateonly: bool = False
    custom: bool = False
    max_length: int | None = None
    min_value: float | None = None
    max_value: float | None = None
    read_only: bool = False  # not valid for create/update
    option_set_name: str | None = None
    global_option_set: bool = False

    @property
    def web(self) -> str:
        return f"_{self.name}_value" if self.type in LOOKUP_TYPES else self.name

    def navs(self) -> dict[str, str]:
        """Single-valued navigation property names of a lookup -> target logical name."""
        if self.type == "Customer":
            return {f"{self.name}_{t}": t for t in self.targets}
        if self.type in LOOKUP_TYPES:
            return {self.name: self.targets[0]}
        return {}


@dataclass
class Table:
    logical: str
    set_name: str
    pk: str
    primary_name: str
    label: str
    attrs: dict[str, Attribute]  # by Web API name
    ownership: str = "UserOwned"
    alt_keys: list[tuple[str, ...]] = field(default_factory=list)
    custom: bool = False

    def nav_map(self) -> dict[str, tuple[Attribute, str]]:
        out: dict[str, tuple[Attribute, str]] = {}
        for a in self.attrs.values():
            for nav, target in a.navs().items():
                out[nav] = (a, target)
        return out

    def add(self, attr: Attribute) -> Attribute:
        self.attrs[attr.web] = attr
        return attr


def _id(table: str) -> str:
    return str(uuid.uuid5(NS, f"meta/{table}"))


def money(name: str, label: str, **kw: object) -> Attribute:
    return Attribute(name, "Money", label, min_value=-1e12, max_value=1e12, **kw)  # type: ignore[arg-type]


def pick(name: str, label: str, options: dict[int, str], **kw: object) -> Attribute:
    return Attribute(name, "Picklist", label, options=dict(options), **kw)  # type: ignore[arg-type]


def lookup(name: str, label: str, *targets: str, kind: str = "Lookup") -> Attribute:
    return Attribute(name, kind, label, targets=list(targets))


def dt(name: str, label: str, dateonly: bool = False, read_only: bool = False) -> Attribute:
    return Attribute(name, "DateTime", label, dateonly=dateonly, read_only=read_only)


def text(name: str, label: str, max_length: int = 100, memo: bool = False) -> Attribute:
    return Attribute(name, "Memo" if memo else "String", label, max_length=max_length)


def state_status(states: dict[int, tuple[str, int]], statuses: dict[int, tuple[str, int]]) -> list[Attribute]:
    """states: value -> (label, default status); statuses: value -> (label, state)."""
    st = Attribute(
        "statecode",
        "State",
        "Status",
        options={k: v[0] for k, v in states.items()},
        state_default={k: v[1] for k, v in states.items()},
    )
    ss = Attribute(
        "statuscode",
        "Status",
        "Status Reason",
        options={k: v[0] for k, v in statuses.items()},
        status_state={k: v[1] for k, v in statuses.items()},
    )
    return [st, ss]


def _common(owned: bool = True) -> list[Attribute]:
    out = [
        dt("createdon", "Created On", read_only=True),
        dt("modifiedon", "Modified On", read_only=True),
        Attribute("versionnumber", "BigInt", "Version Number", read_only=True),
    ]
    if owned:
        out.append(lookup("ownerid", "Owner", "systemuser", "team", kind="Owner"))
    return out


def _table(
    logical: str, set_name: str, pk: str, primary: str, label: str, attrs: list[Attribute], **kw: object
) -> Table:
    t = Table(logical, set_name, pk, primary, label, {}, **kw)  # type: ignore[arg-type]
    t.add(Attribute(pk, "Uniqueidentifier", label))
    for a in attrs:
        t.add(a)
    return t


INDUSTRY = {
    1: "Accounting",
    2: "Agriculture and Non-petrol Natural Resource Extraction",
    3: "Broadcasting Printing and Publishing",
    6: "Business Services",
    7: "Consulting",
    12: "Durable Manufacturing",
    16: "Financial",
    20: "Insurance",
    21: "Legal Services",
    30: "Transportation",
    31: "Utility Creation and Distribution",
    33: "Wholesale",
}
CUSTOMER_TYPE = {
    1: "Competitor",
    2: "Consultant",
    3: "Customer",
    4: "Investor",
    5: "Partner",
    6: "Influencer",
    7: "Press",
    8: "Prospect",
    9: "Reseller",
    10: "Supplier",
    11: "Vendor",
    12: "Other",
}
RATING = {1: "Hot", 2: "Warm", 3: "Cold"}
BUDGET = {0: "No Committed Budget", 1: "May Buy", 2: "Can Buy", 3: "Will Buy"}
TIMEFRAME = {0: "Immediate", 1: "This Quarter", 2: "Next Quarter", 3: "This Year", 4: "Unknown"}
PROCESS = {0: "Individual", 1: "Committee", 2: "Unknown"}
NEED = {0: "Must have", 1: "Should have", 2: "Good to have", 3: "No need"}
TIMELINE = {0: "Immediate", 1: "This Quarter", 2: "Next Quarter", 3: "This Year", 4: "Not known"}
INITIAL_COMM = {0: "Contacted", 1: "Not Contacted"}
SALESSTAGE = {0: "Qualify", 1: "Develop", 2: "Propose", 3: "Close"}
CHANNEL = {100000000: "Direct", 100000001: "Partner", 100000002: "Online", 100000003: "Referral"}
GRADE = {0: "Grade A", 1: "Grade B", 2: "Grade C", 3: "Grade D"}
TREND = {0: "Improving", 1: "Steady", 2: "Declining", 3: "Not enough info"}
STAGE_CATEGORY = {
    0: "Qualify",
    1: "Develop",
    2: "Propose",
    3: "Close",
    4: "Identify",
    5: "Research",
    6: "Resolve",
    7: "Approval",
}
ACTIVE_INACTIVE = ({0: ("Active", 1), 1: ("Inactive", 2)}, {1: ("Active", 0), 2: ("Inactive", 1)})


def build_schema() -> dict[str, Table]:
    """A fresh schema: logical name -> Table."""
    t: dict[str, Table] = {}
    t["systemuser"] = _table(
        "systemuser",
        "systemusers",
        "systemuserid",
        "fullname",
        "User",
        [
            text("fullname", "Full Name", 200),
            text("internalemailaddress", "Primary Email", 100),
            Attribute("isdisabled", "Boolean", "Status", options={0: "Enabled", 1: "Disabled"}),
            dt("createdon", "Created On", read_only=True),
            dt("modifiedon", "Modified On", read_only=True),
            Attribute("versionnumber", "BigInt", "Version Number", read_only=True),
        ],
        ownership="BusinessOwned",
    )
    t["account"] = _table(
        "account",
        "accounts",
        "accountid",
        "name",
        "Account",
        [
            text("name", "Account Name", 160),
            pick("industrycode", "Industry", INDUSTRY),
            Attribute("numberofemployees", "Integer", "Number of Employees", min_value=0, max_value=1e9),
            money("revenue", "Annual Revenue"),
            text("address1_country", "Address 1: Country/Region", 80),
            pick("customertypecode", "Relationship Type", CUSTOMER_TYPE),
            *state_status(*ACTIVE_INACTIVE),
            *_common(),
        ],
    )
    t["contact"] = _table(
        "contact",
        "contacts",
        "contactid",
        "fullname",
        "Contact",
        [
            text("fullname", "Full Name", 160),
            text("firstname", "First Name", 50),
            text("lastname", "Last Name", 50),
            text("emailaddress1", "Email", 100),
            lookup("parentcustomerid", "Company Name", "account", "contact", kind="Customer"),
            *state_status(*ACTIVE_INACTIVE),
            *_common(),
        ],
    )
    t["team"] = _table(
        "team",
        "teams",
        "teamid",
        "name",
        "Team",
        [text("name", "Team Name", 160), *_common(owned=False)],
        ownership="BusinessOwned",
    )
    t["workflow"] = _table(
        "workflow",
        "workflows",
        "workflowid",
        "name",
        "Process",
        [
            text("name", "Process Name", 100),
            text("uniquename", "Unique Name", 256),
            pick(
                "category",
                "Category",
                {
                    0: "Workflow",
                    1: "Dialog",
                    2: "Business Rule",
                    3: "Action",
                    4: "Business Process Flow",
                    5: "Modern Flow",
                },
            ),
            text("primaryentity", "Primary Entity", 100),
            *state_status({0: ("Draft", 1), 1: ("Activated", 2)}, {1: ("Draft", 0), 2: ("Activated", 1)}),
            *_common(),
        ],
    )
    t["processstage"] = _table(
        "processstage",
        "processstages",
        "processstageid",
        "stagename",
        "Process Stage",
        [
            text("stagename", "Stage Name", 100),
            pick(
                "stagecategory",
                "Stage Category",
                STAGE_CATEGORY,
                option_set_name="processstage_category",
                global_option_set=True,
            ),
            lookup("processid", "Process", "workflow"),
            text("primaryentitytypecode", "Primary Entity", 100),
            *_common(owned=False),
        ],
        ownership="OrganizationOwned",
    )
    t["opportunity"] = _table(
        "opportunity",
        "opportunities",
        "opportunityid",
        "name",
        "Opportunity",
        [
            text("name", "Topic", 300),
            lookup("parentaccountid", "Account", "account"),
            lookup("parentcontactid", "Contact", "contact"),
            lookup("customerid", "Potential Customer", "account", "contact", kind="Customer"),
            lookup("msdyn_predictivescoreid", "Predictive score", "msdyn_predictivescore"),
            money("estimatedvalue", "Est. Revenue"),
            money("budgetamount", "Budget Amount"),
            money("actualvalue", "Actual Revenue"),
            Attribute("closeprobability", "Integer", "Probability", min_value=0, max_value=100),
            dt("estimatedclosedate", "Est. Close Date", dateonly=True),
            dt("actualclosedate", "Actual Close Date", dateonly=True),
            pick("budgetstatus", "Budget", BUDGET),
            pick("need", "Need", NEED),
            pick("purchasetimeframe", "Purchase Timeframe", TIMEFRAME),
            pick("purchaseprocess", "Purchase Process", PROCESS),
            pick("opportunityratingcode", "Rating", RATING),
            Attribute(
                "decisionmaker", "Boolean", "Decision Maker?", options={1: "completed", 0: "mark complete"}
            ),
            pick("timeline", "Timeline", TIMELINE),
            pick("initialcommunication", "Initial Communication", INITIAL_COMM),
            pick("salesstage", "Sales Stage", SALESSTAGE),
            text("stepname", "Pipeline Phase", 200),
            text("description", "Description", 2000, memo=True),
            *state_status(
                {0: ("Open", 1), 1: ("Won", 3), 2: ("Lost", 4)},
                {
                    1: ("In Progress", 0),
                    2: ("On Hold", 0),
                    3: ("Won", 1),
                    4: ("Canceled", 2),
                    5: ("Out-Sold", 2),
                },
            ),
            pick("new_channel", "Channel", CHANNEL, custom=True, option_set_name="new_channel"),
            Attribute(
                "new_competitorcount", "Integer", "Competitor Count", custom=True, min_value=0, max_value=1000
            ),
            Attribute("new_contractnumber", "String", "Contract Number", custom=True, max_length=100),
            *_common(),
        ],
    )
    t["opportunitysalesprocess"] = _table(
        "opportunitysalesprocess",
        "opportunitysalesprocesses",
        "businessprocessflowinstanceid",
        "name",
        "Opportunity Sales Process",
        [
            text("name", "Name", 200),
            lookup("opportunityid", "Opportunity", "opportunity"),
            lookup("processid", "Process", "workflow"),
            lookup("activestageid", "Active Stage", "processstage"),
            dt("activestagestartedon", "Active Stage Started On"),
            text("traversedpath", "Traversed Path", 1250),
            dt("completedon", "Completed On"),
            *state_status(
                {0: ("Active", 1), 1: ("Inactive", 2)},
                {1: ("Active", 0), 2: ("Finished", 1), 3: ("Aborted", 1)},
            ),
            dt("createdon", "Created On", read_only=True),
            dt("modifiedon", "Modified On", read_only=True),
            Attribute("versionnumber", "BigInt", "Version Number", read_only=True),
        ],
        ownership="OrganizationOwned",
    )
    t["msdyn_predictivescore"] = _table(
        "msdyn_predictivescore",
        "msdyn_predictivescores",
        "msdyn_predictivescoreid",
        "msdyn_name",
        "Predictive Score",
        [
            text("msdyn_name", "Name", 128),
            text("msdyn_entityid", "Entity ID", 256),
            text("msdyn_entitytype", "Entity Type", 128),
            Attribute(
                "msdyn_score", "Integer", "Prediction score", min_value=-2147483648, max_value=2147483647
            ),
            pick("msdyn_grade", "Grade", GRADE),
            pick("msdyn_scoretrend", "Score Trend", TREND),
            text("msdyn_scorereasons", "Score reasons", 10000, memo=True),
            dt("msdyn_scoredon", "Scored on"),
            text("msdyn_contributingpredictionids", "Contributing prediction ids", 2000, memo=True),
            text("msdyn_similaropportunities", "Similar opportunities", 65536, memo=True),
            *state_status(*ACTIVE_INACTIVE),
            dt("createdon", "Created On", read_only=True),
            dt("modifiedon", "Modified On", read_only=True),
            Attribute("versionnumber", "BigInt", "Version Number", read_only=True),
        ],
        ownership="OrganizationOwned",
        alt_keys=[("msdyn_entityid", "msdyn_entitytype")],
    )
    from .sdkmessages import message_tables  # local: sdkmessages builds on this module's helpers

    t.update(message_tables())
    return t


def table_id(logical: str) -> str:
    return _id(logical)
