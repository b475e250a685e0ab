"""The mock's /WebResources/: files of the configured folder with their content type, nothing else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mock_dataverse import webresources


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "pos_" / "card").mkdir(parents=True)
    (tmp_path / "pos_" / "card" / "page.html").write_text("<p>card</p>")
    (tmp_path / "pos_" / "card" / "lib.js").write_text("var x;")
    (tmp_path / "secret.txt").write_text("no")
    return tmp_path


@pytest.mark.parametrize(
    ("name", "content_type"),
    [("pos_/card/page.html", "text/html; charset=utf-8"), ("pos_/card/lib.js", "text/javascript; charset=utf-8")],
)
def test_serves_files_of_the_folder(folder: Path, name: str, content_type: str) -> None:
    resp = webresources.serve(folder, "GET", webresources.PREFIX + name)
    assert resp.status == 200 and resp.headers["Content-Type"] == content_type
    assert resp.body == (folder / name).read_bytes()


@pytest.mark.parametrize(
    ("method", "name"),
    [
        ("GET", "secret.txt"),  # not a web resource type
        ("GET", "pos_/../secret.txt"),
        ("GET", "pos_//card/page.html"),
        ("GET", ".hidden.js"),
        ("GET", "pos_/card/missing.js"),
        ("POST", "pos_/card/page.html"),
    ],
)
def test_anything_else_is_dataverse_404(folder: Path, method: str, name: str) -> None:
    resp = webresources.serve(folder, method, webresources.PREFIX + name)
    assert resp.status == 404 and "error" in json.loads(resp.body)


def test_without_a_folder_nothing_is_served() -> None:
    assert webresources.serve(None, "GET", webresources.PREFIX + "pos_/card/page.html").status == 404
