"""Metadata documents built from the schema: EntityDefinitions, attribute metadata (with option sets),
the service document and the `$metadata` CSDL."""

from __future__ import annotations

import uuid
from typing import Any
from xml.sax.saxutils import escape

from .schema import EDM_TYPES, LOOKUP_TYPES, NS, Attribute, Table

TYPE_NAME = {
    "Picklist": "PicklistType",
    "State": "StateType",
    "Status": "StatusType",
    "Money": "MoneyType",
    "Integer": "IntegerType",
    "BigInt": "BigIntType",
    "Decimal": "DecimalType",
    "Double": "DoubleType",
    "Boolean": "BooleanType",
    "String": "StringType",
    "Memo": "MemoType",
    "DateTime": "DateTimeType",
    "Lookup": "LookupType",
    "Owner": "OwnerType",
    "Customer": "CustomerType",
    "Uniqueidentifier": "UniqueidentifierType",
}
CAST = {
    "Picklist": "PicklistAttributeMetadata",
    "State": "StateAttributeMetadata",
    "Status": "StatusAttributeMetadata",
    "Boolean": "BooleanAttributeMetadata",
    "Money": "MoneyAttributeMetadata",
    "Integer": "IntegerAttributeMetadata",
    "BigInt": "BigIntAttributeMetadata",
    "Decimal": "DecimalAttributeMetadata",
    "Double": "DoubleAttributeMetadata",
    "String": "StringAttributeMetadata",
    "Memo": "MemoAttributeMetadata",
    "DateTime": "DateTimeAttributeMetadata",
    "Lookup": "LookupAttributeMetadata",
    "Owner": "LookupAttributeMetadata",
    "Customer": "LookupAttributeMetadata",
    "Uniqueidentifier": "UniqueIdentifierAttributeMetadata",
}


def label(text: str) -> dict[str, Any]:
    loc = {
        "Label": text,
        "LanguageCode": 1033,
        "IsManaged": True,
        "MetadataId": str(uuid.uuid5(NS, "label/" + text)),
        "HasChanged": None,
    }
    return {"LocalizedLabels": [loc], "UserLocalizedLabel": loc}


def entity_definition(t: Table, object_type_code: int) -> dict[str, Any]:
    return {
        "MetadataId": str(uuid.uuid5(NS, f"meta/{t.logical}")),
        "LogicalName": t.logical,
        "SchemaName": t.logical
        if not t.logical.startswith("msdyn_")
        else "msdyn_" + t.logical[6:].capitalize(),
        "EntitySetName": t.set_name,
        "LogicalCollectionName": t.set_name,
        "CollectionSchemaName": t.set_name,
        "PrimaryIdAttribute": t.pk,
        "PrimaryNameAttribute": t.primary_name,
        "PrimaryImageAttribute": None,
        "ObjectTypeCode": object_type_code,
        "DisplayName": label(t.label),
        "DisplayCollectionName": label(t.label + "s"),
        "Description": label(t.label),
        "IsCustomEntity": t.custom,
        "IsActivity": False,
        "ChangeTrackingEnabled": True,
        "OwnershipType": t.ownership,
        "IsValidForAdvancedFind": True,
        "IsBPFEntity": t.logical == "opportunitysalesprocess",
        "IsManaged": True,
    }


def attribute_definition(t: Table, a: Attribute) -> dict[str, Any]:
    d: dict[str, Any] = {
        "@odata.type": f"#Microsoft.Dynamics.CRM.{CAST[a.type]}",
        "MetadataId": str(uuid.uuid5(NS, f"meta/{t.logical}/{a.name}")),
        "LogicalName": a.name,
        "SchemaName": a.name,
        "EntityLogicalName": t.logical,
        "AttributeType": a.type,
        "AttributeTypeName": {"Value": TYPE_NAME[a.type]},
        "DisplayName": label(a.label),
        "Description": label(a.label),
        "IsCustomAttribute": a.custom,
        "IsValidForRead": True,
        "IsValidForCreate": not a.read_only and a.type != "State",
        "IsValidForUpdate": not a.read_only and a.name != t.pk,
        "IsPrimaryId": a.name == t.pk,
        "IsPrimaryName": a.name == t.primary_name,
        "AttributeOf": None,
        "IsLogical": False,
        "RequiredLevel": {"Value": "SystemRequired" if a.name == t.pk else "None", "CanBeChanged": False},
    }
    if a.type == "DateTime":
        d["Format"] = "DateOnly" if a.dateonly else "DateAndTime"
        d["DateTimeBehavior"] = {"Value": "DateOnly" if a.dateonly else "UserLocal"}
    if a.type in ("String", "Memo"):
        d["MaxLength"] = a.max_length
        d["Format"] = "Text" if a.type == "String" else "TextArea"
    if a.type in ("Integer", "BigInt", "Money", "Decimal", "Double"):
        d["MinValue"], d["MaxValue"] = a.min_value, a.max_value
    if a.type == "Money":
        d["Precision"] = 2
    if a.type in LOOKUP_TYPES:
        d["Targets"] = list(a.targets)
    return d


