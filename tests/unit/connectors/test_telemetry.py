"""connectors/telemetry.py with the OpenTelemetry SDK's in-memory exporter and metric reader: the span of every
Dataverse call (method, table, status, retries, request id; never the token or a body), the 429 metrics, and
Azure Monitor configured once, never with the worker's own setup, with a sampler that keeps bursts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from connectors.dataverse import DataverseNotFound
from tests.unit.connectors.test_dataverse_client import client, err, resp

ROOT = Path(__file__).resolve().parents[3]


def test_a_dataverse_call_is_one_client_span_with_its_retries_and_request_id(otel):
    script = [
        err(429, "0x80072322", "throttled", **{"Retry-After": "2"}),
        resp(200, {"value": [{"name": "secret deal"}]}, {"x-ms-service-request-id": "rq-ok"}),
    ]
    c, _, waits, _ = client(script)
    c.get("opportunities", params={"$select": "name"})
    [span] = otel.spans("dataverse GET opportunities")
    assert span.kind == SpanKind.CLIENT
    attrs = dict(span.attributes)
    assert attrs == {
        "http.request.method": "GET",
        "dataverse.table": "opportunities",
        "dataverse.retries": 1,
        "http.response.status_code": 200,
        "dataverse.request_id": "rq-ok",
        "dataverse.throttled": 1,
    }
    assert waits == [2.0]
    assert otel.counted("dataverse.throttled", **{"dataverse.table": "opportunities"}) == 1
    assert otel.counted("dataverse.retry_after", **{"dataverse.table": "opportunities"}) == 2.0
    shown = json.dumps(attrs) + span.name
    assert "tok" not in shown and "secret deal" not in shown  # neither the bearer token nor a body


def test_a_failed_call_records_its_status_and_the_error(otel):
    c, _, _, _ = client([err(404, "0x80040217", "no such record")])
    with pytest.raises(DataverseNotFound):
        c.get("opportunities(00000000-0000-0000-0000-000000000001)")
    [span] = otel.spans("dataverse GET opportunities")
    assert span.attributes["http.response.status_code"] == 404
    assert span.attributes["dataverse.request_id"] == "rq-1" and span.attributes["dataverse.retries"] == 0
    assert span.status.status_code == StatusCode.ERROR
    assert [e.name for e in span.events] == ["exception"]


CONFIGURE_ONCE = """
import json, sys
from opentelemetry import trace
from connectors import telemetry
calls = []
fake = lambda **kw: calls.append(kw)
out = [
    telemetry.configure_azure_monitor_once(None, sampling_ratio=1.0, worker_configures=False, configure=fake),
    telemetry.configure_azure_monitor_once("InstrumentationKey=x", sampling_ratio=1.0, worker_configures=True,
                                           configure=fake),
    telemetry.configure_azure_monitor_once("InstrumentationKey=x", sampling_ratio=0.5, worker_configures=False,
                                           configure=fake),
    telemetry.configure_azure_monitor_once("InstrumentationKey=x", sampling_ratio=0.5, worker_configures=False,
                                           configure=fake),
]
print(json.dumps({"returned": out, "calls": calls}))
"""

REAL_DISTRO = """
import json
from opentelemetry import trace
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace import SpanKind
from connectors import telemetry
configured = telemetry.configure_azure_monitor_once(
    "InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=http://127.0.0.1:9/",
    sampling_ratio=1.0, worker_configures=False)
provider = trace.get_tracer_provider()
sampler = provider.sampler
decisions = [sampler.should_sample(None, trace_id, "scoring.batch", SpanKind.INTERNAL).decision
             for trace_id in range(1, 2001)]
print(json.dumps({"configured": configured, "sampler": type(sampler).__name__,
                  "sampled": sum(d == Decision.RECORD_AND_SAMPLE for d in decisions)}))
import os; os._exit(0)  # do not wait for the exporter's shutdown flush to an endpoint that does not exist
"""


def _child(code: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_azure_monitor_is_configured_once_and_never_over_the_workers_setup():
    out = _child(CONFIGURE_ONCE)
    assert out["returned"] == [False, False, True, False]
    assert out["calls"] == [{"connection_string": "InstrumentationKey=x", "sampling_ratio": 0.5}]


def test_the_distros_sampler_keeps_a_burst_whole():
    """2,000 traces at once all sampled: a fixed ratio of 1.0, not the default limit of 5 traces a second."""
    out = _child(REAL_DISTRO)
    assert out == {"configured": True, "sampler": "ApplicationInsightsSampler", "sampled": 2000}


def test_importing_the_app_does_not_load_the_exporter():
    out = _child("import json, sys, function_app\nprint(json.dumps(sorted(m for m in sys.modules if m.startswith("
                 "('azure.monitor', 'opentelemetry.sdk')))))")
    assert out == []
