"""`make demo`: the whole pipeline on a seeded mock org, through the function app over real HTTP.

Starts Azurite, the mock Dataverse and the local runner; then sync -> create + train a model -> show its
performance -> publish -> score every eligible open opportunity -> show the top open opportunities with
score, grade and reasons as the CRM would (read back from msdyn_predictivescores). Stops every process it
started, by PID. A step whose route does not exist yet is reported as missing and skipped."""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import Any

from local_runner import stack

GRADES = ["A", "B", "C", "D"]
TRENDS = ["Improving", "Steady", "Declining", "Not enough info"]


class Missing(Exception):
    pass


def call(base: str, method: str, path: str, body: Any = None, timeout: float = 300) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as err:
        raw = err.read()
        payload = json.loads(raw) if raw else None
        if err.code == 404 and isinstance(payload, dict) and payload.get("error", {}).get("code") == "RouteNotFound":
            raise Missing(f"{method} {path}") from None
        return err.code, payload


def wait_job(base: str, accepted: Any, timeout: float = 900) -> dict[str, Any]:
    job = accepted.get("job", accepted) if isinstance(accepted, dict) else {}
    job_id = job.get("id")
    if not job_id:
        return job
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, job = call(base, "GET", f"/api/jobs/{job_id}")
        if job.get("status") in ("succeeded", "failed"):
            return job
        time.sleep(1)
    raise TimeoutError(f"job {job_id} did not finish in {timeout:.0f} s")


def step(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 70 - len(title)), flush=True)


def show_performance(perf: dict[str, Any]) -> None:
    m = perf.get("metrics", perf)
    keys = ["auc", "brier", "ece", "accuracy", "precision", "recall", "f1", "conversionRate"]
    print("  " + "  ".join(f"{k}={m[k]:.3f}" for k in keys if isinstance(m.get(k), (int, float))))
    if isinstance(m.get("threshold"), (int, float)):
        print(
            f"  precision/recall/F1 at score > {m['threshold']:g} (the F1-best cut on the validation fold, "
            f"chosen before the test set was seen)"
        )
    if "readiness" in perf or "readiness" in m:
        print(f"  readiness: {perf.get('readiness', m.get('readiness'))}")
    cm = m.get("confusionMatrix") or m.get("confusion_matrix")
    if cm:
        print(f"  confusion matrix: {cm}")
    leakage = perf.get("leakage") or m.get("leakage") or {}
    excluded = {name: entry for name, entry in leakage.items() if isinstance(entry, dict) and entry.get("excluded")}
    if excluded:
        print("  attributes the leakage guard excluded:")
        for name, entry in excluded.items():
            print(f"    - {entry.get('label', name)}: {'; '.join(entry.get('reasons') or [])}")
    top = perf.get("topFields") or m.get("topFields")
    if top:
        print(f"  top fields: {', '.join(t if isinstance(t, str) else t.get('attribute', str(t)) for t in top)}")


