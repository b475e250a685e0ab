"""CSV import of the three shared data sets through the shipped mappings, served over HTTPS."""

from __future__ import annotations

from pathlib import Path

import pytest

from mock_dataverse.server import MockServer

from .helpers import Client

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[3]
DATASETS = REPO / ".." / "shared" / "datasets"
CASES = {
    "ibm_sales_win_loss": (78025, 17627, 60398, 0),
    "maven_crm": (8800, 4238, 2473, 2089),
    "bank_marketing": (41188, 4640, 36548, 0),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_import_shared_dataset(name: str) -> None:
    if not (DATASETS / name).is_dir():
        pytest.skip(f"shared data set {name} not present at {DATASETS}")
    rows, won, lost, open_ = CASES[name]
    with MockServer(mapping=REPO / "mappings" / f"{name}.json") as srv:
        rep = srv.import_report
        assert rep is not None and (rep["rows"], rep["won"], rep["lost"], rep["open"]) == (
            rows,
            won,
            lost,
            open_,
        )
        opps = srv.org.rows("opportunity")
        assert len(opps) == rows
        assert len(srv.org.rows("opportunitysalesprocess")) == rows
        closed = [o for o in opps if o["statecode"] != 0]
        assert all(o["actualclosedate"] and o["actualclosedate"] >= o["createdon"][:10] for o in closed)
        c = Client(srv.info)
        attrs = {
            a["LogicalName"]: a
            for a in c.get("EntityDefinitions(LogicalName='opportunity')/Attributes").json()["value"]
        }
        r = c.get(
            "opportunities",
            params={"$filter": "statecode eq 1", "$count": "true", "$select": "name"},
            headers={"Prefer": "odata.maxpagesize=10"},
        )
        assert r.status_code == 200 and len(r.json()["value"]) == 10
        if name == "ibm_sales_win_loss":
            assert attrs["new_competitortype"]["IsCustomAttribute"] is True
            os_ = c.get(
                "EntityDefinitions(LogicalName='opportunity')/Attributes(LogicalName='new_competitortype')"
                "/Microsoft.Dynamics.CRM.PicklistAttributeMetadata",
                params={"$expand": "OptionSet"},
            ).json()
            labels = {o["Label"]["UserLocalizedLabel"]["Label"] for o in os_["OptionSet"]["Options"]}
            assert "None" in labels  # keep_default_na=False: "None" is a real value
            assert "new_elapseddaysinsalesstage" not in attrs
            created = [o["createdon"] for o in sorted(opps, key=lambda o: int(o["name"].split()[-1]))]
            assert created == sorted(created)  # time follows Opportunity Number order
        if name == "maven_crm":
            assert len(srv.org.rows("account")) == 85 and attrs["new_product"]["AttributeType"] == "Picklist"
            stages = {o["salesstage"] for o in opps if o["statecode"] == 0}
            assert stages == {0, 1}
            assert all(o["actualvalue"] == 0 for o in opps if o["statecode"] == 2)
        if name == "bank_marketing":
            assert attrs["new_callduration"]["AttributeType"] == "Integer"
            assert sum(o["new_job"] is None for o in opps) > 0  # "unknown" -> missing
