"""Which lake columns may be model attributes (Dynamics' rules by attribute type and name), the default
attribute list, and the feature descriptors of a model's attributes and derived features."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from modeling.features import boolean_options

if TYPE_CHECKING:
    from modeling.config import ModelConfig

ACCOUNT_PREFIX = "account."

NUMERIC_TYPES = {"Money", "Decimal", "Double", "Integer", "BigInt"}
OPTION_TYPES = {"Picklist", "State", "Status", "Boolean", "MultiSelectPicklist"}
TEXT_TYPES = {"String", "Memo"}
NEVER_TYPES = {
    "DateTime",
    "Lookup",
    "Owner",
    "Customer",
    "Uniqueidentifier",
    "Virtual",
    "EntityName",
    "PartyList",
    "Image",
    "ManagedProperty",
    "CalendarRules",
    "File",
}
# System-generated or bookkeeping columns (Dynamics: score, grade, version number, image, exchange rate...).
SYSTEM_COLUMNS = {
    "opportunityid",
    "accountid",
    "name",
    "statecode",
    "statuscode",
    "versionnumber",
    "exchangerate",
    "opportunityscore",
    "opportunitygrade",
    "msdyn_predictivescoreid",
    "msdyn_opportunityscore",
    "msdyn_opportunitygrade",
    "msdyn_scorereasons",
    "msdyn_scoretrend",
    "entityimage",
    "entityimage_url",
    "entityimageid",
    "entityimage_timestamp",
    "importsequencenumber",
    "timezoneruleversionnumber",
    "utcconversiontimezonecode",
    "processid",
    "stageid",
    "traversedpath",
    "salesstagecode",
    "stepid",
    "stepname",
    "salesstage",
    "createdon",
    "modifiedon",
    "overriddencreatedon",
    "actualclosedate",
    "estimatedclosedate",
    "_synced_at",
    "_deleted",
}

PROCESS_COLUMNS = {"stepname", "salesstage", "salesstagecode"}
DERIVED: list[dict[str, str]] = [
    {"name": "d_days_open", "label": "Days open"},
    {"name": "d_days_in_stage", "label": "Days in current stage"},
    {"name": "d_stage_time_vs_won", "label": "Time in stage vs won deals (ratio)"},
    {"name": "d_close_slip_days", "label": "Days until estimated close"},
    {"name": "d_planned_cycle_days", "label": "Planned sales cycle (days)"},
    {"name": "d_value_vs_account", "label": "Value vs account's past deals (ratio)"},
    {"name": "d_account_win_rate", "label": "Account's past win rate"},
    {"name": "d_account_closed", "label": "Account's past closed deals"},
    {"name": "d_account_same_value_win_rate", "label": "Account's past win rate at this value"},
    {"name": "d_owner_win_rate", "label": "Owner's past win rate"},
    {"name": "d_owner_closed", "label": "Owner's past closed deals"},
    {"name": "d_similar_win_rate", "label": "Win rate of similar past deals"},
    {"name": "d_similar_closed", "label": "Similar past deals closed"},
]


def attribute_ineligibility(
    name: str,
    opp_attrs: Mapping[str, Mapping[str, Any]],
    acc_attrs: Mapping[str, Mapping[str, Any]],
    state_set: str,
) -> str | None:
    """None when `name` may be a model attribute, else the reason (Dynamics' rules)."""
    if name.startswith(ACCOUNT_PREFIX):
        base, pool, entity = name[len(ACCOUNT_PREFIX) :], acc_attrs, "account"
    else:
        base, pool, entity = name, opp_attrs, "opportunity"
    meta = pool.get(base)
    if meta is None:
        return f"is not an attribute of {entity}"
    typ = str(meta.get("type", ""))
    if typ in NEVER_TYPES or meta.get("dateonly"):
        return f"has type {typ}: date/time, lookup and id attributes are never model attributes"
    if base in PROCESS_COLUMNS:
        return (
            "is the process stage: closed deals carry their final stage; stages are modelled by "
            "per-stage modelling and time in stage"
        )
    if base in SYSTEM_COLUMNS or base.startswith("_") or base.endswith("_base") or base == state_set:
        return "is a system, status or label column and is never a model attribute"
    if typ not in NUMERIC_TYPES | OPTION_TYPES | TEXT_TYPES:
        return f"has unsupported type {typ}"
    return None


def model_attributes(config: ModelConfig, metadata: Mapping[str, Any]) -> list[str]:
    """The configuration's attributes, or when it names none every eligible one (`default_attributes`)."""
    if config.attributes is not None:
        return list(config.attributes)
    return default_attributes(metadata, config.state_option_set)


def default_attributes(metadata: Mapping[str, Any], state_set: str) -> list[str]:
    """Every eligible standard and custom attribute of the opportunity and its account."""
    attrs = metadata.get("attributes", {})
    opp = {a["name"]: a for a in attrs.get("opportunity", [])}
    acc = {a["name"]: a for a in attrs.get("account", [])}
    names = [n for n in opp if attribute_ineligibility(n, opp, acc, state_set) is None]
    names += [
        ACCOUNT_PREFIX + n for n in acc if attribute_ineligibility(ACCOUNT_PREFIX + n, opp, acc, state_set) is None
    ]
    return names


def feature_descriptors(attributes: Sequence[str], metadata: Mapping[str, Any]) -> list[dict[str, Any]]:
    attrs = metadata.get("attributes", {})
    opts = metadata.get("optionsets", {})
    out: list[dict[str, Any]] = []
    for name in attributes:
        entity, base = (
            ("account", name[len(ACCOUNT_PREFIX) :]) if name.startswith(ACCOUNT_PREFIX) else ("opportunity", name)
        )
        meta: Mapping[str, Any] = next((a for a in attrs.get(entity, []) if a["name"] == base), {})
        typ = str(meta.get("type", "String"))
        label = str(meta.get("label") or base)
        if entity == "account":
            label = "Account " + label
        if typ in NUMERIC_TYPES:
            unit = "money" if typ == "Money" else "count" if typ in ("Integer", "BigInt") else None
            out.append({"name": name, "kind": "number", "label": label, "source": name, "unit": unit})
        else:
            options = opts.get(entity, {}).get(base) or None
            boolean = typ == "Boolean"
            out.append(
                {
                    "name": name,
                    "kind": "category",
                    "label": label,
                    "source": name,
                    # Boolean labels keyed "1"/"0" whatever the metadata holds ({"true", "false"} or nothing)
                    "options": boolean_options(options) if boolean else options,
                    "boolean": boolean,
                    "text": typ in TEXT_TYPES,
                }
            )
    for d in DERIVED:
        out.append({"name": d["name"], "kind": "number", "label": d["label"], "source": d["name"], "derived": True})
    return out
