"""The score card web resource in headless Chromium, as a form loads it: the mock Dataverse serves the
solution's web resources under /WebResources/, a harness page at the org's origin stands in for the form
(the real form library, Xrm.WebApi over the mock's Web API with a token from its token endpoint), and the
opportunities were scored by the real pipeline (sync, training, two scoring runs 20 simulated days apart).

Expectations are read from the msdyn_predictivescores row itself, so every assertion can fail. The tests
write the screenshots shown in the README (docs/screenshots/card-*.png)."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from connectors.odata import key_segment
from functions.app_context import AppContext, set_context
from functions.services import scoring
from functions.services.scoring.common import ENTITY_SET, score_key
from functions.services.sync import run_sync
from functions.services.training import train
from functions.settings import load_settings
from local_runner import stack
from modeling.config import ModelConfig
from tests.conftest import mock_call
from tests.integration.card.browser import braced_upper, shot

pytestmark = pytest.mark.integration

TREND_LABELS = ["Improving", "Steady", "Declining", "Not enough info"]
GRADES = "ABCD"


@pytest.fixture(scope="module")
def org(azurite: Any, mock_info: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Sync, train and publish on the seeded org; score 20 open opportunities, move the org 20 days on,
    sync and score them again. Yields the mock info, the context and the ids by what the card should show."""
    mock_call(mock_info, "POST", "/_mock/reset")
    ctx = AppContext(load_settings(stack.unique_settings(azurite, mock_info, tag="card")))
    set_context(ctx)
    try:
        run_sync(ctx.lake, ctx.dataverse, full=False)
        ctx.model_store.create_config("CardModel", ModelConfig(name="CardModel").to_json())
        train(ctx, "CardModel", reason="test", actor="test")
        ctx.model_store.publish("CardModel")
        open_ids = [
            r["opportunityid"]
            for r in ctx.dataverse.get(
                "opportunities", params={"$select": "opportunityid", "$filter": "statecode eq 0", "$top": "40"}
            )["value"]
        ]
        _, first = scoring.score_now(ctx, open_ids[:20])
        mock_call(mock_info, "POST", "/_mock/simulate", {"days": 20})
        run_sync(ctx.lake, ctx.dataverse, full=False)
        _, second = scoring.score_now(ctx, [s["opportunityId"] for s in first["scores"]])
        improving = max(second["scores"], key=lambda s: s["score"] - (s["previousScore"] or 0))
        assert improving["trend"] == "Improving", second["scores"]
        scored = {s["opportunityId"] for s in second["scores"]}
        unscored = [i for i in open_ids[20:] if i not in scored]
        yield {"info": mock_info, "ctx": ctx, "scored": improving["opportunityId"], "unscored": unscored}
    finally:
        set_context(None)
        scoring.clear_model_cache()


def _row(ctx: AppContext, opp_id: str) -> dict[str, Any]:
    row = ctx.dataverse.get(key_segment(ENTITY_SET, score_key(opp_id)))
    row["reasons"] = json.loads(row["msdyn_scorereasons"]) if row.get("msdyn_scorereasons") else None
    return row


