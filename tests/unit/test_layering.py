"""The import rules of DESIGN.md "Layout", checked on the source: each package imports only what its layer
may, services and the model store never see the HTTP layer or the Azure SDK's exception types, and the
pure domain has no I/O."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT = {
    "connectors", "functions", "model_store", "modeling", "mock_dataverse", "local_runner", "bench", "tests", "solution"
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize(
    ("package", "allowed"),
    [
        ("connectors", set()),
        ("modeling", set()),
        ("model_store", {"connectors", "modeling"}),
        ("mock_dataverse", set()),
        ("solution", {"modeling"}),
        ("functions/services", {"connectors", "model_store", "modeling", "functions"}),
    ],
)
def test_packages_import_only_their_layer(package: str, allowed: set[str]) -> None:
    own = package.split("/")[0]
    bad = {}
    for path in _modules(package):
        for name in _imports(path):
            top = name.split(".")[0]
            if top in PROJECT and top not in allowed | {own}:
                bad.setdefault(str(path.relative_to(ROOT)), []).append(name)
    assert not bad, bad


@pytest.mark.parametrize("package", ["functions/services", "model_store"])
def test_services_and_model_store_see_neither_http_nor_azure_sdk_errors(package: str) -> None:
    bad = {}
    for path in _modules(package):
        for name in _imports(path):
            if name.startswith(("azure.core", "azure.functions", "functions.http")) or name == "azure.functions":
                bad.setdefault(str(path.relative_to(ROOT)), []).append(name)
            # services reach the app only through its typed context (imported for types) and each other
            if package == "functions/services" and name.startswith("functions.") and not name.startswith(
                ("functions.services", "functions.app_context", "functions.settings")
            ):
                bad.setdefault(str(path.relative_to(ROOT)), []).append(name)
    assert not bad, bad


def test_modeling_has_no_io() -> None:
    io = ("requests", "azure", "msal", "deltalake", "urllib", "socket", "os.environ")
    bad = {str(p.relative_to(ROOT)): sorted(n for n in _imports(p) if n.startswith(io)) for p in _modules("modeling")}
    assert not {k: v for k, v in bad.items() if v}