def option_set(t: Table, a: Attribute) -> dict[str, Any]:
    name = a.option_set_name or f"{t.logical}_{a.name}"
    meta = {
        "MetadataId": str(uuid.uuid5(NS, f"os/{name}")),
        "Name": name,
        "IsGlobal": a.global_option_set,
        "IsCustomOptionSet": a.custom,
        "IsManaged": not a.custom,
        "DisplayName": label(a.label),
        "Description": label(a.label),
    }
    if a.type == "Boolean":
        return {
            **meta,
            "OptionSetType": "Boolean",
            "TrueOption": _option(1, a.options.get(1, "Yes")),
            "FalseOption": _option(0, a.options.get(0, "No")),
        }
    options = []
    for value, text in a.options.items():
        o = _option(value, text)
        if a.type == "Status":
            o["State"] = a.status_state[value]
            o["TransitionData"] = None
        if a.type == "State":
            o["DefaultStatus"] = a.state_default[value]
            o["InvariantName"] = text
        options.append(o)
    return {**meta, "OptionSetType": a.type if a.type != "Picklist" else "Picklist", "Options": options}


def _option(value: int, text: str) -> dict[str, Any]:
    return {
        "Value": value,
        "Label": label(text),
        "Description": label(""),
        "Color": None,
        "IsManaged": True,
        "ExternalValue": None,
        "ParentValues": [],
        "MetadataId": None,
        "HasChanged": None,
    }


def service_document(api: str, tables: list[Table]) -> dict[str, Any]:
    sets = [{"name": t.set_name, "kind": "EntitySet", "url": t.set_name} for t in tables]
    sets.append({"name": "EntityDefinitions", "kind": "EntitySet", "url": "EntityDefinitions"})
    return {"@odata.context": f"{api}$metadata", "value": sets}


def csdl(tables: list[Table], annotations: bool = False) -> str:
    """A CSDL document in namespace Microsoft.Dynamics.CRM (alias mscrm)."""
    out = [
        '<?xml version="1.0" encoding="utf-8"?>',
        '<edmx:Edmx Version="4.0" xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx">',
        '<edmx:DataServices><Schema Namespace="Microsoft.Dynamics.CRM" Alias="mscrm" '
        'xmlns="http://docs.oasis-open.org/odata/ns/edm">',
        '<EntityType Name="crmbaseentity" Abstract="true"/>',
    ]
    for t in tables:
        out.append(
            f'<EntityType Name="{t.logical}" BaseType="mscrm.crmbaseentity">'
            f'<Key><PropertyRef Name="{t.pk}"/></Key>'
        )
        for a in t.attrs.values():
            edm = "Edm.Date" if a.type == "DateTime" and a.dateonly else EDM_TYPES[a.type]
            out.append(f'<Property Name="{a.web}" Type="{edm}"/>')
        for nav, (_a, target) in t.nav_map().items():
            out.append(f'<NavigationProperty Name="{nav}" Type="mscrm.{target}" Nullable="false"/>')
        if annotations and t.alt_keys:
            keys = "".join(
                '<Record><PropertyValue Property="Key"><Collection>'
                + "".join(
                    f'<Record><PropertyValue Property="Alias" String="{c}"/><PropertyValue '
                    f'Property="Name" PropertyPath="{c}"/></Record>'
                    for c in k
                )
                + "</Collection></PropertyValue></Record>"
                for k in t.alt_keys
            )
            out.append(
                f'<Annotation Term="OData.Community.Keys.V1.AlternateKeys"><Collection>{keys}</Collection>'
                "</Annotation>"
            )
        out.append("</EntityType>")
    out.append(
        '<ComplexType Name="WhoAmIResponse"><Property Name="BusinessUnitId" Type="Edm.Guid"/>'
        '<Property Name="UserId" Type="Edm.Guid"/><Property Name="OrganizationId" Type="Edm.Guid"/>'
        '</ComplexType><Function Name="WhoAmI"><ReturnType Type="mscrm.WhoAmIResponse" Nullable="false"/>'
        "</Function>"
    )
    for action in ("WinOpportunity", "LoseOpportunity"):
        out.append(
            f'<Action Name="{action}"><Parameter Name="OpportunityClose" Type="mscrm.crmbaseentity"/>'
            '<Parameter Name="Status" Type="Edm.Int32" Nullable="false"/></Action>'
        )
    out.append('<EntityContainer Name="System">')
    for t in tables:
        out.append(f'<EntitySet Name="{t.set_name}" EntityType="mscrm.{t.logical}">')
        if annotations:
            out.append(
                '<Annotation Term="Org.OData.Capabilities.V1.ChangeTracking"><Record><PropertyValue '
                'Property="Supported" Bool="true"/></Record></Annotation>'
            )
        out.append("</EntitySet>")
    out.append(
        '<FunctionImport Name="WhoAmI" Function="mscrm.WhoAmI"/>'
        '<ActionImport Name="WinOpportunity" Action="mscrm.WinOpportunity"/>'
        '<ActionImport Name="LoseOpportunity" Action="mscrm.LoseOpportunity"/>'
    )
    out.append("</EntityContainer></Schema></edmx:DataServices></edmx:Edmx>")
    return "\n".join(escape_none(x) for x in out)


def escape_none(x: str) -> str:
    return x if "&" not in x else escape(x)