def test_card_shows_score_grade_trend_and_top_reasons(open_card: Any, org: dict[str, Any]) -> None:
    opp_id = org["scored"]
    row = _row(org["ctx"], opp_id)
    page, card = open_card(braced_upper(opp_id))  # as a real form hands it over
    calls = page.evaluate("window.__harness.calls")
    assert len(calls) == 1 and f"msdyn_entityid='{opp_id}',msdyn_entitytype='opportunity'" in calls[0], calls
    assert card.locator("#card").get_attribute("data-state") == "scored"
    assert card.locator("#score").inner_text() == str(row["msdyn_score"])
    assert card.locator("#score").get_attribute("aria-label") == f"Score {row['msdyn_score']} out of 100"
    grade = GRADES[row["msdyn_grade"]]
    assert card.locator("#grade").inner_text() == grade
    assert f"grade-{grade}" in (card.locator("#grade").get_attribute("class") or "")
    trend = card.locator("#trend")
    assert row["msdyn_scoretrend"] == 0 and "↑" in trend.inner_text() and "Improving" in trend.inner_text()
    assert trend.get_attribute("aria-label") == "Trend: Improving"
    assert card.locator("#scoredon").inner_text().startswith("Scored on ")
    for side, css in (("positive", ".raising"), ("negative", ".lowering")):
        expected = [r["headline"] for r in row["reasons"][side][:5]]
        assert expected, side
        assert card.locator(f"{css} .headline").all_inner_texts() == expected
        points = card.locator(f"{css} .points").all_inner_texts()
        signs = {"positive": "+", "negative": "−"}[side]
        # whole points with halves away from zero, as the card rounds (Python's round() takes 12.5 to 12)
        whole = [math.floor(abs(r["points"]) + 0.5) for r in row["reasons"][side][:5]]
        assert points == [f"{signs}{n}" for n in whole]
        labels = card.locator(f"{css} .points").evaluate_all("els => els.map(e => e.getAttribute('aria-label'))")
        assert labels == [f"{'-' if side == 'negative' else ''}{n} points" for n in whole]
    shot(card.locator("#card"), "card-summary.png")


def test_insight_shows_on_hover_and_on_keyboard_focus(open_card: Any, org: dict[str, Any]) -> None:
    row = _row(org["ctx"], org["scored"])
    page, card = open_card(org["scored"])
    first, second = card.locator(".raising .reason").nth(0), card.locator(".raising .reason").nth(1)
    tip = card.locator("#" + (first.get_attribute("aria-describedby") or "none"))
    assert tip.get_attribute("role") == "tooltip" and tip.is_hidden()
    first.hover()
    assert tip.is_visible() and tip.inner_text() == row["reasons"]["positive"][0]["insight"]
    shot(card.locator("#card"), "card-insight.png")
    card.locator("#score").hover()
    assert tip.is_hidden()
    first.focus()
    assert tip.is_visible()
    first.press("Tab")  # keyboard: the next reason gets focus and its insight, this one hides
    tip2 = card.locator("#" + (second.get_attribute("aria-describedby") or "none"))
    assert tip.is_hidden() and tip2.is_visible()
    assert tip2.inner_text() == row["reasons"]["positive"][1]["insight"]
    second.press("Escape")
    assert tip2.is_hidden()


def test_details_lists_every_reason_and_charts_the_history(open_card: Any, org: dict[str, Any]) -> None:
    row = _row(org["ctx"], org["scored"])
    page, card = open_card(org["scored"])
    card.locator("#tab-summary").focus()
    card.locator("#tab-summary").press("ArrowRight")  # keyboard: tabs move with the arrow keys
    assert card.locator("#tab-details").get_attribute("aria-selected") == "true"
    assert card.locator("#panel-details").is_visible() and card.locator("#panel-summary").is_hidden()
    every = row["reasons"]["positive"] + row["reasons"]["negative"]
    cells = card.locator("#panel-details table.all tbody tr")
    assert cells.count() == len(every)
    assert [c.split("\n")[0] for c in cells.all_inner_texts()] == [r["headline"] for r in every]
    history = row["reasons"]["history"]
    assert len(history) == 2
    circles = card.locator("#panel-details svg.chart circle")
    assert [int(c.get_attribute("data-score") or -1) for c in circles.all()] == [p["score"] for p in history]
    assert [c.get_attribute("data-grade") for c in circles.all()] == [p["grade"] for p in history]
    ys = [float(c.get_attribute("cy") or 0) for c in circles.all()]
    # higher score, higher on the chart (smaller y)
    assert (ys[1] < ys[0]) == (history[1]["score"] > history[0]["score"])
    polyline = card.locator("#panel-details svg.chart polyline").get_attribute("points") or ""
    assert len(polyline.split()) == len(history)
    label = card.locator("#panel-details svg.chart").get_attribute("aria-label") or ""
    assert f"from {history[0]['score']}" in label and f"to {history[-1]['score']}" in label
    shot(card.locator("#card"), "card-details.png")


