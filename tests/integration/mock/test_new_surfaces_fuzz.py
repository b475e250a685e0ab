"""Generated bad input against the bulk messages, the message tables and the relationship metadata, over
real HTTPS: every answer is a JSON 4xx (or a success), never a 5xx."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .helpers import Client

pytestmark = pytest.mark.integration
SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
json_values = st.recursive(
    scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3), max_leaves=8
)
columns = st.sampled_from(
    [
        "msdyn_entityid",
        "msdyn_entitytype",
        "msdyn_score",
        "msdyn_grade",
        "msdyn_predictivescoreid",
        "@odata.id",
        "@odata.type",
        "msdyn_scoredon",
        "nosuch",
    ]
)
ps_type = st.sampled_from(
    ["Microsoft.Dynamics.CRM.msdyn_predictivescore", "#Microsoft.Dynamics.CRM.msdyn_predictivescore"]
)
targets = st.lists(st.dictionaries(columns, json_values | ps_type, max_size=5), max_size=4)


@pytest.fixture(scope="module")
def client(mock_info: dict[str, Any]) -> Client:
    from tests.conftest import mock_call

    mock_call(mock_info, "POST", "/_mock/reset")
    return Client(mock_info)


def _check(r: Any) -> None:
    assert r.status_code < 500, (r.status_code, r.text[:300])
    if r.status_code >= 400:
        assert "message" in r.json()["error"]


@SETTINGS
@given(
    action=st.sampled_from(["CreateMultiple", "UpdateMultiple", "UpsertMultiple"]),
    body=st.one_of(
        json_values, st.fixed_dictionaries({"Targets": targets}), st.fixed_dictionaries({"Targets": json_values})
    ),
)
def test_bulk_actions_never_answer_5xx(client: Client, action: str, body: Any) -> None:
    _check(client.post(f"msdyn_predictivescores/Microsoft.Dynamics.CRM.{action}", json=body))


@SETTINGS
@given(
    flt=st.text(max_size=40)
    | st.sampled_from(
        [
            "sdkmessageid/name eq 5",
            "name eq @x",
            "primaryobjecttypecode gt 1",
            "sdkmessageid/name eq @m",
            "@",
            "sdkmessageid eq 'x'",
        ]
    ),
    select=st.text(max_size=12),
    expand=st.text(max_size=20),
)
def test_message_filters_never_answer_5xx(client: Client, flt: str, select: str, expand: str) -> None:
    _check(client.get("sdkmessagefilters", params={"$filter": flt, "@m": "'Create'"}))
    _check(client.get("sdkmessages", params={"$select": select, "$expand": expand}))


@SETTINGS
@given(
    key=st.text(max_size=20) | st.just("LogicalName='opportunity'"),
    kind=st.sampled_from(["Keys", "OneToManyRelationships", "ManyToOneRelationships", "ManyToManyRelationships"]),
    flt=st.sampled_from(["", "CascadeConfiguration gt 'a'", "ReferencedEntity eq 5", "SchemaName eq 'x'", "x eq"]),
    select=st.sampled_from(["", "SchemaName", "Nope", "KeyAttributes,SchemaName"]),
)
def test_relationship_metadata_never_answers_5xx(client: Client, key: str, kind: str, flt: str, select: str) -> None:
    params = {k: v for k, v in (("$filter", flt), ("$select", select)) if v}
    _check(client.get(f"EntityDefinitions({key})/{kind}", params=params))
