"""Shared by the browser tests: the harness form at the mock's origin with the card in it, screenshots."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from local_runner import stack

HARNESS = Path(__file__).with_name("harness.html").read_text()
SHOTS = Path(__file__).resolve().parents[3] / "docs" / "screenshots"


def shot(locator: Any, name: str) -> None:
    """Write docs/screenshots/<name> (shown in the README) of one element."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    locator.screenshot(path=str(SHOTS / name))


def braced_upper(opp_id: str) -> str:
    """A record id as a real form's getId() returns it."""
    return "{" + opp_id.upper() + "}"


@pytest.fixture(scope="module")
def token(mock_info: dict[str, Any]) -> str:
    """A bearer token from the mock's token endpoint, through MSAL (client credentials)."""
    return str(stack.token_provider(mock_info).token())


@pytest.fixture
def open_card(browser: Any, mock_info: dict[str, Any], token: str) -> Iterator[Any]:
    """open_card(record_id) -> (page, the card's frame), loaded on the harness form at the mock's origin."""
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 480, "height": 1540})
    form_url = mock_info["url"] + "/main.aspx"

    def fulfil(route: Any) -> None:
        route.fulfill(status=200, content_type="text/html; charset=utf-8", body=HARNESS)

    context.route(form_url + "*", fulfil)

    def open_(record_id: str) -> Any:
        page = context.new_page()
        page.add_init_script(f"window.__harness = {json.dumps({'token': token, 'recordId': record_id})};")
        page.goto(form_url + "?pagetype=entityrecord&etn=opportunity")
        frame = page.frame_locator("#WebResource_pos_scorecard")
        frame.locator("#card[aria-busy='false']").wait_for(timeout=15000)
        return page, frame

    try:
        yield open_
    finally:
        context.close()
