"""Package the score card as an unmanaged Dataverse solution zip.

`python -m solution.package [--out dist/PredictiveScoreCard_1_0_0_0.zip] [--version 1.0.0.0]
[--from-app https://<app>.azurewebsites.net]` writes a zip that imports into an org (Power Apps > Solutions >
Import): `[Content_Types].xml`, `solution.xml` (the manifest: publisher `pos`, one root component per web
resource), `customizations.xml` (the web resources) and every file of `solution/webresources/` under
`WebResources/`, the form library `pos_/scorecard/form.js` among them.

`--from-app` fills `about.js` (the card's About view) in the zip from the function app: each published
model's grade ranges and `topAttributes`. The function key is read from the environment variable `POS_FUNCTION_KEY`
at packaging time and never written anywhere: the card itself only reads Dataverse."""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import sys
import urllib.parse
import urllib.request
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from modeling.config import DEFAULT_GRADE_MINIMA, grade_ranges_json

ROOT = Path(__file__).resolve().parent
WEBRESOURCES = ROOT / "webresources"
UNIQUE_NAME = "PredictiveScoreCard"
ABOUT = "pos_/scorecard/about.js"
PUBLISHER = "pos"
OPTION_PREFIX = 10417
# Dataverse web resource types (webresourcetype choice) by file extension.
TYPES = {".html": 1, ".htm": 1, ".css": 2, ".js": 3, ".xml": 4, ".png": 5, ".svg": 11, ".resx": 12}
_NAMESPACE = uuid.UUID("6f1c1d6e-2b1f-4c55-9a53-0c7d3c1b9a10")  # stable ids: a re-import updates, never duplicates
_VERSION = re.compile(r"\d{1,5}(\.\d{1,5}){1,3}")
_FIXED_TIME = (2026, 1, 1, 0, 0, 0)  # zip entry times: the same sources give the same zip


def web_resources(folder: Path = WEBRESOURCES) -> list[tuple[str, Path]]:
    """(Dataverse name, file) of every web resource, e.g. ("pos_/scorecard/scorecard.html", path)."""
    found = []
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            if path.suffix.lower() not in TYPES:
                raise ValueError(
                    f"{path}: {path.suffix or 'no extension'} is not a web resource type ({sorted(TYPES)})"
                )
            found.append((path.relative_to(folder).as_posix(), path))
    if not found:
        raise ValueError(f"no web resources under {folder}")
    return found


def resource_id(name: str) -> str:
    return "{" + str(uuid.uuid5(_NAMESPACE, name)) + "}"


def solution_xml(names: list[str], version: str) -> str:
    roots = "\n".join(f'      <RootComponent type="61" schemaName={quoteattr(n)} behavior="0" />' for n in names)
    return f"""<?xml version="1.0" encoding="utf-8"?>
<ImportExportXml version="9.2.0.0" SolutionPackageVersion="9.2" languagecode="1033" generatedBy="CrmLive" \
xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <SolutionManifest>
    <UniqueName>{UNIQUE_NAME}</UniqueName>
    <LocalizedNames>
      <LocalizedName description="Predictive score card" languagecode="1033" />
    </LocalizedNames>
    <Descriptions>
      <Description description="The seller's opportunity score card (web resources and form library)" \
languagecode="1033" />
    </Descriptions>
    <Version>{version}</Version>
    <Managed>0</Managed>
    <Publisher>
      <UniqueName>{PUBLISHER}</UniqueName>
      <LocalizedNames>
        <LocalizedName description="Predictive opportunity scoring" languagecode="1033" />
      </LocalizedNames>
      <Descriptions />
      <EMailAddress xsi:nil="true"></EMailAddress>
      <SupportingWebsiteUrl xsi:nil="true"></SupportingWebsiteUrl>
      <CustomizationPrefix>{PUBLISHER}</CustomizationPrefix>
      <CustomizationOptionValuePrefix>{OPTION_PREFIX}</CustomizationOptionValuePrefix>
      <Addresses />
    </Publisher>
    <RootComponents>
{roots}
    </RootComponents>
    <MissingDependencies />
  </SolutionManifest>
</ImportExportXml>
"""


