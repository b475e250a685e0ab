"""The deployment as code, checked with what runs offline: the Bicep syntax (pycep-parser), checkov's scan with
every skipped check justified in place, azure.yaml against the Azure Developer CLI's JSON schema, and the app
settings against local.settings.example.json."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml
from pycep import BicepParser

ROOT = Path(__file__).resolve().parents[3]
INFRA = ROOT / "infra"
TEMPLATES = sorted(INFRA.glob("*.bicep"))
AZD_SCHEMA = ROOT / "infra" / "azd-azure.yaml.schema.json"  # a copy of the Azure Developer CLI schema (MIT)
CHECKOV = ROOT / ".venv-infra" / "bin" / "checkov"
# Settings of local.settings.example.json the deployment does not set, and why (the Bicep says it too).
NOT_DEPLOYED = {
    "FUNCTIONS_WORKER_RUNTIME": "Flex Consumption takes the runtime from functionAppConfig and refuses the setting",
    "AzureWebJobsStorage": "the identity-based AzureWebJobsStorage__* settings replace the connection string",
}


def _parse(text: str) -> dict:
    return BicepParser().parse(text=text)


def _app_settings() -> dict[str, str]:
    text = (INFRA / "resources.bicep").read_text()
    block = text.split("var appSettings = {", 1)[1].split("\n}\n", 1)[0]
    return dict(re.findall(r"^  ([A-Za-z_]+): (.+)$", block, re.M))


def test_templates_exist_and_parse():
    assert {p.name for p in TEMPLATES} == {"main.bicep", "resources.bicep"}
    for path in TEMPLATES:
        doc = _parse(path.read_text())
        assert doc["resources"] or doc["modules"], path


def test_the_syntax_check_catches_a_broken_template():
    text = (INFRA / "resources.bicep").read_text()
    broken = text.replace("resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {", "resource plan = {", 1)
    assert broken != text
    with pytest.raises(Exception, match=r"(?i)line|column|unexpected"):
        _parse(broken)


def test_checkov_finds_nothing_and_every_skip_says_why():
    assert CHECKOV.is_file(), "checkov is installed into .venv-infra by `make deps` (requirements-infra.txt)"
    proc = subprocess.run(
        [str(CHECKOV), "-d", str(INFRA), "--framework", "bicep", "-o", "json", "--skip-download"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    report = json.loads(proc.stdout)
    summary = report["summary"]
    assert summary["parsing_errors"] == 0 and summary["resource_count"] >= 20, summary
    failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
    assert not failed and summary["failed"] == 0, failed
    skipped = report["results"]["skipped_checks"]
    assert skipped, "the skips are expected to be read (checkov:skip comments inside the resource blocks)"
    reasons = {c["check_id"]: (c["check_result"].get("suppress_comment") or "").strip() for c in skipped}
    unjustified = [cid for cid, why in reasons.items() if len(why) < 25 or why == "No comment provided"]
    assert not unjustified, unjustified
    assert proc.returncode == 0


def test_azure_yaml_matches_the_azd_schema_and_points_at_the_templates():
    schema = json.loads(AZD_SCHEMA.read_text())
    doc = yaml.safe_load((ROOT / "azure.yaml").read_text())
    jsonschema.Draft201909Validator(schema).validate(doc)
    assert (ROOT / doc["infra"]["path"] / f"{doc['infra']['module']}.bicep").is_file()
    service = doc["services"]["api"]
    assert (service["host"], service["language"]) == ("function", "python")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft201909Validator(schema).validate({**doc, "name": "Not A Valid Name"})


def test_every_setting_of_the_example_is_deployed_with_its_safe_default():
    example = json.loads((ROOT / "local.settings.example.json").read_text())["Values"]
    deployed = _app_settings()
    missing = set(example) - set(deployed) - set(NOT_DEPLOYED)
    assert not missing, missing
    # Local-only values differ (the mock's URL, its CA, Azurite); the defaults must not.
    for name in ("SYNC_SCHEDULE", "SCORING_SCHEDULE", "RETRAIN_SCHEDULE", "TRAINING_QUEUE", "SCORING_QUEUE",
                 "SYNC_QUEUE", "READINESS_AUC_READY", "READINESS_AUC_OK", "TRAINING_THREADS", "SCORING_BATCH_SIZE",
                 "JOB_STALE_SECONDS", "ORG_STATUS", "TELEMETRY_SAMPLING_RATIO"):
        assert deployed[name] == f"'{example[name]}'", name
    for name, why in NOT_DEPLOYED.items():
        assert name not in deployed and why.split()[0] in (INFRA / "resources.bicep").read_text(), name


def test_no_key_in_settings_and_the_secret_comes_from_key_vault():
    deployed = _app_settings()
    assert deployed["DATAVERSE_CLIENT_SECRET"].startswith("'@Microsoft.KeyVault(SecretUri=")
    assert deployed["AzureWebJobsStorage__credential"] == "'managedidentity'"
    text = "\n".join(p.read_text() for p in TEMPLATES)
    assert "listKeys" not in text and "AccountKey" not in text
    assert "allowSharedKeyAccess: false" in text


def test_the_parameters_file_feeds_every_required_parameter():
    main = _parse((INFRA / "main.bicep").read_text())
    required = {name for name, p in main["parameters"].items() if p.get("default") is None}
    given = set(json.loads((INFRA / "main.parameters.json").read_text())["parameters"])
    assert required <= given, required - given
    assert {"dataverseUrl", "dataverseTenantId", "dataverseClientId", "dataverseClientSecret"} <= required
    resources = _parse((INFRA / "resources.bicep").read_text())["resources"]
    roles = (INFRA / "resources.bicep").read_text()
    for role in ("storageBlobDataOwner", "storageQueueDataContributor", "storageTableDataContributor",
                 "keyVaultSecretsUser"):
        assert f"roles.{role})" in roles, role
    types = {r["type"] for r in resources.values()}
    assert {
        "Microsoft.Web/serverfarms",
        "Microsoft.Insights/components",
        "Microsoft.OperationalInsights/workspaces",
        "Microsoft.KeyVault/vaults",
        "Microsoft.ManagedIdentity/userAssignedIdentities",
    } <= types
