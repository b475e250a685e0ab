"""`EntityDefinitions(<key>)/Keys`, `/OneToManyRelationships`, `/ManyToOneRelationships` and
`/ManyToManyRelationships`, derived from the schema: every lookup column is one N:1 relationship of its
table (one per target of a Customer or Owner column) and the matching 1:N relationship of the target.

Properties are those of `EntityKeyMetadata` and `OneToManyRelationshipMetadata` (PA
`webapi/reference/entitykeymetadata`, `onetomanyrelationshipmetadata`); `$select` and `$filter` apply
as on `EntityDefinitions`. The mock has no N:N relationships, so that collection is empty.
"""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING, Any

from .metadata import label
from .schema import NS, Attribute, Table

if TYPE_CHECKING:
    from .api import Api, Request

ROUTE = re.compile(
    r"EntityDefinitions\((.*?)\)/(Keys|OneToManyRelationships|ManyToOneRelationships|ManyToManyRelationships)"
)
# System relationship names where Dataverse's are known (reference dataverse-webapi.md sections 2-3).
KNOWN_NAMES = {
    ("opportunity", "parentaccountid", "account"): "opportunity_parent_account",
    ("opportunity", "parentcontactid", "contact"): "opportunity_parent_contact",
    ("opportunity", "customerid", "account"): "opportunity_customer_accounts",
    ("opportunity", "customerid", "contact"): "opportunity_customer_contacts",
    ("opportunity", "msdyn_predictivescoreid", "msdyn_predictivescore"): "msdyn_msdyn_predictivescore_opportunity",
    ("opportunitysalesprocess", "opportunityid", "opportunity"): "lk_opportunitysalesprocess_opportunityid",
}
CASCADE = {
    "Assign": "NoCascade",
    "Delete": "RemoveLink",
    "Merge": "NoCascade",
    "Reparent": "NoCascade",
    "Share": "NoCascade",
    "Unshare": "NoCascade",
    "RollupView": "NoCascade",
    "Archive": "NoCascade",
}


def relationship_route(api: Api, req: Request) -> dict[str, Any] | None:
    """The document for a Keys or relationships path, or None for any other metadata path."""
    m = ROUTE.fullmatch(req.path)
    if m is None:
        return None
    table, _ = api._find_entity(api.definitions(), m.group(1))
    kind = m.group(2)
    if kind == "Keys":
        items = [key_metadata(table, cols) for cols in table.alt_keys]
    elif kind == "ManyToManyRelationships":
        items = []
    else:
        rels = relationships(list(api.org.schema.values()))
        side = "ReferencedEntity" if kind == "OneToManyRelationships" else "ReferencingEntity"
        items = [r for r in rels if r[side] == table.logical]
    return {
        "@odata.context": f"{api.base}$metadata#EntityDefinitions('{table.logical}')/{kind}",
        "value": api._meta_query(req, items),
    }


def key_metadata(table: Table, cols: tuple[str, ...]) -> dict[str, Any]:
    name = "_".join(cols)
    return {
        "@odata.type": "#Microsoft.Dynamics.CRM.EntityKeyMetadata",
        "MetadataId": str(uuid.uuid5(NS, f"key/{table.logical}/{name}")),
        "LogicalName": name,
        "SchemaName": name,
        "EntityLogicalName": table.logical,
        "KeyAttributes": list(cols),
        "DisplayName": label(" + ".join(cols)),
        "EntityKeyIndexStatus": "Active",
        "IsManaged": True,
        "IsSecondaryKey": False,
        "IsCustomizable": {"Value": False, "CanBeChanged": False, "ManagedPropertyLogicalName": "iscustomizable"},
        "AsyncJob": None,
    }


def relationships(tables: list[Table]) -> list[dict[str, Any]]:
    """Every 1:N relationship of the schema (each seen from both sides by the routes above)."""
    by_name = {t.logical: t for t in tables}
    out = []
    for t in tables:
        for a in t.attrs.values():
            for nav, target in a.navs().items():
                if a.type == "Owner":
                    for owner in a.targets:
                        out.append(_one_to_many(t, a, nav, by_name[owner]))
                    break
                if target in by_name:
                    out.append(_one_to_many(t, a, nav, by_name[target]))
    return out


def _one_to_many(referencing: Table, attr: Attribute, nav: str, referenced: Table) -> dict[str, Any]:
    schema = KNOWN_NAMES.get((referencing.logical, attr.name, referenced.logical))
    if schema is None:
        schema = f"{referenced.logical}_{referencing.logical}_{attr.name}"
    return {
        "@odata.type": "#Microsoft.Dynamics.CRM.OneToManyRelationshipMetadata",
        "MetadataId": str(uuid.uuid5(NS, f"relationship/{schema}")),
        "SchemaName": schema,
        "RelationshipType": "OneToManyRelationship",
        "ReferencedEntity": referenced.logical,
        "ReferencedAttribute": referenced.pk,
        "ReferencingEntity": referencing.logical,
        "ReferencingAttribute": attr.name,
        "ReferencedEntityNavigationPropertyName": schema,
        "ReferencingEntityNavigationPropertyName": nav,
        "IsCustomRelationship": attr.custom,
        "IsManaged": True,
        "IsValidForAdvancedFind": True,
        "IsHierarchical": False,
        "SecurityTypes": "None",
        "RelationshipBehavior": 0,
        "CascadeConfiguration": dict(CASCADE),
        "AssociatedMenuConfiguration": {
            "Behavior": "UseCollectionName",
            "Group": "Details",
            "Label": label(referencing.label + "s"),
            "Order": 10000,
        },
    }
