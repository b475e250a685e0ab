"""Training quality and cost on the shared public data sets, through modeling's own pipeline.

IBM and Maven CSVs are adapted into lake-shaped frames here (a small adapter; not product code) and
trained with the default configuration; on the SAME time split (most recent 20% by close date) we fit
a plain HistGradientBoosting (native categories) and a plain LogisticRegression (BASELINES.md).
IBM has no dates and no account ids: created/closed dates follow the id order (BASELINES' time proxy)
and an account is the client profile (region + client size codes + past revenue code), a stand-in.
Usage: .venv/bin/python bench/bench_training.py [ibm|maven|synthetic100k ...]
"""

from __future__ import annotations

import resource
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from modeling.config import validate_config
from modeling.dataset import build_training_frame
from modeling.train import ece, train_model

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets"
NOW = datetime(2025, 1, 1, tzinfo=UTC)


def _attrs(opp: list[tuple[str, str]], acc: list[tuple[str, str]]) -> dict:
    base = [
        ("opportunityid", "Uniqueidentifier"),
        ("statecode", "State"),
        ("createdon", "DateTime"),
        ("actualclosedate", "DateTime"),
        ("modifiedon", "DateTime"),
        ("_parentaccountid_value", "Lookup"),
        ("_ownerid_value", "Owner"),
    ]
    return {
        "opportunity": [
            {"name": n, "type": t, "custom": n.startswith("new_"), "label": n} for n, t in base + opp
        ],
        "account": [
            {"name": n, "type": t, "custom": False, "label": n}
            for n, t in [("accountid", "Uniqueidentifier")] + acc
        ],
    }


def ibm() -> tuple[dict, dict, pd.DataFrame, list[str], list[str]]:
    df = pd.read_csv(
        DATA / "ibm_sales_win_loss" / "WA_Fn-UseC_-Sales-Win-Loss.csv.zip", keep_default_na=False
    )
    df = df.sort_values("Opportunity Number", kind="stable").reset_index(drop=True)
    n = len(df)
    created = pd.Timestamp(NOW) - pd.Timedelta(days=700) + pd.to_timedelta(np.arange(n) * (680 / n), unit="D")
    acc_key = (
        df[
            [
                "Region",
                "Client Size By Revenue",
                "Client Size By Employee Count",
                "Revenue From Client Past Two Years",
            ]
        ]
        .astype(str)
        .agg("|".join, axis=1)
    )
    codes, uniq = pd.factorize(acc_key)
    won = df["Opportunity Result"].eq("Won")
    opp = pd.DataFrame(
        {
            "opportunityid": [f"ibm-{i}" for i in range(n)],
            "statecode": np.where(won, 1, 2).astype("int64"),
            "createdon": created,
            "actualclosedate": created + pd.Timedelta(days=1),
            "modifiedon": created + pd.Timedelta(days=1),
            "_parentaccountid_value": [f"acc-{c}" for c in codes],
            "_ownerid_value": None,
            "estimatedvalue": df["Opportunity Amount USD"].astype(float),
            "new_suppliessubgroup": df["Supplies Subgroup"],
            "new_suppliesgroup": df["Supplies Group"],
            "new_region": df["Region"],
            "new_routetomarket": df["Route To Market"],
            "new_competitortype": df["Competitor Type"],
            "new_revenuefromclient": df["Revenue From Client Past Two Years"].astype("int64"),
            "new_dealsizecategory": df["Deal Size Category"].astype("int64"),
        }
    )
    parts = [s.split("|") for s in uniq]
    account = pd.DataFrame(
        {
            "accountid": [f"acc-{i}" for i in range(len(uniq))],
            "revenuecode": [int(p[1]) for p in parts],
            "employeecode": [int(p[2]) for p in parts],
        }
    )
    md = {
        "attributes": _attrs(
            [
                ("estimatedvalue", "Money"),
                ("new_suppliessubgroup", "String"),
                ("new_suppliesgroup", "String"),
                ("new_region", "String"),
                ("new_routetomarket", "String"),
                ("new_competitortype", "String"),
                ("new_revenuefromclient", "Integer"),
                ("new_dealsizecategory", "Integer"),
            ],
            [("revenuecode", "Integer"), ("employeecode", "Integer")],
        ),
        "optionsets": {"opportunity": {}},
        "processes": [],
    }
    plain = df.rename(columns={"Opportunity Result": "y"})
    cat = ["Supplies Subgroup", "Supplies Group", "Region", "Route To Market", "Competitor Type"]
    num = [
        "Opportunity Amount USD",
        "Client Size By Revenue",
        "Client Size By Employee Count",
        "Revenue From Client Past Two Years",
        "Deal Size Category",
    ]
    plain["y"] = won.astype(int)
    tables = {"opportunity": opp, "account": account}
    return tables, md, plain, cat, num


