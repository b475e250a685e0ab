"""$filter evaluation, paging tokens and generator properties, in memory (no servers)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mock_dataverse.errors import DataverseError
from mock_dataverse.generator import seed_org
from mock_dataverse.query import FilterCompiler
from mock_dataverse.store import Org

NOW = datetime(2026, 11, 26, tzinfo=UTC)


@pytest.fixture(scope="module")
def org() -> Org:
    o = Org(NOW)
    seed_org(o, 7, 600, NOW)
    return o


def _ids(org: Org, flt: str) -> set[str]:
    pred = FilterCompiler(org, org.table("opportunity")).compile(flt)
    return {r["opportunityid"] for r in org.rows("opportunity") if pred(r)}


def test_filter_semantics(org: Org) -> None:
    rows = org.rows("opportunity")
    assert _ids(org, "statecode eq 0 or statecode eq 1") == {
        r["opportunityid"] for r in rows if r["statecode"] in (0, 1)
    }
    assert _ids(org, "not (statecode eq 0)") == {r["opportunityid"] for r in rows if r["statecode"] != 0}
    assert _ids(org, "budgetstatus eq null") == {
        r["opportunityid"] for r in rows if r["budgetstatus"] is None
    }
    assert _ids(org, "statecode in (1,2)") == {r["opportunityid"] for r in rows if r["statecode"] in (1, 2)}
    assert _ids(org, "startswith(name,'1')") == {
        r["opportunityid"] for r in rows if r["name"].startswith("1")
    }
    assert _ids(org, "contains(name,'UNITS OF')") == {r["opportunityid"] for r in rows}  # case-insensitive
    d = "2026-01-01"
    assert _ids(org, f"createdon lt {d}") == {r["opportunityid"] for r in rows if r["createdon"] < d}
    assert _ids(org, f"estimatedclosedate ge {d}") == {
        r["opportunityid"] for r in rows if r["estimatedclosedate"] and r["estimatedclosedate"] >= d
    }
    acc = rows[0]["_parentaccountid_value"]
    assert _ids(org, f"parentaccountid/accountid eq {acc}") == _ids(org, f"_parentaccountid_value eq {acc}")


@pytest.mark.parametrize(
    "bad",
    [
        "statecode eq",
        "nosuch eq 1",
        "statecode eq 'x'",
        "name eq 5",
        "foo(name)",
        "statecode add 1 eq 2",
        "(statecode eq 1",
    ],
)
def test_bad_filters_raise_400(org: Org, bad: str) -> None:
    with pytest.raises(DataverseError) as err:
        _ids(org, bad)
    assert err.value.status == 400


def test_seed_is_deterministic_and_realistic() -> None:
    a, b = Org(NOW), Org(NOW)
    seed_org(a, 3, 800, NOW)
    seed_org(b, 3, 800, NOW)
    assert [r["opportunityid"] for r in a.rows("opportunity")] == [
        r["opportunityid"] for r in b.rows("opportunity")
    ]
    rows = a.rows("opportunity")
    open_ = [r for r in rows if r["statecode"] == 0]
    won = sum(r["statecode"] == 1 for r in rows)
    lost = sum(r["statecode"] == 2 for r in rows)
    assert 0.15 < len(open_) / len(rows) < 0.32 and 0.3 < won / (won + lost) < 0.5
    assert {r["salesstage"] for r in open_} == {0, 1, 2, 3}
    assert min(r["createdon"] for r in rows) < "2024-06-01"
    won_rows = [r for r in rows if r["statecode"] == 1]
    assert sum(r["new_contractnumber"] is not None for r in won_rows) / len(won_rows) > 0.9
    other = [r for r in rows if r["statecode"] != 1]
    assert sum(r["new_contractnumber"] is not None for r in other) / len(other) < 0.06


def test_transaction_rollback(org: Org) -> None:
    before = len(org.rows("account"))
    with pytest.raises(RuntimeError), org.transaction():
        org.insert("account", {"name": "tmp"})
        org.delete("account", org.rows("account")[0]["accountid"])
        raise RuntimeError
    assert len(org.rows("account")) == before
