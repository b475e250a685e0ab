"""Mapping validation errors name the offending field (no servers)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from mock_dataverse.generator import Generator
from mock_dataverse.importer import MappingError, import_csv
from mock_dataverse.store import Org

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _run(tmp_path: Path, csv: str, mapping: dict[str, Any]) -> tuple[Org, dict[str, Any]]:
    f = tmp_path / "d.csv"
    f.write_text(csv)
    org = Org(NOW)
    gen = Generator(org, 1, NOW)
    gen.base()
    return org, import_csv(org, gen, f, mapping)


BASE = {"outcome": {"column": "res", "won": ["W"], "lost": ["L"]}, "synthesize_dates": {"span_days": 100}}
CSV = "id|res|amt|color|flag\n1|W|10.5|red|yes\n2|L|3|blue|no\n3|open|7|red|\n"


def test_valid_mapping_imports_rows(tmp_path: Path) -> None:
    m = {
        **BASE,
        "csv": {"delimiter": "|"},
        "id_column": "id",
        "columns": {
            "amt": {"target": "estimatedvalue", "type": "money"},
            "color": {"target": "new_color", "type": "choice"},
            "flag": {"target": "new_flag", "type": "boolean"},
        },
    }
    org, rep = _run(tmp_path, CSV, m)
    assert (rep["won"], rep["lost"], rep["open"]) == (1, 1, 1)
    rows = sorted(org.rows("opportunity"), key=lambda r: r["createdon"])
    assert [r["estimatedvalue"] for r in rows] == [10.5, 3.0, 7.0]
    assert org.table("opportunity").attrs["new_color"].options == {100000000: "blue", 100000001: "red"}
    assert [r["new_flag"] for r in rows] == [True, False, None]
    assert rows[0]["actualclosedate"] > rows[0]["createdon"][:10] and rows[2]["actualclosedate"] is None


@pytest.mark.parametrize(
    "change, field",
    [
        ({"columns": {"amt": {"target": "estimatedvalue", "type": "cash"}}}, "columns['amt'].type"),
        ({"columns": {"nope": {"target": "new_x", "type": "text"}}}, "columns['nope']"),
        ({"columns": {"amt": {"target": "nosuchcol", "type": "money"}}}, "columns['amt'].target"),
        ({"columns": {"amt": {"target": "statecode", "type": "integer"}}}, "columns['amt'].type"),
        ({"columns": {"color": {"target": "new_x", "type": "integer"}}}, "columns['color']"),
        ({"outcome": {"column": "res", "won": []}}, "outcome.won"),
        ({"synthesize_dates": {"span_days": -1}}, "synthesize_dates.span_days"),
        ({"bogus": 1}, "bogus"),
        ({"ignore_unlisted": False}, "ignore"),
        ({"shuffle_seed": "7"}, "shuffle_seed"),
        ({"shuffle_seed": 7, "order_by": "id"}, "shuffle_seed"),
    ],
)
def test_mapping_errors_name_the_field(tmp_path: Path, change: dict[str, Any], field: str) -> None:
    m = {**BASE, "csv": {"delimiter": "|"}, "ignore_unlisted": True, **change}
    with pytest.raises(MappingError) as err:
        _run(tmp_path, CSV, m)
    assert field in str(err.value)


def test_shuffle_seed_gives_a_random_but_repeatable_time_order(tmp_path: Path) -> None:
    csv = "id|res\n" + "".join(f"{i}|{'W' if i % 2 else 'L'}\n" for i in range(40))
    m = {**BASE, "csv": {"delimiter": "|"}, "id_column": "id", "ignore_unlisted": True}

    def order(mapping: dict[str, Any]) -> list[str]:
        org, _ = _run(tmp_path, csv, mapping)
        return [r["name"] for r in sorted(org.rows("opportunity"), key=lambda r: r["createdon"])]

    file_order = order(m)
    shuffled = order({**m, "shuffle_seed": 7})
    assert sorted(shuffled) == sorted(file_order) and shuffled != file_order
    assert order({**m, "shuffle_seed": 7}) == shuffled


def test_cli_exits_2_on_bad_mapping(tmp_path: Path) -> None:
    import subprocess
    import sys

    bad = tmp_path / "m.json"
    bad.write_text('{"outcome": 1}')
    (tmp_path / "d.csv").write_text(CSV)
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "mock_dataverse",
            "serve",
            "--import",
            str(tmp_path / "d.csv"),
            "--mapping",
            str(bad),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[3],
    )
    assert p.returncode == 2 and "mapping.outcome" in p.stderr and p.stdout == ""