def maven() -> tuple[dict, dict, pd.DataFrame, list[str], list[str]]:
    sp = pd.read_csv(DATA / "maven_crm" / "sales_pipeline.csv")
    acc = pd.read_csv(DATA / "maven_crm" / "accounts.csv")
    shift = pd.Timestamp(NOW) - pd.Timestamp("2018-01-01", tz="UTC")
    engage = pd.to_datetime(sp["engage_date"], utc=True) + shift
    close = pd.to_datetime(sp["close_date"], utc=True) + shift
    state = sp["deal_stage"].map({"Won": 1, "Lost": 2}).fillna(0).astype("int64")
    created = engage.fillna(pd.Timestamp(NOW) - pd.Timedelta(days=30))
    opp = pd.DataFrame(
        {
            "opportunityid": sp["opportunity_id"],
            "statecode": state,
            "createdon": created,
            "actualclosedate": close,
            "modifiedon": close.fillna(pd.Timestamp(NOW) - pd.Timedelta(days=1)),
            "_parentaccountid_value": sp["account"],
            "_ownerid_value": sp["sales_agent"],
            "actualvalue": sp["close_value"],
            "new_product": sp["product"],
        }
    )
    account = acc.rename(columns={"account": "accountid"})[["accountid", "sector", "revenue", "employees"]]
    md = {
        "attributes": _attrs(
            [("actualvalue", "Money"), ("new_product", "String")],
            [("sector", "String"), ("revenue", "Money"), ("employees", "Integer")],
        ),
        "optionsets": {"opportunity": {}},
        "processes": [],
    }
    closed = sp[sp["deal_stage"].isin(["Won", "Lost"])].copy()
    closed["y"] = closed["deal_stage"].eq("Won").astype(int)
    closed = closed.sort_values("close_date", kind="stable").merge(acc, on="account", how="left")
    return (
        {"opportunity": opp, "account": account},
        md,
        closed,
        ["sales_agent", "product", "sector"],
        ["revenue", "employees"],
    )


def plain_models(df: pd.DataFrame, cat: list[str], num: list[str]) -> dict[str, dict[str, float]]:
    n = len(df)
    cut = n - int(np.ceil(n * 0.2))
    x, y = df[cat + num], df["y"].to_numpy()
    hgb = make_pipeline(
        ColumnTransformer(
            [("c", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan), cat)],
            remainder="passthrough",
        ),
        HistGradientBoostingClassifier(categorical_features=list(range(len(cat))), random_state=0),
    )
    lr = make_pipeline(
        ColumnTransformer(
            [
                ("c", OneHotEncoder(handle_unknown="ignore", min_frequency=5), cat),
                ("n", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), num),
            ]
        ),
        LogisticRegression(max_iter=2000),
    )
    out = {}
    for name, m in (("plain_hgb", hgb), ("plain_lr", lr)):
        m.fit(x.iloc[:cut], y[:cut])
        p = m.predict_proba(x.iloc[cut:])[:, 1]
        out[name] = {"auc": round(float(roc_auc_score(y[cut:], p)), 4), "ece": round(ece(p, y[cut:]), 4)}
    return out


def run(name: str) -> None:
    tables, md, plain, cat, num = {"ibm": ibm, "maven": maven}[name]()
    cfg = validate_config(
        {"name": f"bench_{name}"},
        existing=[],
        processes=[],
        attributes=md["attributes"],
        optionsets=md["optionsets"],
        now=NOW,
    )
    t = time.perf_counter()
    data = build_training_frame(tables, md, cfg, NOW)
    t_data = time.perf_counter() - t
    model = train_model(data, cfg)
    total = time.perf_counter() - t
    m = model.meta["metrics"]
    print(
        f"[{name}] rows={len(data.frame)} dataset_s={t_data:.1f} total_s={total:.1f} "
        f"maxrss_mb={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}"
    )
    print(
        f"[{name}] ours algorithm={model.meta['algorithm']} auc={m['auc']} ece={m['ece']} brier={m['brier']} "
        f"(uncalibrated auc={m['auc_uncalibrated']} ece={m['ece_uncalibrated']}) readiness={m['readiness']}"
    )
    print(f"[{name}] excluded={model.meta['excluded_attributes']}")
    print(f"[{name}] plain on the same split: {plain_models(plain, cat, num)}")


if __name__ == "__main__":
    for arg in sys.argv[1:] or ["ibm", "maven"]:
        run(arg)
