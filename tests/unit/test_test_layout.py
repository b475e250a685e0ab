"""The test tree stays navigable: every integration module declares its marker (pytest runs with
--strict-markers, so a misspelt marker fails too)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _marks(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "pytestmark" for t in node.targets):
            return [ast.unparse(node.value)]
    return []


def test_every_integration_module_carries_the_integration_marker() -> None:
    modules = sorted((ROOT / "tests" / "integration").rglob("test_*.py"))
    assert modules
    missing = [str(m.relative_to(ROOT)) for m in modules if not any("integration" in v for v in _marks(m))]
    assert not missing, f"add `pytestmark = pytest.mark.integration` to {missing}"


def test_pytest_runs_with_strict_markers() -> None:
    assert "--strict-markers" in (ROOT / "pyproject.toml").read_text()


def test_unit_tests_mirror_the_packages() -> None:
    """tests/unit/<path>/ exists only where <path> is a folder or a module of the product."""
    unit = ROOT / "tests" / "unit"
    folders = [p.relative_to(unit) for p in unit.rglob("*") if p.is_dir() and p.name != "__pycache__"]
    strays = [str(p) for p in folders if not ((ROOT / p).is_dir() or (ROOT / p).with_suffix(".py").is_file())]
    assert not strays, f"these tests/unit folders mirror no package: {strays}"
