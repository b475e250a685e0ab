"""A seeded sample of the fuzzer (bench/fuzzing.py) over real HTTP through the local runner against Azurite and
the mock: no 5xx, every 4xx a JSON error, and the stack answers health afterwards. The benchmark run
(`python -m bench.bench_fuzz --size 5000`) sends the same kind of requests, more of them."""

from __future__ import annotations

import json
import urllib.request

import pytest

from bench import fuzzing
from local_runner import stack
from tests.conftest import registry

pytestmark = pytest.mark.integration

REQUESTS = 400
SEED = 12


@pytest.fixture(scope="module")
def fuzz_target(azurite, mock_info, tmp_path_factory):
    """Set up (full sync, model `M` trained) with a runner that polls its queues, then fuzz a runner that
    does not, so the jobs fuzzed requests start stay queued and the run is bounded."""
    settings = stack.unique_settings(azurite, mock_info, tag="fz")
    with fuzzing.prepared_runner(settings, str(tmp_path_factory.mktemp("fuzz"))) as (target, known):
        yield target, known


def test_a_fuzzed_sample_finds_no_5xx_and_only_json_errors(fuzz_target):
    target, known = fuzz_target
    routes = fuzzing.http_routes(registry().values())
    report = fuzzing.run(target.url, routes, requests=REQUESTS, seed=SEED, known=known)
    assert not report.failures, "\n".join(report.failures[:20])
    assert report.requests == REQUESTS
    assert set(report.routes) >= {r.template for r in routes}, report.routes  # every route was tried
    assert {400, 404, 405, 415} <= set(report.statuses), report.statuses
    with urllib.request.urlopen(target.url + "/api/health", timeout=30) as resp:
        health = json.loads(resp.read())
    assert health["status"] == "ok", health
