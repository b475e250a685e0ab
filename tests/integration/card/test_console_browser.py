"""The admin console in headless Chromium, served by the function app through the local runner (real HTTP,
Azurite, the mock over HTTPS), walking an admin's path: add a model with an invalid field, then one that
overlaps an existing model (the warning, then "Yes, create model"), wait for its training, read its
performance and insights, publish it, score, and open an opportunity's card to see its score; run a
backtest from the model's page and read its months.

Expectations come from the API itself. The tests write docs/screenshots/console-*.png."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from functions.app_context import AppContext
from functions.settings import load_settings
from modeling.config import ModelConfig
from solution import package
from tests.integration.card.browser import braced_upper, shot
from tests.integration.http import call, synced_runner, wait_job

pytestmark = pytest.mark.integration

QUOTA = 100_000  # a monthly limit, so the quota counts what is scored (the Activity page shows it)
NAME = "Console_Walk"


@pytest.fixture(scope="module")
def app(azurite: Any, mock_info: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The local runner on containers of its own, the seeded org synced into its lake, and one existing
    model (a configuration, not trained) for the new one to overlap."""
    log = tmp_path_factory.mktemp("console") / "runner.log"
    with synced_runner(azurite, mock_info, log, tag="console", MONTHLY_SCORING_QUOTA=str(QUOTA)) as (url, settings):
        existing = ModelConfig(name="Existing_All").to_json()
        AppContext(load_settings(settings)).model_store.create_config("Existing_All", existing)
        yield url


@pytest.fixture
def console(browser: Any, app: str) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1200, "height": 1400})
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


def test_console_files_are_static_and_bad_paths_are_404(app: str) -> None:
    with urllib.request.urlopen(app + "/api/console") as resp:
        assert resp.headers["Content-Type"].startswith("text/html")
        assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
        assert resp.read() == (package.ROOT.parent / "console" / "index.html").read_bytes()
    for bad in ("nope.js", "..%2Fpyproject.toml", "Console.JS", "index.html.bak", "a/b.js"):
        status, body = call(app, "GET", "/api/console/" + bad)
        assert status == 404 and body["error"]["code"] == "RouteNotFound", bad
    assert call(app, "POST", "/api/console")[0] == 405


def test_an_admin_adds_trains_inspects_publishes_and_sees_the_card(
    console: Any, app: str, open_card: Any, mock_server: Any
) -> None:
    page = console
    page.goto(app + "/api/console")
    page.locator("#models tr[data-model='Existing_All']").wait_for()
    shot(page.locator("body"), "console-models.png")

    page.locator("#add-model").click()
    name = page.locator("#f-name")
    assert name.input_value().startswith("OpportunityScoring_")  # the documented default, UTC stamp
    name.fill("has space")
    page.locator("#create").click()
    error = page.locator("#err-name")
    error.wait_for()
    assert "letters, digits" in error.inner_text().lower() and name.get_attribute("aria-invalid") == "true"
    shot(page.locator("main"), "console-add-invalid.png")

    name.fill(NAME)
    page.locator("#create").click()
    overlap = page.locator("#overlap")
    overlap.wait_for()
    assert "Existing_All" in overlap.inner_text() and error.inner_text() == ""
    shot(page.locator("main"), "console-add-overlap.png")
    page.locator("#create-anyway").click()

    try:
        page.locator("#model-status .status", has_text="ready").wait_for(timeout=240_000)
    except Exception:  # noqa: BLE001 - re-raised; what the admin saw helps the diagnosis
        print("page:", page.locator("body").inner_text(), "\nmodels:", call(app, "GET", "/api/models"))
        raise
    assert "created" in page.locator("#notice").inner_text()
    _, perf = call(app, "GET", f"/api/models/{NAME}/performance")
    page.locator("#m-auc").wait_for()
    assert page.locator("#m-auc").inner_text() == f"{perf['metrics']['auc']:.3f}"
    assert page.locator("#confusion tbody td").all_inner_texts()[0] == str(perf["metrics"]["confusion_matrix"]["tp"])
    assert page.locator("#reliability circle").count() == sum(1 for b in perf["metrics"]["calibration"] if b["count"])
    roc_line = page.locator("#roc polyline").get_attribute("points") or ""
    assert len(roc_line.split()) == len(perf["metrics"]["roc"]) == 21
    marked = int(page.locator("#roc circle").get_attribute("data-threshold") or -1)
    assert abs(marked - perf["metrics"]["threshold"]) <= 2  # the cut nearest the chosen threshold
    _, ins = call(app, "GET", f"/api/models/{NAME}/insights")
    page.locator("#top-attributes li").first.wait_for()
    assert page.locator("#top-attributes li").all_inner_texts() == [t["sentence"] for t in ins["topAttributes"]]
    assert "Contract Number" in page.locator("#excluded").inner_text()  # the planted leak, with its reasons
    shot(page.locator("main"), "console-model.png")

    page.locator("#versions tr[data-version='1'] button.publish").click()
    page.locator("#model-status .published", has_text="1").wait_for()
    assert call(app, "GET", f"/api/models/{NAME}")[1]["publishedVersion"] == 1

    status, accepted = call(app, "POST", "/api/score", {})
    assert status == 202, accepted
    run = wait_job(app, accepted["job"]["id"])
    assert run["status"] == "succeeded"
    page.locator("#nav-activity").click()
    page.locator(f"#runs tr[data-run='{run['id']}'] .run-status", has_text="succeeded").wait_for()
    scored = int(page.locator(f"#runs tr[data-run='{run['id']}'] .scored").inner_text())
    assert scored == run["result"]["scored"] > 0
    assert page.locator("#usage-now").inner_text().startswith(f"{scored} records scored in ")
    assert f"of a monthly limit of {QUOTA}" in page.locator("#usage-now").inner_text()
    assert "finished" in page.locator("#last-sync").inner_text()
    shot(page.locator("main"), "console-activity.png")
    row = max(mock_server.org.rows("msdyn_predictivescore"), key=lambda r: r["msdyn_score"])
    _, card = open_card(braced_upper(row["msdyn_entityid"]))
    assert card.locator("#score").inner_text() == str(row["msdyn_score"])
    assert json.loads(row["msdyn_scorereasons"])["model"] == NAME

    # the About data the packaging script would put in the zip comes from this app's API
    about = package.about_document(package.app_getter(app, None))
    assert set(about["models"]) == {NAME} and about["models"][NAME]["version"] == 1
    sentences = [t["sentence"] for t in ins["topAttributes"]]
    assert [t["sentence"] for t in about["models"][NAME]["topAttributes"]] == sentences


