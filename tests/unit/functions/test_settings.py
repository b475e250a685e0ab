import pytest

from functions.settings import SettingsError, load_settings

BASE = {
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
    "DATAVERSE_URL": "https://org.crm.dynamics.com",
    "DATAVERSE_TENANT_ID": "t1",
    "DATAVERSE_CLIENT_ID": "c1",
    "DATAVERSE_CLIENT_SECRET": "s1",
}


def test_defaults_from_minimal_settings():
    s = load_settings(BASE)
    assert s.lake_container == "lake"
    assert s.scope == "https://org.crm.dynamics.com/.default"
    assert s.authority == "https://login.microsoftonline.com/t1"
    assert s.license_tier == "premium" and s.monthly_quota is None
    assert s.sync_schedule.count(" ") == 5


@pytest.mark.parametrize("missing", sorted(BASE))
def test_missing_setting_is_named(missing):
    env = {k: v for k, v in BASE.items() if k != missing}
    with pytest.raises(SettingsError) as err:
        load_settings(env)
    assert missing in str(err.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SYNC_SCHEDULE", "*/5 * * * *"),
        ("LICENSE_TIER", "gold"),
        ("DATAVERSE_URL", "ftp://x"),
        ("READINESS_AUC_READY", "high"),
        ("MONTHLY_SCORING_QUOTA", "-3"),
        ("ORG_STATUS", "paused"),
        ("DATAVERSE_CA_BUNDLE", "/no/such/file.pem"),
        ("DATAVERSE_USE_MANAGED_IDENTITY", "maybe"),
        ("TRAINING_THREADS", "0"),
        ("TRAINING_THREADS", "many"),
        ("SCORING_BATCH_SIZE", "\u00b2"),  # isdigit() took it, int() did not
        ("MONTHLY_SCORING_QUOTA", "\u00b2"),
        ("JOB_STALE_SECONDS", "9" * 5000),
    ],
)
def test_malformed_setting_is_named(name, value):
    with pytest.raises(SettingsError) as err:
        load_settings({**BASE, name: value})
    assert name in str(err.value)


def test_enterprise_tier_has_the_dynamics_quota():
    assert load_settings({**BASE, "LICENSE_TIER": "enterprise"}).monthly_quota == 1500
    assert load_settings({**BASE, "LICENSE_TIER": "enterprise", "MONTHLY_SCORING_QUOTA": "10"}).monthly_quota == 10


def test_all_problems_reported_at_once():
    with pytest.raises(SettingsError) as err:
        load_settings({"LICENSE_TIER": "gold"})
    assert len(err.value.problems) >= 5


def test_settings_are_frozen():
    s = load_settings(BASE)
    with pytest.raises(AttributeError):
        s.lake_container = "x"  # type: ignore[misc]


def test_example_settings_file_lists_every_setting_read():
    import json
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    source = (root / "functions" / "settings.py").read_text()
    read = set(re.findall(r'(?:get|schedule|number|flag)\("([A-Za-z_]+)"', source))
    example = json.loads((root / "local.settings.example.json").read_text())["Values"]
    assert read - set(example) == set()



def test_job_stale_seconds_is_bounded() -> None:
    from tests.unit.fakes import UNIT_ENV

    assert load_settings(UNIT_ENV).job_stale_seconds == 20
    assert load_settings({**UNIT_ENV, "JOB_STALE_SECONDS": "40"}).job_stale_seconds == 40
    with pytest.raises(SettingsError, match="JOB_STALE_SECONDS"):
        load_settings({**UNIT_ENV, "JOB_STALE_SECONDS": "5"})


def test_storage_by_managed_identity_has_no_key():
    env = {k: v for k, v in BASE.items() if k != "AzureWebJobsStorage"}
    s = load_settings({**env, "AzureWebJobsStorage__accountName": "stscoring01", "AzureWebJobsStorage__clientId": "mi"})
    assert s.storage_identity and s.storage_client_id == "mi"
    assert s.storage_connection == (
        "AccountName=stscoring01;BlobEndpoint=https://stscoring01.blob.core.windows.net;"
        "QueueEndpoint=https://stscoring01.queue.core.windows.net"
    )
    assert "AccountKey" not in s.storage_connection
    with pytest.raises(SettingsError, match="AzureWebJobsStorage__accountName must be a storage account name"):
        load_settings({**env, "AzureWebJobsStorage__accountName": "not/an-account"})


def test_a_connection_string_wins_over_the_identity_form():
    s = load_settings({**BASE, "AzureWebJobsStorage__accountName": "stscoring01"})
    assert not s.storage_identity and s.storage_connection == "UseDevelopmentStorage=true"


def test_telemetry_settings():
    s = load_settings(BASE)
    assert s.appinsights_connection_string is None and s.telemetry_sampling_ratio == 1.0
    assert not s.worker_configures_telemetry
    with pytest.raises(SettingsError, match="TELEMETRY_SAMPLING_RATIO"):
        load_settings({**BASE, "TELEMETRY_SAMPLING_RATIO": "1.5"})
