"""The HTTP fuzzer (bench/fuzzing.py) at benchmark size: N seeded requests over real HTTP through the local
runner against Azurite and the mock Dataverse (seed 7, 1,500 opportunities), after a full sync and the
training of one model `M`. Counts every status, every 5xx and every 4xx without a JSON error body, then
checks the stack still answers health. Prints one JSON line (docs/CONTRACTS.md "Benchmarks").

    .venv/bin/python -m bench.bench_fuzz --size 5000 [--seed 0]
"""

from __future__ import annotations

import json
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import fuzzing  # noqa: E402
from bench.common import emit, log, result, size_arg_parser  # noqa: E402
from local_runner import stack  # noqa: E402

QUICK_SIZES = [1000]
FULL_SIZES = [5000]


def main(argv: list[str] | None = None) -> int:
    a = size_arg_parser(__doc__.split("\n\n")[0], default_size=FULL_SIZES[0]).parse_args(argv)
    import function_app
    from mock_dataverse.server import MockServer

    routes = fuzzing.http_routes(function_app.app.get_functions())
    with tempfile.TemporaryDirectory(prefix="bench-fuzz-") as tmp:
        azurite = stack.start_azurite(tmp)
        mock = MockServer(seed=7, opportunities=1500, port=0, https=True)
        mock.start()
        try:
            settings = stack.unique_settings(azurite, dict(mock.info), tag="fz")
            with fuzzing.prepared_runner(settings, tmp) as (target, known):
                report = fuzzing.run(target.url, routes, requests=a.size, seed=a.seed, known=known)
                with urllib.request.urlopen(target.url + "/api/health", timeout=30) as resp:
                    health = json.loads(resp.read())["status"]
        finally:
            mock.stop()
            azurite.stop()
    for failure in report.failures[:50]:
        log("FAILURE " + failure)
    statuses = dict(sorted(report.statuses.items()))
    slowest = sorted(report.route_seconds.items(), key=lambda kv: -kv[1])[:3]
    emit(
        "fuzz",
        {"size": a.size, "seed": a.seed},
        [
            result("requests", report.requests, "requests", note=f"seed {a.seed}"),
            result(
                "routes",
                len({r.template for r in routes} & set(report.routes)),
                "routes",
                note=f"of {len({r.template for r in routes})} route templates ({len(routes)} HTTP functions), "
                f"plus {report.routes.get('(raw framing)', 0)} requests of raw broken framing",
            ),
            result(
                "server_errors_5xx", len(report.server_errors), "responses", note="goal 0 (dropped connections count)"
            ),
            result("non_json_4xx", len(report.non_json_errors), "responses", note="goal 0"),
            result("seconds", report.seconds, "s", note=f"{report.requests / max(report.seconds, 1e-9):.0f} req/s"),
        ],
        notes=[
            "statuses seen: " + ", ".join(f"{k}: {v}" for k, v in statuses.items()),
            f"health after the run: {health}",
            "slowest routes (total s): " + ", ".join(f"{k} {v:.1f}" for k, v in slowest),
        ],
    )
    return 1 if report.failures or health != "ok" else 0


if __name__ == "__main__":
    raise SystemExit(main())
