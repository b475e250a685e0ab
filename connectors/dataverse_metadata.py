"""Pure helpers of the Dataverse client's metadata reads (`connectors.dataverse.DataverseClient.attributes`,
`.option_sets`, `.processes`): the column types, display labels, and business process flows from rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

LOOKUP_TYPES = frozenset({"Lookup", "Owner", "Customer"})
UNREADABLE_TYPES = frozenset({"Virtual", "ManagedProperty", "CalendarRules", "PartyList", "Image", "File"})


def processes_from_rows(
    workflows: Sequence[Mapping[str, Any]], stages: Sequence[Mapping[str, Any]], primary_entity: str
) -> list[dict[str, Any]]:
    """BPFs (workflow rows of category 4) for `primary_entity` with their processstage rows, stages ordered
    by stage category then name: [{"workflowid","name","uniquename","stages":[{"processstageid",
    "stagename","stagecategory","order"}]}]."""
    out: list[dict[str, Any]] = []
    for wf in workflows:
        if wf.get("category") not in (None, 4) or wf.get("primaryentity") not in (None, primary_entity):
            continue
        wid = str(wf.get("workflowid") or "").lower()
        mine = [s for s in stages if str(s.get("_processid_value") or "").lower() == wid]
        mine.sort(
            key=lambda s: (
                s.get("stagecategory") is None,
                s.get("stagecategory") or 0,
                s.get("stagename") or "",
            )
        )
        out.append(
            {
                "workflowid": wf.get("workflowid"),
                "name": wf.get("name"),
                "uniquename": wf.get("uniquename"),
                "statecode": wf.get("statecode"),
                "stages": [
                    {
                        "processstageid": s.get("processstageid"),
                        "stagename": s.get("stagename"),
                        "stagecategory": s.get("stagecategory"),
                        "order": i,
                    }
                    for i, s in enumerate(mine)
                ],
            }
        )
    return out


def localized_label(label: Any) -> str | None:
    """The text of a Dataverse `Label`: the user's localized label, else the first localized one; None if none."""
    if not isinstance(label, dict):
        return None
    user = label.get("UserLocalizedLabel")
    if isinstance(user, dict) and user.get("Label"):
        return str(user["Label"])
    for loc in label.get("LocalizedLabels") or []:
        if isinstance(loc, dict) and loc.get("Label"):
            return str(loc["Label"])
    return None
