"""CLI: `python -m mock_dataverse serve --port N [--seed S] [--opportunities K]
[--import FILE --mapping MAP.json]
[--http] [--token-ttl SECONDS] [--now 2026-11-26T00:00:00Z] [--webresources DIR]`.

Prints exactly one JSON line on stdout once ready, logs to stderr, exits 0 on SIGTERM/SIGINT and 2 on
bad arguments or an invalid mapping (the message names the field)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from datetime import datetime

from .errors import DataverseError


def _now(text: str) -> datetime:
    try:
        d = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--now must be an ISO 8601 date-time, got {text!r}") from None
    if d.tzinfo is None:
        raise argparse.ArgumentTypeError("--now needs a time zone, e.g. 2026-11-26T00:00:00Z")
    return d


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mock_dataverse", description="Mock Dataverse Web API + token service"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="serve the mock org")
    s.add_argument("--port", type=int, default=0, help="port (0 picks a free one)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--seed", type=int, default=7)
    s.add_argument("--opportunities", type=int, default=2000)
    s.add_argument("--import", dest="import_file", help="CSV (plain or zipped) to import instead of seeding")
    s.add_argument("--mapping", help="JSON mapping for --import (see docs/MOCK.md)")
    s.add_argument("--http", action="store_true", help="serve plain HTTP (MSAL needs HTTPS)")
    s.add_argument("--token-ttl", type=int, default=3600)
    s.add_argument("--now", type=_now, default=None, help="mock clock start (default: today 00:00 UTC)")
    s.add_argument("--rate-limit", type=int, default=6000, help="requests per client per 5 minutes")
    s.add_argument("--execution-limit-ms", type=int, default=1_200_000, help="execution ms per client per 5 min")
    s.add_argument("--concurrency-limit", type=int, default=52, help="concurrent requests per client")
    s.add_argument("--dop-hint", type=int, default=4, help="x-ms-dop-hint sent on every Web API response")
    s.add_argument("--cost-sleep", action="store_true", help="each request takes its modelled server time")
    s.add_argument("--webresources", help="folder served under /WebResources/ (e.g. solution/webresources)")
    s.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    if args.opportunities < 0 or args.token_ttl <= 0 or not 0 <= args.port <= 65535:
        parser.error("--opportunities must be >= 0, --token-ttl > 0 and --port within 0..65535")
    if min(args.rate_limit, args.execution_limit_ms, args.concurrency_limit, args.dop_hint) < 1:
        parser.error("--rate-limit, --execution-limit-ms, --concurrency-limit and --dop-hint must be >= 1")
    if (args.mapping is None) != (args.import_file is None) and args.mapping is None:
        parser.error("--import needs --mapping")

    from .importer import MappingError
    from .server import MockServer

    try:
        srv = MockServer(
            seed=args.seed,
            opportunities=args.opportunities,
            port=args.port,
            https=not args.http,
            import_file=args.import_file,
            mapping=args.mapping,
            token_ttl=args.token_ttl,
            now=args.now,
            host=args.host,
            rate_limit=args.rate_limit,
            execution_limit_ms=args.execution_limit_ms,
            concurrency_limit=args.concurrency_limit,
            dop_hint=args.dop_hint,
            cost_sleep=args.cost_sleep,
            webresources=args.webresources,
        )
    except (MappingError, DataverseError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        info = srv.start()
    except OSError as exc:
        print(f"error: cannot listen: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(json.dumps(info) + "\n")
    sys.stdout.flush()
    stop.wait()
    srv.stop()
    logging.getLogger("mock_dataverse").info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
