"""Traces and metrics through the OpenTelemetry API, and their export to Application Insights.

Modules record spans and metrics here whatever the configuration: until a provider is installed, the API's
proxies make them no-ops, so importing this costs only the API (about 50 ms) and a run without
`APPLICATIONINSIGHTS_CONNECTION_STRING` exports nothing. `configure_azure_monitor_once` installs the Azure
Monitor distro's providers, at most once per process and never where the Python worker configured them itself.

Attributes carry ids, counts, statuses and names (`model`, `dataverse.table`); never record bodies, tokens or
secrets.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.trace import Span, SpanKind

log = logging.getLogger(__name__)

T = TypeVar("T")
NAME = "predictive_scoring"
tracer = trace.get_tracer(NAME)
_meter = metrics.get_meter(NAME)

ROWS_SYNCED = _meter.create_counter("sync.rows", unit="{row}", description="rows a sync read from Dataverse")
OPPORTUNITIES_SCORED = _meter.create_counter("scoring.opportunities", unit="{opportunity}", description="scored")
ROWS_WRITTEN = _meter.create_counter("dataverse.rows_written", unit="{row}", description="score rows written")
WRITE_REQUESTS = _meter.create_counter("dataverse.write_requests", unit="{request}", description="write requests")
THROTTLED = _meter.create_counter("dataverse.throttled", unit="{response}", description="429 answers")
RETRY_AFTER = _meter.create_histogram("dataverse.retry_after", unit="s", description="waits a 429 asked for")
TRAINING_DURATION = _meter.create_histogram("training.duration", unit="s", description="one training, end to end")
MODEL_AUC = _meter.create_gauge("model.auc", description="test AUC of the version published")
QUOTA_USED = _meter.create_gauge("scoring.quota_used", unit="{record}", description="records scored this month")

_configured = False
_lock = threading.Lock()


def _clean(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attributes.items() if isinstance(v, (str, bool, int, float))}


@contextmanager
def span(name: str, **attributes: Any) -> Iterator[Span]:
    """An internal span around a run or a batch; an exception is recorded on it and re-raised."""
    with tracer.start_as_current_span(name, attributes=_clean(attributes)) as current:
        yield current


def traced(name: str) -> Any:
    """Decorate a function so each call is a span `name` (exceptions recorded); `annotate` adds attributes."""
    return tracer.start_as_current_span(name)


def in_this_context(fn: Callable[..., T]) -> Callable[..., T]:
    """`fn` bound to the caller's trace context, for a worker thread: its spans stay children of the caller's."""
    captured = otel_context.get_current()

    def run(*args: Any, **kwargs: Any) -> T:
        token = otel_context.attach(captured)
        try:
            return fn(*args, **kwargs)
        finally:
            otel_context.detach(token)

    return run


def annotate(**attributes: Any) -> None:
    """Set attributes (ids, counts, names) on the current span."""
    trace.get_current_span().set_attributes(_clean(attributes))


class DataverseCall:
    """What one Dataverse call (all its retries) ends with, set on its span by `dataverse_call`."""

    def __init__(self) -> None:
        self.status: int | None = None
        self.request_id: str | None = None

    def answered(self, status: int, request_id: str | None) -> None:
        self.status, self.request_id = status, request_id


@contextmanager
def dataverse_call(method: str, table: str, stats: Mapping[str, Any]) -> Iterator[DataverseCall]:
    """One client span per Dataverse call: method, table, final status, retries and request id, read from the
    client's `stats` counters before and after; 429s and their Retry-After waits go to the metrics too."""
    retries, throttled, waits = stats["retries"], stats["throttled"], len(stats["retry_after_waits"])
    call = DataverseCall()
    attributes = {"http.request.method": method, "dataverse.table": table}
    with tracer.start_as_current_span(f"dataverse {method} {table}", kind=SpanKind.CLIENT, attributes=attributes) as s:
        try:
            yield call
        except Exception as exc:
            status = getattr(exc, "status", None)
            call.answered(status if isinstance(status, int) else 0, getattr(exc, "request_id", None))
            raise
        finally:
            s.set_attribute("dataverse.retries", int(stats["retries"]) - retries)
            if call.status:
                s.set_attribute("http.response.status_code", call.status)
            if call.request_id:
                s.set_attribute("dataverse.request_id", str(call.request_id))
            new_429 = int(stats["throttled"]) - throttled
            if new_429:
                s.set_attribute("dataverse.throttled", new_429)
                THROTTLED.add(new_429, {"dataverse.table": table})
                for wait in list(stats["retry_after_waits"])[waits:]:
                    RETRY_AFTER.record(float(wait), {"dataverse.table": table})


def configure_azure_monitor_once(
    connection_string: str | None,
    *,
    sampling_ratio: float,
    worker_configures: bool,
    configure: Callable[..., Any] | None = None,
) -> bool:
    """Export to Application Insights when a connection string is set: once per process, not when the worker
    configures Azure Monitor itself (`PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY`), not over a tracer provider
    someone else installed. `sampling_ratio` is a fixed share of traces (1.0: all), so a burst keeps its share
    instead of being cut at the distro's default of 5 traces a second. Returns whether it configured now."""
    global _configured
    if not connection_string or worker_configures:
        return False
    with _lock:
        if _configured:
            return False
        _configured = True
        if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            log.info("telemetry: a tracer provider is installed already; Azure Monitor not configured again")
            return False
        if configure is None:
            from azure.monitor.opentelemetry import configure_azure_monitor

            configure = configure_azure_monitor
        # With local auth off, the exporter signs in as the identity APPLICATIONINSIGHTS_AUTHENTICATION_STRING names.
        configure(connection_string=connection_string, sampling_ratio=sampling_ratio)
        log.info("telemetry: Azure Monitor configured (sampling ratio %.2f)", sampling_ratio)
        return True

