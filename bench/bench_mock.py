"""Mock Dataverse benchmarks: start-up with 100k seeded opportunities, a 5,000-row page over HTTPS,
2 x size opportunities held in memory. Prints one JSON object on stdout (docs/CONTRACTS.md "Benchmarks").

    .venv/bin/python -m bench.bench_mock --size 100000 [--reps 5]
"""

from __future__ import annotations

import gc
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import requests  # noqa: E402

from bench.common import emit, peak_rss_mib, result, size_arg_parser  # noqa: E402
from mock_dataverse.server import MockServer  # noqa: E402


def _client(info: dict[str, str]) -> requests.Session:
    import msal

    s = requests.Session()
    s.trust_env = False
    s.verify = info["ca_cert"]
    app = msal.ConfidentialClientApplication(
        info["client_id"],
        client_credential=info["client_secret"],
        authority=info["authority"],
        instance_discovery=False,
        http_client=s,
    )
    tok = app.acquire_token_for_client(scopes=[info["resource"] + "/.default"])
    s.headers["Authorization"] = "Bearer " + tok["access_token"]
    return s


def _page(s: requests.Session, url: str, prefer: str, repeat: int) -> dict[str, float]:
    times = []
    n = 0
    for _ in range(repeat):
        t = time.perf_counter()
        r = s.get(url, headers={"Prefer": prefer})
        r.raise_for_status()
        n = len(r.json()["value"])
        times.append(time.perf_counter() - t)
    return {"rows": n, "best_s": min(times), "max_s": max(times), "median_s": sorted(times)[len(times) // 2]}


QUICK_SIZES = [10_000]
FULL_SIZES = [100_000]


def main(argv: list[str] | None = None) -> None:
    a = size_arg_parser(__doc__.split("\n\n")[0], default_size=FULL_SIZES[0]).parse_args(argv)
    results = []

    t = time.perf_counter()
    srv = MockServer(seed=7, opportunities=a.size, now="2026-11-26T00:00:00Z")
    info = srv.start()
    results.append(
        result(
            f"start-up with {a.size:,} seeded opportunities",
            time.perf_counter() - t,
            "s",
            note="goal < 20 s at 100,000",
        )
    )
    s = _client(info)
    api = info["api"]
    pages = {
        "5,000-row page, all columns": (api + "opportunities", "odata.maxpagesize=5000"),
        "5,000-row page, all annotations": (
            api + "opportunities",
            'odata.maxpagesize=5000,odata.include-annotations="*"',
        ),
        "5,000-row page, $filter + $orderby + $select": (
            api + "opportunities?$select=name,statecode,estimatedvalue,_parentaccountid_value"
            "&$filter=statecode eq 1 or estimatedvalue gt 10000&$orderby=createdon desc",
            "odata.maxpagesize=5000",
        ),
    }
    first = s.get(api + "opportunities?$select=name", headers={"Prefer": "odata.maxpagesize=5000"}).json()
    pages["5,000-row next page (@odata.nextLink)"] = (first["@odata.nextLink"], "odata.maxpagesize=5000")
    for label, (url, prefer) in pages.items():
        timing = _page(s, url, prefer, max(a.reps, 3))
        results.append(
            result(
                label,
                timing["median_s"],
                "s",
                reps=max(a.reps, 3),
                spread=timing["max_s"] - timing["best_s"],
                note="goal < 0.5 s",
            )
        )
    srv.stop()
    del srv
    gc.collect()

    t = time.perf_counter()
    big = MockServer(seed=11, opportunities=2 * a.size, now="2026-11-26T00:00:00Z")
    held = len(big.org.rows("opportunity"))
    results.append(result(f"{held:,} opportunities held in memory: build time", time.perf_counter() - t, "s"))
    results.append(result("peak memory of the mock process", peak_rss_mib(), "MiB"))
    emit("bench_mock", {"size": a.size, "reps": a.reps}, results)


if __name__ == "__main__":
    main()
