"""A bounded schemathesis run (bench/bench_schemathesis.py) over real HTTP through the local runner, against Azurite and
the mock after a sync and a trained model: no 5xx, every response matching the OpenAPI description
(status, content type, headers, schema), invalid input refused with a 4xx, undeclared methods 405 + Allow."""

from __future__ import annotations

import pytest

from bench import bench_schemathesis as api_fuzz
from bench import fuzzing
from functions import api
from local_runner import stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def target(azurite, mock_info, tmp_path_factory):
    """Set up (full sync, model `M` trained) with a runner that polls its queues, then test a runner that
    does not, so the jobs generated requests start stay queued and the run is bounded."""
    settings = stack.unique_settings(azurite, mock_info, tag="st")
    logs = tmp_path_factory.mktemp("schemathesis")
    with fuzzing.prepared_runner(settings, str(logs)) as (runner, _):
        yield runner, logs


def test_schemathesis_finds_no_5xx_and_no_response_breaking_the_description(target):
    runner, logs = target
    result = api_fuzz.run(runner.url, report_dir=logs, **api_fuzz.TEST_BOUNDS)
    assert result.exit_code == 0, result.output[-6000:]
    # Every described operation but the description itself (schemathesis loads it; test_openapi.py validates it).
    described = {f"{op.method} {op.path}" for op in api.OPERATIONS} - {"GET /api/openapi.json"}
    assert result.labels == described, result.output[-3000:]
    assert result.test_cases >= 200 and result.statuses.get("2xx", 0) >= 30, result.statuses
    assert result.failures == 0 and result.server_errors == 0, result.output[-6000:]
