"""Training cost and quality through modeling's own pipeline (dataset -> train -> ONNX), no network.

`python -m bench.bench_training --size N`: a synthetic org-shaped lake (N closed + N/10 open opportunities,
accounts, owners, a BPF, option sets and numbers with planted signal) is trained with the default
configuration; reports wall time per step, peak RSS (target at 100,000: <= 120 s, <= 2 GB on 2 cores)
and, on the same time split, the AUC / ECE of a plain HistGradientBoosting and a plain
LogisticRegression fitted on the same attribute columns.

`python -m bench.bench_training --dataset ibm|maven`: the public data sets shaped as the product sees
them after the CSV import into the mock (mappings/*.json) and the sync: IBM has no accounts and no
owners (every deal belongs to the importing user), choice columns are option sets with integer codes,
created dates are spread over 900 days in id order and each deal closes 30 days later (date only).
No invented accounts: the gain must come from what the product derives itself. The end-to-end
measurement through the mock and the lake is bench/bench_quality.py.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from bench.common import DATASETS_DIR, comparison, emit, log, peak_rss_mib, result, size_arg_parser
from bench.explaining import explanation_figures
from modeling.config import validate_config
from modeling.dataset import build_training_frame
from modeling.evaluation import ece
from modeling.scoring import Scorer
from modeling.train import train_model

QUICK_SIZES = [2000]
FULL_SIZES = [10_000, 100_000]
NOW = datetime(2025, 1, 1, tzinfo=UTC)
APP_USER = "00000000-0000-0000-0000-0000000000aa"


def _attrs(opp: list[tuple[str, str]], acc: list[tuple[str, str]]) -> dict[str, Any]:
    base = [
        ("opportunityid", "Uniqueidentifier"),
        ("name", "String"),
        ("statecode", "State"),
        ("statuscode", "Status"),
        ("createdon", "DateTime"),
        ("actualclosedate", "DateTime"),
        ("modifiedon", "DateTime"),
        ("_parentaccountid_value", "Lookup"),
        ("_ownerid_value", "Owner"),
    ]
    return {
        "opportunity": [{"name": n, "type": t, "custom": n.startswith("new_"), "label": n} for n, t in base + opp],
        "account": [
            {"name": n, "type": t, "custom": False, "label": n}
            for n, t in [("accountid", "Uniqueidentifier"), ("name", "String")] + acc
        ],
    }


def _codes(values: pd.Series) -> tuple[np.ndarray, dict[str, str]]:
    """CSV choice values -> option codes as the mock importer assigns them (sorted, from 100000000)."""
    distinct = sorted({str(v) for v in values if str(v) != ""})
    codes = {v: 100000000 + i for i, v in enumerate(distinct)}
    arr = np.array([codes.get(str(v), -1) for v in values], dtype="int64")
    return arr, {str(c): v for v, c in codes.items()}


def ibm() -> tuple[dict[str, pd.DataFrame], dict[str, Any], pd.DataFrame, list[str], list[str]]:
    df = pd.read_csv(DATASETS_DIR / "ibm_sales_win_loss" / "WA_Fn-UseC_-Sales-Win-Loss.csv.zip", keep_default_na=False)
    df = df.sort_values("Opportunity Number", kind="stable").reset_index(drop=True)
    n = len(df)
    span, cycle = 900, 30  # mappings/ibm_sales_win_loss.json synthesize_dates
    end = pd.Timestamp(NOW) - pd.Timedelta(days=cycle + 1)
    created = end - pd.Timedelta(days=span) + pd.to_timedelta(np.arange(n) * span * 86400 / (n - 1), unit="s")
    closed = (created + pd.Timedelta(days=cycle)).floor("D")
    won = df["Opportunity Result"].eq("Won").to_numpy()
    choice = {
        "Supplies Subgroup": "new_suppliessubgroup",
        "Supplies Group": "new_suppliesgroup",
        "Region": "new_region",
        "Route To Market": "new_routetomarket",
        "Competitor Type": "new_competitortype",
    }
    integer = {
        "Client Size By Revenue": "new_clientsizebyrevenue",
        "Client Size By Employee Count": "new_clientsizebyemployees",
        "Revenue From Client Past Two Years": "new_clientrevenue2y",
        "Deal Size Category": "new_dealsizecategory",
    }
    opp = pd.DataFrame(
        {
            "opportunityid": [f"ibm-{i:06d}" for i in range(n)],
            "name": [f"ibm {v}" for v in df["Opportunity Number"]],
            "statecode": np.where(won, 1, 2).astype("int64"),
            "statuscode": np.where(won, 3, 5).astype("int64"),
            "createdon": created,
            "actualclosedate": closed,
            "modifiedon": closed + pd.Timedelta(hours=17),
            "_ownerid_value": APP_USER,
            "estimatedvalue": df["Opportunity Amount USD"].astype(float),
            "decisionmaker": False,
        }
    )
    options: dict[str, Any] = {}
    for src, dst in choice.items():
        opp[dst], options[dst] = _codes(df[src])
    for src, dst in integer.items():
        opp[dst] = df[src].astype("int64")
    md = {
        "attributes": _attrs(
            [("estimatedvalue", "Money"), ("decisionmaker", "Boolean")]
            + [(c, "Picklist") for c in choice.values()]
            + [(c, "Integer") for c in integer.values()],
            [],
        ),
        "optionsets": {"opportunity": options},
        "processes": [],
    }
    # plain models: the same closed rows the product trains on (created within its 2-year period)
    plain = df.assign(y=won.astype(int), _created=created)
    plain = plain[plain["_created"] >= pd.Timestamp(NOW) - pd.DateOffset(years=2)]
    cat = list(choice)
    num = ["Opportunity Amount USD", *integer]
    return {"opportunity": opp}, md, plain, cat, num


def maven() -> tuple[dict[str, pd.DataFrame], dict[str, Any], pd.DataFrame, list[str], list[str]]:
    sp = pd.read_csv(DATASETS_DIR / "maven_crm" / "sales_pipeline.csv")
    acc = pd.read_csv(DATASETS_DIR / "maven_crm" / "accounts.csv")
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


def synthetic(
    size: int, seed: int = 0, n_open: int | None = None
) -> tuple[dict[str, pd.DataFrame], dict[str, Any], pd.DataFrame, list[str], list[str]]:
    """An org-shaped lake: `size` closed + `n_open` (default size/10) open deals over 2 years, planted
    signal, drift."""
    rng = np.random.default_rng(seed)
    n_open = max(size // 10, 50) if n_open is None else n_open
    total = size + n_open
    n_acc, n_own = max(size // 20, 20), max(size // 500, 5)
    industry = rng.integers(1, 8, n_acc)
    accounts = pd.DataFrame(
        {
            "accountid": [f"acc-{i:06d}" for i in range(n_acc)],
            "name": [f"Account {i}" for i in range(n_acc)],
            "industrycode": industry.astype("int64"),
            "revenue": rng.lognormal(15, 1, n_acc).round(0),
            "numberofemployees": rng.integers(5, 5000, n_acc).astype("int64"),
        }
    )
    acc_skill, own_skill = rng.normal(0, 0.7, n_acc), rng.normal(0, 0.5, n_own)
    acc_idx, own_idx = rng.integers(0, n_acc, total), rng.integers(0, n_own, total)
    budget, need, timeline = rng.integers(0, 4, total), rng.integers(0, 4, total), rng.integers(0, 5, total)
    channel = rng.integers(100000000, 100000004, total)
    product = rng.integers(100000000, 100000012, total)
    comp = rng.integers(0, 5, total)
    value = rng.lognormal(10, 1, total).round(-1)
    days_ago = rng.uniform(20, 720, total)
    logit = (
        -0.6
        + 0.7 * (budget - 1.5)
        - 0.4 * (need - 1.5)
        - 0.2 * timeline
        + 0.5 * (channel == 100000000)
        + 0.3 * np.sin(product)
        - 0.3 * comp
        + 0.3 * (industry[acc_idx] == 3)
        + acc_skill[acc_idx]
        + own_skill[own_idx]
        + 0.4 * (1 - days_ago / 720)  # drift: more recent deals win more often
    )
    won = rng.random(total) < 1 / (1 + np.exp(-logit))
    is_open = np.arange(total) >= size
    created = pd.Timestamp(NOW) - pd.to_timedelta(np.where(is_open, rng.uniform(1, 200, total), days_ago), unit="D")
    cycle = pd.to_timedelta(np.where(won, rng.uniform(10, 60, total), rng.uniform(20, 120, total)), unit="D")
    closed = (created + cycle).where(created + cycle < pd.Timestamp(NOW), pd.Timestamp(NOW) - pd.Timedelta(days=1))
    state = np.where(is_open, 0, np.where(won, 1, 2))
    opts = {
        "budgetstatus": {str(i): f"Budget {i}" for i in range(4)},
        "need": {str(i): f"Need {i}" for i in range(4)},
        "purchasetimeframe": {str(i): f"Timeframe {i}" for i in range(5)},
        "new_channel": {str(100000000 + i): f"Channel {i}" for i in range(4)},
        "new_product": {str(100000000 + i): f"Product {i}" for i in range(12)},
    }
    opp = pd.DataFrame(
        {
            "opportunityid": [f"opp-{i:07d}" for i in range(total)],
            "name": [f"Deal {i}" for i in range(total)],
            "_parentaccountid_value": [f"acc-{i:06d}" for i in acc_idx],
            "_ownerid_value": [f"usr-{i:04d}" for i in own_idx],
            "estimatedvalue": value,
            "budgetamount": (value * rng.uniform(0.5, 1.5, total)).round(0),
            "closeprobability": rng.integers(10, 90, total).astype("int64"),
            "budgetstatus": budget.astype("int64"),
            "need": need.astype("int64"),
            "purchasetimeframe": timeline.astype("int64"),
            "new_channel": channel.astype("int64"),
            "new_product": product.astype("int64"),
            "new_competitorcount": comp.astype("int64"),
            "statecode": state.astype("int64"),
            "statuscode": np.where(is_open, 1, np.where(won, 3, 5)).astype("int64"),
            "createdon": created,
            "actualclosedate": pd.Series(closed).where(~is_open),
            "modifiedon": pd.Series(closed).where(~is_open, pd.Timestamp(NOW) - pd.Timedelta(hours=12)),
        }
    )
    md = {
        "attributes": _attrs(
            [
                ("estimatedvalue", "Money"),
                ("budgetamount", "Money"),
                ("closeprobability", "Integer"),
                ("budgetstatus", "Picklist"),
                ("need", "Picklist"),
                ("purchasetimeframe", "Picklist"),
                ("new_channel", "Picklist"),
                ("new_product", "Picklist"),
                ("new_competitorcount", "Integer"),
            ],
            [("industrycode", "Picklist"), ("revenue", "Money"), ("numberofemployees", "Integer")],
        ),
        "optionsets": {"opportunity": {k: v for k, v in opts.items()}, "account": {"industrycode": {}}},
        "processes": [],
    }
    tables = {
        "opportunity": opp,
        "account": accounts,
        "opportunity_history": opp.assign(_synced_at=opp["modifiedon"], _deleted=False),
    }
    plain = opp[~is_open].assign(y=won[~is_open].astype(int), _close=closed[~is_open])
    plain = plain.merge(accounts, left_on="_parentaccountid_value", right_on="accountid", how="left")
    plain = plain.sort_values("_close", kind="stable")
    cat = ["budgetstatus", "need", "purchasetimeframe", "new_channel", "new_product", "industrycode"]
    num = [
        "estimatedvalue",
        "budgetamount",
        "closeprobability",
        "new_competitorcount",
        "revenue",
        "numberofemployees",
    ]
    plain[cat] = plain[cat].astype(str)
    return tables, md, plain, cat, num


def plain_models(df: pd.DataFrame, cat: list[str], num: list[str]) -> dict[str, dict[str, float]]:
    """BASELINES.md's plain models on the most recent 20% (rows already in time order)."""
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
        t = time.perf_counter()
        m.fit(x.iloc[:cut], y[:cut])
        p = m.predict_proba(x.iloc[cut:])[:, 1]
        out[name] = {
            "auc": round(float(roc_auc_score(y[cut:], p)), 4),
            "ece": round(ece(p, y[cut:]), 4),
            "seconds": round(time.perf_counter() - t, 2),
        }
    return out


