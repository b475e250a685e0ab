"""The solution zip: its structure as Dataverse imports it, and every file it names is in it."""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path
from xml.etree import ElementTree

import pytest

from solution import package


def _zip(data: bytes) -> zipfile.ZipFile:
    return zipfile.ZipFile(io.BytesIO(data))


@pytest.fixture(scope="module")
def built() -> zipfile.ZipFile:
    return _zip(package.build("1.2.0.0"))


def _xml(zf: zipfile.ZipFile, name: str) -> ElementTree.Element:
    return ElementTree.fromstring(zf.read(name))


def test_the_zip_holds_the_manifest_the_customizations_and_the_web_resources(built: zipfile.ZipFile) -> None:
    names = set(built.namelist())
    assert {"[Content_Types].xml", "solution.xml", "customizations.xml"} <= names
    sources = {p.relative_to(package.WEBRESOURCES).as_posix() for p in package.WEBRESOURCES.rglob("*") if p.is_file()}
    assert {n[len("WebResources/") :] for n in names if n.startswith("WebResources/")} == sources
    assert "pos_/scorecard/form.js" in sources and "pos_/scorecard/scorecard.html" in sources
    assert names - {f"WebResources/{s}" for s in sources} == {
        "[Content_Types].xml",
        "solution.xml",
        "customizations.xml",
    }


def test_the_manifest_is_an_unmanaged_solution_of_the_pos_publisher(built: zipfile.ZipFile) -> None:
    manifest = _xml(built, "solution.xml").find("SolutionManifest")
    assert manifest is not None
    assert manifest.findtext("UniqueName") == "PredictiveScoreCard"
    assert manifest.findtext("Version") == "1.2.0.0"
    assert manifest.findtext("Managed") == "0"
    assert manifest.findtext("Publisher/CustomizationPrefix") == "pos"


def test_every_file_named_is_in_the_zip_and_every_root_component_is_a_web_resource(built: zipfile.ZipFile) -> None:
    resources = _xml(built, "customizations.xml").findall("WebResources/WebResource")
    names = [r.findtext("Name") for r in resources]
    assert len(names) == len(set(names)) == len([n for n in built.namelist() if n.startswith("WebResources/")])
    for r in resources:
        name = r.findtext("Name") or ""
        assert name.startswith("pos_/"), name  # the publisher's prefix
        assert r.findtext("FileName") == f"/WebResources/{name}"
        assert f"WebResources/{name}" in built.namelist()
        assert int(r.findtext("WebResourceType") or 0) == package.TYPES[Path(name).suffix]
        assert re.fullmatch(r"\{[0-9a-f-]{36}\}", r.findtext("WebResourceId") or "")
    roots = _xml(built, "solution.xml").findall("SolutionManifest/RootComponents/RootComponent")
    assert sorted(r.get("schemaName") for r in roots) == sorted(names)
    assert {r.get("type") for r in roots} == {"61"}  # 61 = web resource
    types = {d.get("Extension") for d in _xml(built, "[Content_Types].xml")}
    assert {Path(n).suffix.lstrip(".") for n in names} | {"xml"} <= types


def test_the_pages_reference_only_resources_in_the_zip(built: zipfile.ZipFile) -> None:
    html = built.read("WebResources/pos_/scorecard/scorecard.html").decode()
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert set(refs) == {"scorecard.css", "strings.js", "about.js", "scorecard.js"}
    for ref in refs:
        assert f"WebResources/pos_/scorecard/{ref}" in built.namelist(), ref
    form = built.read("WebResources/pos_/scorecard/form.js").decode()
    assert "ns.onLoad" in form and "setClientApiContext(Xrm, formContext)" in form


def test_builds_are_deterministic_and_ids_stable() -> None:
    assert package.build("1.0.0.0") == package.build("1.0.0.0")
    assert package.resource_id("pos_/scorecard/form.js") == package.resource_id("pos_/scorecard/form.js")
    assert package.resource_id("pos_/scorecard/form.js") != package.resource_id("pos_/scorecard/scorecard.js")


def test_about_data_from_the_app_replaces_about_js_in_the_zip_only() -> None:
    doc = {"format": 1, "gradeRanges": {}, "models": {"M": {"version": 2, "topAttributes": []}}}
    text = _zip(package.build(about=doc)).read("WebResources/" + package.ABOUT).decode()
    assert json.loads(text[text.index("=") + 1 :].strip().rstrip(";")) == doc
    assert "window.POS_ABOUT = " in (package.WEBRESOURCES / package.ABOUT).read_text()


@pytest.mark.parametrize("version", ["1", "1.0.0.0.0", "v1.0", "1.0 ", ""])
def test_a_bad_version_is_refused(version: str) -> None:
    with pytest.raises(ValueError, match="--version must be"):
        package.build(version)


def test_a_file_that_is_no_web_resource_type_is_refused(tmp_path: Path) -> None:
    (tmp_path / "pos_").mkdir()
    (tmp_path / "pos_" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="is not a web resource type"):
        package.build(folder=tmp_path)


def test_the_cli_writes_the_zip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "s.zip"
    assert package.main(["--out", str(out), "--version", "2.0.0.1"]) == 0
    assert json.loads(capsys.readouterr().out)["zip"] == str(out)
    assert _zip(out.read_bytes()).read("solution.xml") == _zip(package.build("2.0.0.1")).read("solution.xml")
    assert package.main(["--out", str(out), "--version", "x"]) == 2
