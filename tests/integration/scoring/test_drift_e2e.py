"""Drift alerts over real HTTP through the local runner, against Azurite and a mock org of this module's own
(it is moved forward in time and shifted, which the session's shared mock must not be): sync -> train ->
publish -> score on the org as seeded and after a plain simulation raises no alert; after a simulation
that shifts one segment (new deals mostly Referral, won 90% of the time) the run's report, the model's
view and the log name that attribute. Then accuracy per segment of the version's test records."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from local_runner import stack
from tests.conftest import mock_call, mock_org
from tests.integration.http import call, wait_job

pytestmark = pytest.mark.integration
log = logging.getLogger(__name__)
MODEL = "Drift"
REFERRAL = 100000003
SHIFT = {"attribute": "new_channel", "value": REFERRAL, "winRate": 0.9, "share": 0.9}


@pytest.fixture(scope="module")
def org() -> Iterator[Any]:
    with mock_org(seed=11, opportunities=1500) as server:
        yield server


@pytest.fixture(scope="module")
def runner_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("drift") / "runner.log"


@pytest.fixture(scope="module")
def base(azurite: Any, org: Any, runner_log: Path) -> Iterator[str]:
    settings = stack.unique_settings(azurite, dict(org.info), tag="drift")
    runner = stack.start_runner(settings, log_path=str(runner_log), extra_args=["--no-timers"])
    try:
        yield runner.url
    finally:
        runner.stop()


def _done(base: str, method: str, path: str, body: Any = None) -> dict[str, Any]:
    status, accepted = call(base, method, path, body)
    assert status == 202, accepted
    job = wait_job(base, accepted["job"]["id"])
    assert job["status"] == "succeeded", job
    return job


def _sync_and_score(base: str) -> dict[str, Any]:
    """The drift of the model's published version measured by a new full scoring run."""
    _done(base, "POST", "/api/sync", {})
    report = _done(base, "POST", "/api/score", {})["result"]
    (found,) = [d for d in report["drift"] if d["model"] == MODEL]
    return found


def _psi(found: dict[str, Any], attribute: str) -> float:
    return next(float(a["psi"]) for a in found["population"]["attributes"] if a["attribute"] == attribute)


def test_a_shifted_segment_raises_a_drift_alert_and_a_stable_org_none(base: str, org: Any, runner_log: Path) -> None:
    info = dict(org.info)
    _done(base, "POST", "/api/sync", {"full": True})
    _done(base, "POST", "/api/models", {"name": MODEL})
    status, body = call(base, "POST", f"/api/models/{MODEL}/publish", {})
    assert status == 200, body

    seeded = _sync_and_score(base)
    mock_call(info, "POST", "/_mock/simulate", {"days": 45, "seed": 3})
    plain = _sync_and_score(base)
    moved = mock_call(info, "POST", "/_mock/simulate", {"days": 45, "seed": 4, "shift": SHIFT})
    shifted = _sync_and_score(base)
    org_attributes = [(a["attribute"], a["psi"]) for a in plain["population"]["attributes"] if not a["derived"]]
    log.warning(
        "new_channel PSI: seeded %.3f, plain simulation %.3f, shifted %.3f (score PSI %s / %s / %s); "
        "largest org-attribute PSI after the plain simulation %s; shift report %s; realized after the plain "
        "simulation %s, after the shift %s",
        _psi(seeded, "new_channel"), _psi(plain, "new_channel"), _psi(shifted, "new_channel"),
        seeded["population"]["score"], plain["population"]["score"], shifted["population"]["score"],
        org_attributes[:3], moved["shift"], plain["realized"], shifted["realized"],
    )  # fmt: skip

    for stable in (seeded, plain):
        assert stable["population"]["measured"], stable
        assert not stable["assessment"]["alert"], stable["assessment"]
        assert stable["population"]["drifted"] == [], stable["population"]["attributes"][:5]
    # what the version predicted for deals closed since comes true as on its test records (the plain org)
    assert plain["realized"]["closed"] >= 50 and plain["realized"]["auc"] is not None, plain["realized"]
    assert moved["shift"]["created"] > 20, moved
    assert "new_channel" in shifted["population"]["drifted"], shifted["population"]["attributes"][:5]
    assert _psi(shifted, "new_channel") > 0.25 > _psi(plain, "new_channel")
    assert shifted["assessment"]["alert"] and "new_channel" in shifted["assessment"]["message"]
    assert "retrain" in shifted["assessment"]["message"]
    top = next(a for a in shifted["population"]["attributes"] if a["attribute"] == "new_channel")["topShift"]
    assert top["value"] == "Referral" and top["actual"] > top["expected"], top

    alerts = [line for line in runner_log.read_text().splitlines() if "drift alert" in line]
    assert len(alerts) == 1 and "WARNING" in alerts[0] and shifted["runId"] in alerts[0], alerts
    assert f"model={MODEL}@1: attributes drifted significantly: " in alerts[0] and "new_channel" in alerts[0]

    status, view = call(base, "GET", f"/api/models/{MODEL}")
    assert status == 200, view
    assert view["drift"]["alert"] and "new_channel" in view["drift"]["drifted"], view["drift"]
    assert view["drift"]["runId"] == shifted["runId"]


def test_accuracy_per_segment_of_the_test_records(base: str) -> None:
    status, perf = call(base, "GET", f"/api/models/{MODEL}/performance?segment=new_channel")
    assert status == 200, perf
    found = perf["segments"]
    assert found["available"] and {"owner", "stage", "region", "new_channel"} <= set(found["segments"])
    for rows in found["segments"].values():
        assert sum(r["closed"] for r in rows) == found["records"]
        for r in rows:
            assert r["small"] == (r["closed"] < found["minClosed"] or r["auc"] is None), r
    labels = {r["label"] for r in found["segments"]["new_channel"]}
    assert "Referral" in labels, labels

    status, body = call(base, "GET", f"/api/models/{MODEL}/performance?segment=no_such_column")
    assert status == 400 and body["error"]["code"] == "InvalidSegment", body
    assert "no_such_column" in body["error"]["message"]
