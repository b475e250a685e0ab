"""Fixtures of the browser tests (see browser.py)."""

from tests.integration.card.browser import open_card, token

__all__ = ["open_card", "token"]
