"""Start and stop the local stack's processes (Azurite, the mock Dataverse, the runner), by PID.

Used by `make demo`, `make dev`, the benchmarks and the integration-test fixtures, so every one of them
starts the services the same way."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WEBRESOURCES = ROOT / "solution" / "webresources"  # served by the mock under /WebResources/, as Dataverse does
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[Any], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode} before listening on {port}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {timeout:.0f} s")


def stop_process(proc: subprocess.Popen[Any] | None, timeout: float = 10.0) -> None:
    """Stop one process we started, by its PID: SIGTERM, then SIGKILL if it lingers."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)
    except ProcessLookupError:
        pass


@dataclass
class Azurite:
    blob_port: int
    queue_port: int
    location: str
    processes: list[subprocess.Popen[Any]] = field(default_factory=list)

    @property
    def connection_string(self) -> str:
        return (
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
            f"AccountKey={AZURITE_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{self.blob_port}/devstoreaccount1;"
            f"QueueEndpoint=http://127.0.0.1:{self.queue_port}/devstoreaccount1;"
        )

    def stop(self) -> None:
        for proc in self.processes:
            stop_process(proc)


def start_azurite(
    location: str | None = None, blob_port: int = 0, queue_port: int = 0, log_dir: str | None = None
) -> Azurite:
    """Azurite's blob and queue services from node_modules, telemetry off, on 127.0.0.1."""
    bin_dir = ROOT / "node_modules" / ".bin"
    if not (bin_dir / "azurite-blob").exists():
        raise FileNotFoundError(f"Azurite is not installed in {bin_dir}; run `npm ci` (make does it)")
    location = location or tempfile.mkdtemp(prefix="azurite-")
    az = Azurite(blob_port or free_port(), queue_port or free_port(), location)
    log_dir = log_dir or location
    for kind, port in (("blob", az.blob_port), ("queue", az.queue_port)):
        log = open(os.path.join(log_dir, f"azurite-{kind}.log"), "ab")
        proc = subprocess.Popen(
            [
                str(bin_dir / f"azurite-{kind}"),
                "--location",
                location,
                "--silent",
                "--disableTelemetry",
                "--skipApiVersionCheck",
                f"--{kind}Host",
                "127.0.0.1",
                f"--{kind}Port",
                str(port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        az.processes.append(proc)
        _wait_port(port, proc)
    return az


@dataclass
class Mock:
    info: dict[str, Any]
    process: subprocess.Popen[Any]

    def stop(self) -> None:
        stop_process(self.process)


def start_mock(args: list[str] | None = None, log_path: str | None = None, timeout: float = 120.0) -> Mock:
    """`python -m mock_dataverse serve --port 0 --webresources solution/webresources ...` and its one JSON
    line (url, api, authority, ...)."""
    cmd = [sys.executable, "-m", "mock_dataverse", "serve", "--port", "0", "--webresources", str(WEBRESOURCES)]
    cmd += args or []
    stderr = open(log_path, "ab") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    line = b""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.strip():
            break
        if proc.poll() is not None:
            raise RuntimeError(f"the mock exited with {proc.returncode}; see {log_path or 'its stderr'}")
    if not line.strip():
        stop_process(proc)
        raise TimeoutError("the mock printed no JSON line in time")
    return Mock(json.loads(line), proc)


def app_settings(azurite: Azurite, mock_info: dict[str, Any], **overrides: str) -> dict[str, str]:
    """The app settings that point the function app at this stack: every value of
    local.settings.example.json (binding expressions such as %TRAINING_QUEUE% need them, as under the
    host), with storage and Dataverse pointed at this Azurite and this mock."""
    example = json.loads((ROOT / "local.settings.example.json").read_text())["Values"]
    values = {k: str(v) for k, v in example.items() if v not in ("", None)}
    values.update(
        {
            "AzureWebJobsStorage": azurite.connection_string,
            "DATAVERSE_URL": mock_info["url"],
            "DATAVERSE_TENANT_ID": mock_info["tenant_id"],
            "DATAVERSE_CLIENT_ID": mock_info["client_id"],
            "DATAVERSE_CLIENT_SECRET": mock_info["client_secret"],
            "DATAVERSE_AUTHORITY_HOST": mock_info["authority"].rsplit("/", 1)[0],
            "DATAVERSE_SCOPE": mock_info["resource"].rstrip("/") + "/.default",
            "DATAVERSE_CA_BUNDLE": mock_info["ca_cert"],
        }
    )
    values.update(overrides)
    return values


def unique_settings(azurite: Azurite, mock_info: dict[str, Any], tag: str = "", **overrides: str) -> dict[str, str]:
    """`app_settings` with containers and queues of their own (a test's or a benchmark's), so runs that share
    one Azurite never see each other's data or messages."""
    suffix = f"{tag}{uuid.uuid4().hex[:8]}"
    own = {
        "LAKE_CONTAINER": f"lake-{suffix}",
        "MODEL_CONTAINER": f"models-{suffix}",
        "TRAINING_QUEUE": f"training-{suffix}",
        "SCORING_QUEUE": f"scoring-{suffix}",
        "SYNC_QUEUE": f"sync-{suffix}",
    }
    return app_settings(azurite, mock_info, **{**own, **overrides})


def token_provider(mock_info: dict[str, Any]) -> Any:
    """MSAL (client credentials) against the mock's token endpoint, its certificate trusted."""
    from connectors.auth import token_provider_from

    return token_provider_from(
        authority=mock_info["authority"],
        client_id=mock_info["client_id"],
        scope=mock_info["resource"].rstrip("/") + "/.default",
        client_secret=mock_info["client_secret"],
        ca_bundle=mock_info["ca_cert"],
    )


def dataverse_client(mock_info: dict[str, Any], **kwargs: Any) -> Any:
    """A DataverseClient for the mock (MSAL against its token endpoint, its certificate trusted)."""
    from connectors.dataverse import DataverseClient

    return DataverseClient(mock_info["url"], token_provider(mock_info), ca_bundle=mock_info["ca_cert"], **kwargs)


@dataclass
class Runner:
    url: str
    process: subprocess.Popen[Any]

    def stop(self) -> None:
        stop_process(self.process)


def start_runner(
    settings: dict[str, str], port: int = 0, log_path: str | None = None, extra_args: list[str] | None = None
) -> Runner:
    """The local Functions runner as a child process with `settings` in its environment."""
    port = port or free_port()
    env = {**os.environ, **settings}
    stderr = open(log_path, "ab") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(
        [sys.executable, "-m", "local_runner", "--port", str(port), *(extra_args or [])],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=stderr,
        stdin=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.strip():
        stop_process(proc)
        raise RuntimeError(f"the local runner did not start; see {log_path or 'its stderr'}")
    url = json.loads(line)["url"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/admin/host/status", timeout=2):
                break
        except OSError:
            time.sleep(0.2)
    return Runner(url, proc)
