"""`make dev`: Azurite + the mock Dataverse + the local runner on 127.0.0.1:7071, until interrupted.

Once everything answers it writes `.local/stack.json` (git-ignored) with the runner's URL, the mock's JSON
line and the Azurite connection string, so scripts and people can find the stack."""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import threading
from pathlib import Path

from local_runner import stack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local_runner.dev")
    parser.add_argument("--mock-args", default="", help="arguments for `python -m mock_dataverse serve`")
    parser.add_argument("--port", type=int, default=7071, help="the runner's port (Core Tools uses 7071)")
    args = parser.parse_args(argv)
    local = stack.ROOT / ".local"
    local.mkdir(exist_ok=True)
    started: list[object] = []
    try:
        (local / "azurite").mkdir(exist_ok=True)
        azurite = stack.start_azurite(str(local / "azurite"), log_dir=str(local))
        started.append(azurite)
        mock = stack.start_mock(shlex.split(args.mock_args), log_path=str(local / "mock.log"))
        started.append(mock)
        settings = stack.app_settings(azurite, mock.info)
        runner = stack.start_runner(settings, port=args.port, log_path=str(local / "runner.log"))
        started.append(runner)
        info = {
            "runner": runner.url,
            "mock": mock.info,
            "azurite": azurite.connection_string,
            "settings": settings,
            "logs": str(local),
        }
        Path(local / "stack.json").write_text(json.dumps(info, indent=2))
        print(json.dumps({"runner": runner.url, "mock": mock.info["url"], "stack": str(local / "stack.json")}))
        print(f"Stack is up. Try: curl {runner.url}/api/health   (Ctrl-C stops everything)", file=sys.stderr)
        done = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: done.set())
        signal.signal(signal.SIGINT, lambda *_: done.set())
        done.wait()
    finally:
        for proc in reversed(started):
            proc.stop()  # type: ignore[attr-defined]
        (local / "stack.json").unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