def test_about_shows_grade_ranges_and_what_impacts_scores(open_card: Any, org: dict[str, Any]) -> None:
    page, card = open_card(org["scored"])
    card.locator("#tab-about").click()
    ranges = {g: card.locator(f"#panel-about .range[data-grade='{g}']").inner_text() for g in GRADES}
    assert ranges == {"A": "75–100", "B": "50–74", "C": "25–49", "D": "0–24"}
    assert "What impacts scores" in card.locator("#panel-about").inner_text()
    assert "CardModel@1" in card.locator("#panel-about").inner_text()
    shot(card.locator("#card"), "card-about.png")


def test_set_client_api_context_is_idempotent(open_card: Any, org: dict[str, Any]) -> None:
    page, card = open_card(org["scored"])
    card.locator("#tab-details").click()
    page.evaluate("window.__harness.tabStateChange()")
    page.evaluate("window.__harness.tabStateChange()")
    assert len(page.evaluate("window.__harness.calls")) == 1  # read once
    assert card.locator("#score").count() == 1
    assert card.locator("#tab-details").get_attribute("aria-selected") == "true"  # the seller's view kept


def test_not_scored_and_unsaved_records(open_card: Any, org: dict[str, Any]) -> None:
    page, card = open_card(braced_upper(org["unscored"][0]))
    assert card.locator("#card").get_attribute("data-state") == "notScored"
    assert "Not scored yet" in card.locator("#card").inner_text()
    shot(card.locator("#card"), "card-not-scored.png")
    page, card = open_card("")  # a new opportunity, not saved yet: nothing to read
    assert card.locator("#card").get_attribute("data-state") == "notSaved"
    assert page.evaluate("window.__harness.calls") == []


def test_not_enough_info_when_the_row_has_no_reasons(open_card: Any, org: dict[str, Any]) -> None:
    opp_id = org["unscored"][1]
    org["ctx"].dataverse.upsert(
        ENTITY_SET,
        score_key(opp_id),
        {"msdyn_score": 40, "msdyn_grade": 2, "msdyn_scoretrend": 3, "msdyn_scoredon": "2026-12-01"},
    )
    _, card = open_card(opp_id)
    assert card.locator("#card").get_attribute("data-state") == "notEnough"
    assert card.locator("#score").inner_text() == "40"
    assert "Not enough info" in card.locator("#trend").inner_text()
    assert "not enough information" in card.locator("#panel-summary").inner_text()


def test_error_state_and_retry(open_card: Any, org: dict[str, Any]) -> None:
    info = org["info"]
    mock_call(info, "POST", "/_mock/faults", {"rate_503": 1, "paths": "msdyn_predictivescores"})
    try:
        page, card = open_card(org["scored"])
        assert card.locator("#card").get_attribute("data-state") == "error"
        assert card.locator("[role='alert']").count() == 1
        assert "could not be loaded" in card.locator("#card").inner_text()
        shot(card.locator("#card"), "card-error.png")
    finally:
        mock_call(info, "POST", "/_mock/faults", {})
    card.locator("button.retry").click()
    card.locator("#card[data-state='scored']").wait_for(timeout=10000)
    assert card.locator("#score").inner_text() == str(_row(org["ctx"], org["scored"])["msdyn_score"])


def test_the_mock_serves_only_web_resources_that_exist(org: dict[str, Any]) -> None:
    import ssl
    import urllib.error
    import urllib.request

    tls = ssl.create_default_context(cafile=org["info"]["ca_cert"])
    base = org["info"]["url"] + "/WebResources/"
    with urllib.request.urlopen(base + "pos_/scorecard/scorecard.html", context=tls) as resp:
        assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
        assert resp.read() == (stack.WEBRESOURCES / "pos_" / "scorecard" / "scorecard.html").read_bytes()
    for bad in ("pos_/scorecard/missing.js", "pos_/../../pyproject.toml", "pos_/%2e%2e/x.js", f"{uuid.uuid4()}.js"):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(base + bad, context=tls)
        assert err.value.code == 404, bad
