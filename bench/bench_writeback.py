"""Score write-back: N changed msdyn_predictivescore rows written by UpsertMultiple and by $batch (1,000 a
request), at parallelism 1 and at the org's x-ms-dop-hint, through the product's write path
(`connectors.dataverse_bulk.upsert_rows` on the real `DataverseClient`) against the mock as a child process
on a free port with its cost model on (`--cost-sleep`: each request takes its modelled server time, see
mock_dataverse/protection.py). Prints one JSON object on stdout (docs/CONTRACTS.md "Benchmarks").

    .venv/bin/python -m bench.bench_writeback --size 100000
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import comparison, emit, log, peak_rss_mib, result, size_arg_parser  # noqa: E402

QUICK_SIZES = [5_000]
FULL_SIZES = [100_000]
DOP_HINT = 4
ENTITY_SET, TABLE = "msdyn_predictivescores", "msdyn_predictivescore"


def _rows(ids: list[str], version: int) -> list[tuple[dict[str, str], dict[str, Any]]]:
    """Every row changed from `version - 1`: a new score, grade and reasons document of ~900 characters."""
    out = []
    for i, oid in enumerate(ids):
        score = (version * 7 + i) % 101
        reasons = {
            "v": 2,
            "model": f"Bench@{version}",
            "positive": [
                {
                    "attribute": f"a{k}",
                    "points": k + version,
                    "headline": "Budget is confirmed",
                    "insight": "62% of opportunities with Budget = Can Buy were won; overall 29%",
                }
                for k in range(5)
            ],
            "negative": [],
        }
        key = {"msdyn_entityid": oid, "msdyn_entitytype": "opportunity"}
        body = {
            **key,
            "msdyn_name": f"Score {i}",
            "msdyn_score": score,
            "msdyn_grade": score // 26,
            "msdyn_scoretrend": 1,
            "msdyn_scoredon": "2026-12-01",
            "msdyn_scorereasons": json.dumps(reasons),
        }
        out.append((key, body))
    return out


def main(argv: list[str] | None = None) -> None:
    a = size_arg_parser(__doc__.split("\n\n")[0], default_size=FULL_SIZES[0]).parse_args(argv)
    from connectors.dataverse_bulk import upsert_rows
    from local_runner import stack
    from tests.conftest import mock_call

    ids = [str(uuid.uuid5(uuid.NAMESPACE_OID, f"bench-writeback/{i}")) for i in range(a.size)]
    results: list[dict[str, Any]] = []
    measured: dict[tuple[str, int], float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-writeback-") as tmp:
        mock = stack.start_mock(
            ["--opportunities", "10", "--cost-sleep", "--dop-hint", str(DOP_HINT)], log_path=f"{tmp}/mock.log"
        )
        try:
            info = mock.info
            cost = mock_call(info, "GET", "/_mock/cost")
            client = stack.dataverse_client(info)
            client.who_am_i()
            hint = client.dop_hint or 1
            t = time.perf_counter()
            seeded = upsert_rows(client, ENTITY_SET, TABLE, _rows(ids, 0), max_parallelism=hint)
            log(f"{a.size} score rows created by {seeded.method} in {time.perf_counter() - t:.1f} s")
            version = 0
            for method in ("UpsertMultiple", "$batch"):
                if method == "$batch":
                    mock_call(info, "POST", "/_mock/messages", {"disable": [f"{TABLE}/UpsertMultiple"]})
                    client.message_cache.clear()
                for dop in (1, hint):
                    version += 1
                    rows = _rows(ids, version)
                    mock_call(info, "POST", "/_mock/stats/reset")
                    t = time.perf_counter()
                    out = upsert_rows(client, ENTITY_SET, TABLE, rows, max_parallelism=dop)
                    seconds = time.perf_counter() - t
                    stats = mock_call(info, "GET", "/_mock/stats")
                    assert out.method == method and not out.failures and not out.transient, out
                    for key, body in rows[:: max(1, a.size // 5)]:  # spot-check what the org holds
                        got = client.get(
                            f"{ENTITY_SET}(msdyn_entityid='{key['msdyn_entityid']}',msdyn_entitytype='opportunity')",
                            params={"$select": "msdyn_score"},
                        )
                        assert got["msdyn_score"] == body["msdyn_score"], (method, dop)
                    measured[(method, dop)] = seconds
                    tag = f"{'upsertmultiple' if method == 'UpsertMultiple' else 'batch'}_dop{dop}"
                    note = (
                        f"{method}, parallelism {dop}: {out.requests} requests of <= 1,000 rows; the mock "
                        f"modelled {stats['modelled_ms'] / 1000:.1f} s of server time; "
                        f"429s {stats['by_status'].get('429', 0)}"
                    )
                    results.append(result(f"{tag}_seconds", seconds, "s", note=note))
                    results.append(result(f"{tag}_requests", out.requests, "requests"))
                    results.append(result(f"{tag}_rows_per_s", a.size / seconds, "rows/s"))
                    log(f"{note}: {seconds:.1f} s")
        finally:
            mock.stop()
    results.append(result("peak_rss_mib", peak_rss_mib(), "MiB"))
    comps = [
        comparison(
            f"rows/s at parallelism {dop}: UpsertMultiple vs $batch",
            a.size / measured[("UpsertMultiple", dop)],
            a.size / measured[("$batch", dop)],
            "rows/s",
        )
        for dop in sorted({1, hint})
    ]
    comps.append(
        comparison(
            "rows/s of UpsertMultiple: parallelism at the hint vs 1",
            a.size / measured[("UpsertMultiple", hint)],
            a.size / measured[("UpsertMultiple", 1)],
            "rows/s",
        )
    )
    notes = [
        f"the mock's cost is a model, not Dataverse's: {cost['request_ms']} ms a request + {cost['operation_ms']} ms "
        f"an operation applied on its own (each $batch part) + {cost['bulk_operation_ms']} ms a bulk target "
        f"(UpsertMultiple applies its targets in one transaction); x-ms-dop-hint {hint}",
        "every row of each run is changed (new score and reasons); the rows exist (created by an untimed first pass)",
    ]
    emit("writeback", {"size": a.size, "dop_hint": hint}, results, comps, notes=notes)


if __name__ == "__main__":
    main()
