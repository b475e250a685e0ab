"""The mock's service protection windows and cost model, and OData parameter aliases (no server)."""

from __future__ import annotations

import pytest

from mock_dataverse import protection
from mock_dataverse.errors import DataverseError
from mock_dataverse.odata_params import substitute_aliases
from mock_dataverse.protection import CostModel, ServiceProtection


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(protection.time, "monotonic", c)
    return c


def _refusal(p: ServiceProtection, client: str = "app") -> DataverseError:
    with pytest.raises(DataverseError) as err:
        p.enter(client)
    return err.value


def test_the_request_window_slides(clock: Clock) -> None:
    p = ServiceProtection(requests=2, window_s=300)
    for _ in range(2):
        p.enter("app")
        p.leave("app", 1)
    clock.now += 100
    err = _refusal(p)
    assert err.code == "0x80072322" and err.headers["Retry-After"] == "201"
    p.enter("other")  # per user
    clock.now += 201
    p.enter("app")


def test_execution_time_is_summed_over_the_window_and_expires(clock: Clock) -> None:
    p = ServiceProtection(execution_ms=1000, window_s=300)
    p.enter("app")
    p.leave("app", 1200)
    err = _refusal(p)
    assert err.code == "0x80072321" and "1,000 milliseconds" in err.message
    clock.now += 301
    p.enter("app")


def test_concurrency_counts_requests_in_flight() -> None:
    p = ServiceProtection(concurrent=2)
    p.enter("app")
    p.enter("app")
    assert _refusal(p).code == "0x80072326"
    p.leave("app", 1)
    p.enter("app")


def test_cost_model_charges_bulk_targets_less_than_single_operations() -> None:
    cost = CostModel()
    assert cost.cost_ms(1000, 0, 0) == pytest.approx(1002)
    assert cost.cost_ms(0, 1000, 0) == pytest.approx(252)
    cost.update({"request_ms": 0, "sleep": True})
    assert cost.sleep and cost.cost_ms(0, 0, 0) == 0


def test_parameter_aliases() -> None:
    q = {"@m": "'CreateMultiple'", "@t": "'account'"}
    assert substitute_aliases("name eq @m and code eq @t", q) == "name eq 'CreateMultiple' and code eq 'account'"
    assert substitute_aliases("name eq 'me@m.com'", {}) == "name eq 'me@m.com'", "not inside a string"
    assert substitute_aliases(None, q) is None
    with pytest.raises(DataverseError, match="@x"):
        substitute_aliases("name eq @x", q)
