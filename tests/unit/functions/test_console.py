"""GET /api/console: the admin console's static files, and nothing else, through get_user_function()."""

from __future__ import annotations

import json

import azure.functions as func
import pytest

from functions import console
from tests.conftest import registry


def _get(path: str, url: str | None = None) -> func.HttpResponse:
    fn = registry()["console"].get_user_function()
    url = url or f"http://localhost/api/console/{path}".rstrip("/")
    return fn(func.HttpRequest("GET", url, route_params={"path": path}, body=b""))


@pytest.mark.parametrize(
    ("path", "mimetype", "file"),
    [
        ("", "text/html", "index.html"),
        ("console.js", "text/javascript", "console.js"),
        ("console.css", "text/css", "console.css"),
    ],
)
def test_serves_the_console_files(path: str, mimetype: str, file: str) -> None:
    resp = _get(path)
    assert resp.status_code == 200 and resp.mimetype == mimetype
    assert resp.get_body() == (console.FOLDER / file).read_bytes()
    assert "default-src 'self'" in resp.headers["Content-Security-Policy"]


@pytest.mark.parametrize("path", ["../function_app.py", "nope.js", "INDEX.HTML", "a/b.js", "index.html%00", "x" * 300])
def test_anything_else_is_a_json_404(path: str) -> None:
    resp = _get(path)
    assert resp.status_code == 404
    assert json.loads(resp.get_body())["error"]["code"] == "RouteNotFound"


def test_a_trailing_slash_redirects_to_the_page_its_relative_links_expect() -> None:
    resp = _get("", url="http://localhost/api/console/")
    assert resp.status_code == 308 and resp.headers["Location"] == "../console"


def test_the_page_holds_no_key_and_calls_only_relative_api_paths() -> None:
    script = (console.FOLDER / "console.js").read_text()
    assert "localStorage" not in script and "sessionStorage" not in script and "document.cookie" not in script
    assert "https://" not in script and script.count("http://") == script.count("http://www.w3.org/2000/svg")