def customizations_xml(names: list[str], version: str) -> str:
    items = "\n".join(
        f"""    <WebResource>
      <WebResourceId>{resource_id(n)}</WebResourceId>
      <Name>{escape(n)}</Name>
      <DisplayName>{escape(n.rsplit("/", 1)[-1])}</DisplayName>
      <WebResourceType>{TYPES[Path(n).suffix.lower()]}</WebResourceType>
      <IntroducedVersion>{version}</IntroducedVersion>
      <IsEnabledForMobileClient>0</IsEnabledForMobileClient>
      <IsAvailableForMobileOffline>0</IsAvailableForMobileOffline>
      <IsCustomizable>1</IsCustomizable>
      <CanBeDeleted>1</CanBeDeleted>
      <IsHidden>0</IsHidden>
      <FileName>/WebResources/{escape(n)}</FileName>
    </WebResource>"""
        for n in names
    )
    return f"""<?xml version="1.0" encoding="utf-8"?>
<ImportExportXml xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" OrganizationVersion="9.2.0.0" \
OrganizationSchemaType="Standard" CRMServerServiceabilityVersion="9.2.0.0">
  <Entities />
  <Roles />
  <Workflows />
  <FieldSecurityProfiles />
  <Templates />
  <EntityMaps />
  <EntityRelationships />
  <OrganizationSettings />
  <optionsets />
  <CustomControls />
  <WebResources>
{items}
  </WebResources>
  <EntityDataProviders />
  <Languages>
    <Language>1033</Language>
  </Languages>
</ImportExportXml>
"""


def content_types_xml(extensions: set[str]) -> str:
    defaults = "".join(
        f'<Default Extension="{e}" ContentType="application/octet-stream" />' for e in sorted(extensions | {"xml"})
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">{defaults}</Types>'
    )


def build(version: str = "1.0.0.0", folder: Path = WEBRESOURCES, about: dict[str, Any] | None = None) -> bytes:
    """The solution zip's bytes (deterministic for the same sources and version); `about` replaces the
    About view's data (`pos_/scorecard/about.js`) in the zip."""
    if not _VERSION.fullmatch(version):
        raise ValueError(f"--version must be 2 to 4 dot-separated numbers such as 1.0.0.0, got {version!r}")
    resources = web_resources(folder)
    names = [n for n, _ in resources]
    entries = {
        "[Content_Types].xml": content_types_xml({Path(n).suffix.lstrip(".").lower() for n in names}).encode(),
        "solution.xml": solution_xml(names, version).encode(),
        "customizations.xml": customizations_xml(names, version).encode(),
    }
    entries.update({f"WebResources/{n}": p.read_bytes() for n, p in resources})
    if about is not None:
        entries[f"WebResources/{ABOUT}"] = about_js(about).encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return buf.getvalue()


def about_document(get: Callable[[str], Any]) -> dict[str, Any]:
    """The About view's data from the function app's own API (`get(path) -> JSON`): the documented default
    ranges, and for each published model its grade ranges and topAttributes (label and sentence)."""
    models: dict[str, Any] = {}
    for item in get("/api/models").get("models", []):
        if item.get("publishedVersion") is None:
            continue
        name = urllib.parse.quote(str(item["name"]), safe="")
        config = get(f"/api/models/{name}").get("configuration", {})
        insights = get(f"/api/models/{name}/insights")
        models[item["name"]] = {
            "version": item["publishedVersion"],
            "gradeRanges": config.get("gradeRanges"),
            "topAttributes": [
                {"label": t.get("label"), "sentence": t.get("sentence")} for t in insights.get("topAttributes", [])
            ],
        }
    return {"format": 1, "gradeRanges": grade_ranges_json(DEFAULT_GRADE_MINIMA), "models": models}


def about_js(doc: dict[str, Any]) -> str:
    return (
        "/* What the score card's About view shows for this org, written by `python -m solution.package"
        " --from-app`. */\nwindow.POS_ABOUT = " + json.dumps(doc, indent=2, ensure_ascii=False) + ";\n"
    )


def app_getter(base_url: str, key: str | None, timeout: float = 30) -> Callable[[str], Any]:
    def get(path: str) -> Any:
        headers = {"Accept": "application/json", **({"x-functions-key": key} if key else {})}
        req = urllib.request.Request(base_url.rstrip("/") + path, headers=headers)
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())

    return get


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m solution.package", description=__doc__.splitlines()[0])
    parser.add_argument("--version", default="1.0.0.0", help="solution version (default 1.0.0.0)")
    parser.add_argument("--out", help="zip to write (default dist/PredictiveScoreCard_<version>.zip)")
    parser.add_argument("--from-app", help="function app URL: write about.js from its published models first")
    args = parser.parse_args(argv)
    about = None
    if args.from_app:
        about = about_document(app_getter(args.from_app, os.environ.get("POS_FUNCTION_KEY")))
    try:
        data = build(args.version, about=about)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out or ROOT.parent / "dist" / f"{UNIQUE_NAME}_{args.version.replace('.', '_')}.zip")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    print(json.dumps({"zip": str(out), "bytes": len(data), "webResources": len(web_resources())}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