def run(opportunities: int, seed: int, keep_logs: bool) -> int:
    tmp = tempfile.mkdtemp(prefix="demo-")
    started: list[Any] = []
    missing: list[str] = []
    try:
        step("Starting Azurite, the mock Dataverse and the local Functions runner")
        azurite = stack.start_azurite(tmp)
        started.append(azurite)
        mock = stack.start_mock(
            ["--seed", str(seed), "--opportunities", str(opportunities)], log_path=f"{tmp}/mock.log"
        )
        started.append(mock)
        runner = stack.start_runner(
            stack.app_settings(azurite, mock.info), log_path=f"{tmp}/runner.log", extra_args=["--no-timers"]
        )
        started.append(runner)
        base = runner.url
        print(f"  runner {base}  mock {mock.info['url']}  ({opportunities} seeded opportunities, seed {seed})")
        _, health = call(base, "GET", "/api/health")
        print(
            f"  health: {health.get('status')}  services: "
            + ", ".join(f"{k}={'up' if v.get('reachable') else 'DOWN'}" for k, v in health.get("services", {}).items())
        )

        name = "Demo_AllOpportunities"
        steps = [
            ("Sync the org into the lake", lambda: sync(base)),
            ("Create and train a model (default configuration)", lambda: train(base, name)),
            ("Publish", lambda: publish(base, name)),
            ("Score every eligible open opportunity and write back", lambda: score(base)),
            ("Top open opportunities, as sellers see them", lambda: top(base, mock.info)),
        ]
        for title, fn in steps:
            step(title)
            try:
                fn()
            except Missing as exc:
                print(f"  MISSING: {exc} is not built yet; skipping this step")
                missing.append(title)
        step("Done")
        print("  every step ran" if not missing else "  missing steps: " + "; ".join(missing))
        return 0
    finally:
        for proc in reversed(started):
            proc.stop()
        if keep_logs:
            print(f"  logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def sync(base: str) -> None:
    status, accepted = call(base, "POST", "/api/sync", {"full": True})
    job = wait_job(base, accepted)
    print(f"  job {job.get('id')}: {job.get('status')}")
    result = job.get("result") or {}
    tables = result.get("tables", {})
    for table, counts in tables.items():
        print(f"    {table:28s} {json.dumps(counts)[:100]}")
    if "duration_s" in result or "durationSeconds" in result:
        print(f"  duration: {result.get('duration_s', result.get('durationSeconds'))} s")
    if job.get("status") != "succeeded":
        raise SystemExit(f"sync failed: {job.get('error')}")


def train(base: str, name: str) -> None:
    status, accepted = call(base, "POST", "/api/models", {"name": name})
    if status >= 400:
        raise SystemExit(f"create model failed ({status}): {accepted}")
    job = wait_job(base, accepted)
    print(f"  job {job.get('id')}: {job.get('status')}")
    if job.get("status") != "succeeded":
        raise SystemExit(f"training failed: {job.get('error')}")
    _, perf = call(base, "GET", f"/api/models/{name}/performance")
    show_performance(perf or {})


def publish(base: str, name: str) -> None:
    status, body = call(base, "POST", f"/api/models/{name}/publish", {})
    version = body.get("published", body.get("version")) if isinstance(body, dict) else body
    print(f"  {status}: published version {version}")


def score(base: str) -> None:
    status, accepted = call(base, "POST", "/api/score", {})
    job = wait_job(base, accepted)
    print(f"  job {job.get('id')}: {job.get('status')}")
    print(f"  report: {json.dumps(job.get('result'))[:600]}")
    if job.get("status") != "succeeded":
        raise SystemExit(f"scoring failed: {job.get('error')}")


def top(base: str, mock_info: dict[str, Any], n: int = 8) -> None:
    client = stack.dataverse_client(mock_info)
    rows = client.get(
        "msdyn_predictivescores",
        params={
            "$select": "msdyn_entityid,msdyn_score,msdyn_grade,msdyn_scoretrend",
            "$orderby": "msdyn_score desc",
            "$top": str(n),
        },
    ).get("value", [])
    print(f"  {len(rows)} rows read back from msdyn_predictivescores (highest scores first)")
    for row in rows:
        opp_id = row["msdyn_entityid"]
        opp = client.get(f"opportunities({opp_id})", params={"$select": "name,estimatedvalue"})
        _, decoded = call(base, "GET", f"/api/opportunities/{opp_id}/score")
        print(
            f"\n  {row['msdyn_score']:3d}  grade {GRADES[row['msdyn_grade']]}  {TRENDS[row['msdyn_scoretrend']]:>15s}"
            f"  {opp.get('name')}  (est. {opp.get('estimatedvalue') or 0:,.0f})"
        )
        reasons = (decoded or {}).get("reasons") or {}
        if reasons.get("baseline") is not None:
            print(f"        starts from the org's baseline of {reasons['baseline']:.0f}")
        for key in ("positive", "negative"):
            for r in (reasons.get(key) or [])[:3]:
                print(f"        {r['points']:+5.0f}  {r['headline']}")
                print(f"               {r['insight']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local_runner.demo")
    parser.add_argument("--opportunities", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so `finally` stops every process this demo started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return run(args.opportunities, args.seed, args.keep_logs)
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(f"  FAILED: {exc.code}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    raise SystemExit(main())
