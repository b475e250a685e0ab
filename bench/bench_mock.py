"""Mock Dataverse benchmarks: start-up with 100k seeded opportunities, a 5,000-row page over HTTPS,
200k opportunities held in memory. Prints one JSON object on stdout.

    .venv/bin/python bench/bench_mock.py [--startup 100000] [--memory 200000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import requests  # noqa: E402

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
    return {"rows": n, "best_s": round(min(times), 3), "median_s": round(sorted(times)[len(times) // 2], 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--startup", type=int, default=100_000)
    ap.add_argument("--memory", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    out: dict[str, object] = {}

    t = time.perf_counter()
    srv = MockServer(seed=7, opportunities=a.startup, now="2026-11-26T00:00:00Z")
    info = srv.start()
    out["startup"] = {"opportunities": a.startup, "seconds": round(time.perf_counter() - t, 2), "goal_s": 20}
    s = _client(info)
    api = info["api"]
    out["page_5000_all_columns"] = _page(s, api + "opportunities", "odata.maxpagesize=5000", a.repeat)
    out["page_5000_annotations"] = _page(
        s, api + "opportunities", 'odata.maxpagesize=5000,odata.include-annotations="*"', a.repeat
    )
    out["page_5000_filtered_select"] = _page(
        s,
        api + "opportunities?$select=name,statecode,estimatedvalue,_parentaccountid_value"
        "&$filter=statecode eq 1 or estimatedvalue gt 10000&$orderby=createdon desc",
        "odata.maxpagesize=5000",
        a.repeat,
    )
    # the next page reuses the cursor: no re-evaluation
    first = s.get(api + "opportunities?$select=name", headers={"Prefer": "odata.maxpagesize=5000"}).json()
    out["page_5000_next_link"] = _page(s, first["@odata.nextLink"], "odata.maxpagesize=5000", a.repeat)
    srv.stop()
    del srv
    gc.collect()

    t = time.perf_counter()
    big = MockServer(seed=11, opportunities=a.memory, now="2026-11-26T00:00:00Z")
    held = len(big.org.rows("opportunity"))
    out["memory"] = {
        "opportunities": held,
        "build_s": round(time.perf_counter() - t, 2),
        "max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    out["goals"] = {"page_5000_s": 0.5, "startup_100k_s": 20, "memory_opportunities": 200_000}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