def test_grade_ranges_editor_shows_the_api_rule_and_saves(console: Any, app: str) -> None:
    page = console
    page.goto(app + f"/api/console#/model/{NAME}")
    page.locator("#min-A").wait_for()
    page.locator("#min-A").fill("40")  # below B's minimum: not contiguous
    page.locator("#save-ranges").click()
    page.locator("#err-gradeRanges:not(:empty)").wait_for()
    assert page.locator("#err-gradeRanges").inner_text()
    page.locator("#min-A").fill("80")
    page.locator("#save-ranges").click()
    page.locator("#notice", has_text="Grade ranges saved").wait_for()
    assert call(app, "GET", f"/api/models/{NAME}")[1]["configuration"]["gradeRanges"]["A"] == {"min": 80, "max": 100}


def test_insufficient_data_shows_the_counts(console: Any, app: str) -> None:
    page = console
    page.goto(app + "/api/console#/add")
    page.locator("#f-name").fill("Too_Few")
    page.locator("#f-filterColumn").fill("name")
    page.locator("#f-filterValues").fill("no such opportunity name")
    page.locator("#create").click()
    page.locator("#create-anyway").click()  # it overlaps the unfiltered models; the data check comes next
    panel = page.locator("#insufficient")
    panel.wait_for()
    assert panel.locator("td.found").all_inner_texts() == ["0", "0"]
    assert "40" in panel.inner_text()


def test_a_backtest_runs_from_the_model_page_and_shows_its_months(console: Any, app: str) -> None:
    page = console
    page.goto(app + f"/api/console#/model/{NAME}")
    page.locator("#backtest-status", has_text="No backtest yet").wait_for()
    page.locator("#backtest-months").fill("3")
    page.locator("#run-backtest").click()
    page.locator("#backtest-status", has_text="running").wait_for()
    assert page.locator("#run-backtest").is_disabled()
    page.locator("#backtest-table tbody tr").nth(2).wait_for(timeout=240_000)
    status, report = call(app, "GET", f"/api/models/{NAME}/backtest")
    assert status == 200 and len(report["months"]) == 3
    rows = page.locator("#backtest-table tbody tr")
    assert [rows.nth(i).get_attribute("data-month") for i in range(3)] == report["cutDates"]
    for i, month in enumerate(report["months"]):
        assert month["status"] == "evaluated", month
        row = rows.nth(i)
        assert row.locator(".auc").inner_text() == f"{month['auc']:.3f}"
        assert row.locator(".ece").inner_text() == f"{month['ece']:.3f}"
        assert row.locator(".won-rate").inner_text() == f"{month['wonRate'] * 100:.1f}%"
        assert row.locator(".lift").inner_text() == f"{month['topDecileLift']:.2f}"
    assert page.locator("#backtest-table tfoot td").nth(2).inner_text() == f"{report['summary']['medianAuc']:.3f}"
    assert page.locator("#run-backtest").is_enabled()
    shot(page.locator("#backtest"), "console-backtest.png")


def test_versions_retrain_revert_and_delete_follow_the_rules(console: Any, app: str) -> None:
    page = console
    page.on("dialog", lambda dialog: dialog.accept())  # "Delete model ...?"
    page.goto(app + f"/api/console#/model/{NAME}")
    page.locator("#retrain").click()
    page.locator("#versions tr[data-version='2']").wait_for(timeout=240_000)
    page.locator("#model-status .status", has_text="ready").wait_for(timeout=240_000)
    view = call(app, "GET", f"/api/models/{NAME}")[1]
    assert view["publishedVersion"] == 1 and view["canRevert"], view  # a manual retrain waits to be published
    assert page.locator("#versions tr[data-version='2'] button.publish").is_enabled()
    page.locator("#revert").click()
    page.locator("#versions tr[data-version='2']", has_text="Reverted").wait_for()
    assert page.locator("#revert").is_disabled()
    page.locator("#delete").click()  # auto-retrain is on: the API refuses, the console says why
    page.locator("#notice.bad").wait_for()
    assert "(AutoRetrainOn)" in page.locator("#notice").inner_text()
    page.locator("#auto-retrain").click()
    page.locator("#auto-retrain", has_text="Turn auto-retrain on").wait_for()
    page.locator("#delete").click()
    page.locator("#models").wait_for()
    assert page.locator(f"#models tr[data-model='{NAME}']").count() == 0
    assert call(app, "GET", f"/api/models/{NAME}")[0] == 404
