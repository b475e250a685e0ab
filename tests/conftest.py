"""Shared fixtures: Azurite on free ports (session), the mock Dataverse in-process (session), app settings
pointing at both, an AppContext with per-test containers, and the local runner over real HTTP."""

from __future__ import annotations

import contextlib
import functools
import json
import ssl
import tempfile
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from local_runner import stack


@pytest.fixture(scope="session")
def azurite() -> Iterator[stack.Azurite]:
    with tempfile.TemporaryDirectory(prefix="azurite-test-") as location:
        az = stack.start_azurite(location)
        try:
            yield az
        finally:
            az.stop()


@pytest.fixture(scope="session")
def mock_server() -> Iterator[Any]:
    """The mock Dataverse, in-process over HTTPS: seed 7, 1,500 opportunities; the solution's web resources
    under /WebResources/."""
    with mock_org(seed=7, opportunities=1500, webresources=stack.WEBRESOURCES) as server:
        yield server


@contextlib.contextmanager
def mock_org(**options: Any) -> Iterator[Any]:
    """A mock Dataverse of its own, in-process over HTTPS on a free port (MockServer's `options`: seed,
    opportunities, ...), stopped however the test ends: for tests that change the org others share."""
    from mock_dataverse.server import MockServer

    server = MockServer(port=0, https=True, **options)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mock_info(mock_server: Any) -> dict[str, Any]:
    return dict(mock_server.info)


def mock_call(info: dict[str, Any], method: str, path: str, body: Any = None) -> Any:
    """Call the mock's control plane (/_mock/...) trusting its own certificate."""
    ctx = ssl.create_default_context(cafile=info["ca_cert"])
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        info["url"] + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, context=ctx, timeout=60) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


@pytest.fixture
def mock(mock_info: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A freshly reset mock org (seeded state, faults off, stats zero) for one test."""
    mock_call(mock_info, "POST", "/_mock/reset")
    yield mock_info
    mock_call(mock_info, "POST", "/_mock/faults", {})


@pytest.fixture
def settings_values(azurite: stack.Azurite, mock_info: dict[str, Any]) -> dict[str, str]:
    """App settings for one test: Azurite + the mock, with containers and queues of its own."""
    return stack.unique_settings(azurite, mock_info)


@pytest.fixture
def app_context(settings_values: dict[str, str]) -> Iterator[Any]:
    """An AppContext on this test's settings, installed as the process-wide one."""
    from functions.app_context import AppContext, set_context
    from functions.settings import load_settings

    ctx = AppContext(load_settings(settings_values))
    set_context(ctx)
    try:
        yield ctx
    finally:
        set_context(None)


@functools.cache
def registry() -> dict[str, Any]:
    """function_app's functions by name (get_functions() may be called once per app)."""
    import function_app

    return {f.get_function_name(): f for f in function_app.app.get_functions()}


@pytest.fixture(scope="session")
def runner(
    azurite: stack.Azurite, mock_info: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[stack.Runner]:
    """The local Functions runner as a real process, serving function_app over HTTP."""
    log = tmp_path_factory.mktemp("runner") / "runner.log"
    settings = stack.app_settings(
        azurite,
        mock_info,
        LAKE_CONTAINER="lake-runner",
        MODEL_CONTAINER="models-runner",
        TRAINING_QUEUE="training-runner",
        SCORING_QUEUE="scoring-runner",
    )
    r = stack.start_runner(settings, log_path=str(log))
    try:
        yield r
    finally:
        r.stop()


@functools.cache
def _otel_providers() -> tuple[Any, Any]:
    """The SDK's in-memory span exporter and metric reader, installed once as the global providers (the API
    allows one provider per process). Until a test asks for them, spans and metrics stay no-ops."""
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    trace.set_tracer_provider(provider)
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    return spans, reader


class Telemetry:
    """What a test recorded: finished spans by name; counters and histogram sums as the change since the test
    began; gauges as their last values."""

    def __init__(self, spans: Any, reader: Any):
        self._spans, self._reader = spans, reader
        self._spans.clear()
        self._base = self._points()

    def spans(self, name: str | None = None) -> list[Any]:
        return [s for s in self._spans.get_finished_spans() if name is None or s.name == name]

    def _points(self) -> dict[tuple[str, tuple[tuple[str, Any], ...]], float]:
        out: dict[tuple[str, tuple[tuple[str, Any], ...]], float] = {}
        data = self._reader.get_metrics_data()
        for rm in data.resource_metrics if data else []:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    for point in metric.data.data_points:
                        value = point.value if hasattr(point, "value") else point.sum
                        out[(metric.name, tuple(sorted(point.attributes.items())))] = float(value)
        return out

    def counted(self, name: str, **attributes: Any) -> float:
        """How much a counter (or a histogram's sum) grew during the test, over points with these attributes."""
        now = self._points()
        return sum(
            value - self._base.get(key, 0.0)
            for key, value in now.items()
            if key[0] == name and set(attributes.items()) <= set(key[1])
        )

    def gauge(self, name: str, **attributes: Any) -> list[float]:
        """The last values of a gauge, one per attribute set matching `attributes`."""
        return [v for (n, attrs), v in self._points().items() if n == name and set(attributes.items()) <= set(attrs)]


@pytest.fixture
def otel() -> Telemetry:
    """Spans and metrics recorded by this test (the SDK's in-memory exporter and metric reader)."""
    return Telemetry(*_otel_providers())
def chromium_path() -> str:
    """The system Chromium (`make deps` installs Debian's `chromium` where none is found): Playwright's own
    browser download is unreachable, so it drives this one through `executable_path`."""
    import os
    import shutil

    for candidate in (os.environ.get("CHROMIUM_PATH"), "chromium", "chromium-browser", "google-chrome"):
        found = candidate and shutil.which(candidate)
        if found:
            return found
    raise RuntimeError("no Chromium found: run `make deps` (apt-get install -y chromium) or set CHROMIUM_PATH")


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless Chromium driven by Playwright, one per session (pages and contexts are per test)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()