def run(name: str, size: int, seed: int, threads: int | None = 1) -> dict[str, Any]:
    if name == "synthetic":
        tables, md, plain, cat, num = synthetic(size, seed)
    else:
        tables, md, plain, cat, num = {"ibm": ibm, "maven": maven}[name]()
    cfg = validate_config(
        {"name": f"bench_{name}"},
        existing=[],
        processes=[],
        attributes=md["attributes"],
        optionsets=md["optionsets"],
        now=NOW,
    )
    log(f"{name}: building the training set")
    t = time.perf_counter()
    data = build_training_frame(tables, md, cfg, NOW)
    t_data = time.perf_counter() - t
    log(f"{name}: {len(data.frame)} rows in {t_data:.1f} s; training")
    t = time.perf_counter()
    model = train_model(data, cfg, seed=seed, threads=threads)
    t_train = time.perf_counter() - t
    m = model.meta["metrics"]
    peers = plain_models(plain, cat, num)
    similar = model.meta["stats"].get("similar", {})
    results = [
        result("training_rows", float(len(data.frame)), "rows"),
        result("dataset_seconds", t_data, "s"),
        result("train_seconds", t_train, "s", note=f"algorithm {model.meta['algorithm']}; threads {threads or 'all'}"),
        result("total_seconds", t_data + t_train, "s", note="target <= 120 s at 100,000 on 2 cores"),
        result("peak_rss_mib", peak_rss_mib(), "MiB", note="target <= 2048 MiB"),
        result("auc", m["auc"], "", note=f"uncalibrated {m['auc_uncalibrated']}"),
        result(
            "ece",
            m["ece"],
            "",
            note=f"uncalibrated {m['ece_uncalibrated']}; {model.meta['calibration']['method']}",
        ),
        result("brier", m["brier"], ""),
    ]
    test = data.frame.iloc[model.test_index]
    results += explanation_figures(model.meta["algorithm"], Scorer(model.onnx_bytes, model.meta), test)
    for peer, v in peers.items():
        results.append(result(f"{peer}_auc", v["auc"], ""))
        results.append(result(f"{peer}_ece", v["ece"], ""))
    best_peer_ece = min(v["ece"] for v in peers.values())
    best_peer_auc = max(v["auc"] for v in peers.values())
    comparisons = [
        comparison("test AUC: ours vs best plain model", m["auc"], best_peer_auc, "", higher_is_better=True),
        comparison("test ECE: ours vs best plain model", m["ece"], best_peer_ece, "", higher_is_better=False),
    ]
    notes = [
        f"excluded by the leakage guard: {model.meta['excluded_attributes']}",
        f"similar-deals key: {similar.get('attributes')}",
        f"calibration: {model.meta['calibration']}",
        f"top fields: {model.meta['insights']['top_fields']}",
    ]
    return emit(
        "training",
        {"size": size, "dataset": name, "seed": seed, "threads": threads},
        results,
        comparisons,
        notes=notes,
    )


def main() -> None:
    parser = size_arg_parser("training time, memory and quality vs plain models", 2000)
    parser.add_argument("--dataset", choices=["synthetic", "ibm", "maven"], default="synthetic")
    parser.add_argument(
        "--threads", type=int, default=1, help="OpenMP/BLAS threads of the fits (the app's TRAINING_THREADS); 0 = all"
    )
    args = parser.parse_args()
    run(args.dataset, args.size, args.seed, threads=args.threads or None)


if __name__ == "__main__":
    main()
