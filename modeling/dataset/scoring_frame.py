"""The scoring set: eligible open opportunities (open, created within SCORING_WINDOW_DAYS, the model's filter
and BPF) observed now, with the derived features and the similar-deals counts stored at training."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd

from modeling.config import ModelConfig
from modeling.dataset.attributes import feature_descriptors, model_attributes
from modeling.dataset.derived import COUNT_COLUMNS, closed_events, derive_open
from modeling.dataset.history import stage_history
from modeling.dataset.tables import (
    active_bpf,
    as_utc,
    bpf_process,
    ensure_columns,
    latest_opportunities,
    option_key,
    selection_mask,
    stage_name,
    with_account,
)
from modeling.features import STAGE_COLUMN

SCORING_WINDOW_DAYS = 730  # Dynamics scores open opportunities created within the last 2 years


@dataclass
class ScoringData:
    frame: pd.DataFrame  # opportunityid + feature columns (+ STAGE_COLUMN)
    skipped: list[dict[str, str]]  # [{"opportunityid", "reason"}]


def open_rows(
    opp: pd.DataFrame,
    tables: Mapping[str, pd.DataFrame],
    config: ModelConfig,
    attributes: Sequence[str],
    bpf_inst: pd.DataFrame,
    stage_hist: pd.DataFrame,
    now_ts: pd.Timestamp,
    events: pd.DataFrame,
    prior: float,
    stats: Mapping[str, Any],
    process: Mapping[str, Any] | None,
    *,
    derive: bool = True,
) -> pd.DataFrame:
    n = len(opp)
    created = as_utc(opp.get("createdon"), n)
    created.index = opp.index
    state = opp.get("statecode", pd.Series([None] * n, index=opp.index)).map(option_key)
    is_open = state.eq("0").to_numpy()
    recent = (created >= now_ts - pd.Timedelta(days=SCORING_WINDOW_DAYS)).to_numpy() & (created <= now_ts).to_numpy()
    sel = selection_mask(opp, config, bpf_inst).to_numpy()
    rows = opp[is_open & recent & sel].copy()
    rows["_created"] = created[rows.index].array
    rows["_t"] = now_ts
    rows["_close"] = pd.NaT
    id_to_stage = {str(s["processstageid"]).lower(): str(s["stagename"]) for s in (process or {}).get("stages", [])}
    inst = bpf_inst.set_index("opportunityid") if not bpf_inst.empty else None
    oid = rows["opportunityid"].astype(str)
    stage = rows.get("stepname", pd.Series([None] * len(rows), index=rows.index)).map(stage_name)
    start = pd.Series(pd.NaT, index=rows.index, dtype="datetime64[ns, UTC]")
    if inst is not None:
        act = oid.map(inst["activestageid"].astype(str).str.lower().map(id_to_stage).to_dict())
        stage = act.where(act.notna(), stage)
        start = oid.map(inst["stagestart"].to_dict()).astype("datetime64[ns, UTC]")
    rows[STAGE_COLUMN] = stage.to_numpy(dtype=object)
    rows["_stage_start"] = start.to_numpy()
    if not stage_hist.empty:
        last = (
            stage_hist.sort_values("entered").drop_duplicates("opportunityid", keep="last").set_index("opportunityid")
        )
        hs = oid.map(last["entered"].to_dict()).astype("datetime64[ns, UTC]")
        rows["_stage_start"] = rows["_stage_start"].fillna(pd.Series(hs.to_numpy(), index=rows.index))
    rows = rows.reset_index(drop=True)
    rows = with_account(rows, tables, attributes)
    return derive_open(rows, events, prior, stats) if derive else rows


def build_scoring_frame(
    tables: Mapping[str, pd.DataFrame],
    metadata: Mapping[str, Any],
    config: ModelConfig,
    now: datetime,
    stats: Mapping[str, Any],
    *,
    opportunity_ids: Sequence[str] | None = None,
) -> ScoringData:
    """Eligible open opportunities (open, created within 2 years, filter, BPF) observed at `now`.
    `stats` is the version's meta["stats"]. Listed ids that are not eligible are returned in `skipped`."""
    now_ts = pd.Timestamp(now).tz_convert("UTC") if pd.Timestamp(now).tzinfo else pd.Timestamp(now, tz="UTC")
    opp = latest_opportunities(tables)
    attributes = model_attributes(config, metadata)
    if opportunity_ids is not None:
        wanted = {str(i).lower() for i in opportunity_ids}
        opp = opp[opp["opportunityid"].astype(str).str.lower().isin(wanted)].reset_index(drop=True)
    bpf_inst = active_bpf(tables)
    events = closed_events(latest_opportunities(tables), config)
    process = bpf_process(metadata, config.business_process_flow)
    rows = open_rows(
        opp,
        tables,
        config,
        attributes,
        bpf_inst,
        stage_history(tables.get("opportunity_history")),
        now_ts,
        events,
        float(stats.get("prior_win_rate", 0.5)),
        stats,
        process,
    )
    skipped: list[dict[str, str]] = []
    if opportunity_ids is not None:
        got = set(rows["opportunityid"].astype(str).str.lower())
        present = set(opp["opportunityid"].astype(str).str.lower())
        for i in opportunity_ids:
            k = str(i).lower()
            if k not in got:
                skipped.append(
                    {
                        "opportunityid": str(i),
                        "reason": "not eligible (closed, older than 2 years, outside the model's filter or BPF)"
                        if k in present
                        else "not found",
                    }
                )
    feats = feature_descriptors(attributes, metadata)
    keep = ["opportunityid", STAGE_COLUMN] + [f["name"] for f in feats] + COUNT_COLUMNS
    return ScoringData(frame=ensure_columns(rows, keep), skipped=skipped)
