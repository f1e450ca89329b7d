"""The load test harness (benchmarks/loadtest) runs end to end in its quickest mode.

One contender (ours on Redis, one uvicorn worker), one second of wrk per
phase, a private Redis that the harness starts and restarts itself: enough
to keep the apps, the wrk script, the sampler and the report from rotting.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "benchmarks" / "loadtest" / "run.py"

# The harness starts its own redis-server through bisman_ratelimit.testing.
pytestmark = pytest.mark.redis


def test_quick_run_writes_results_and_a_report(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(RUN), "--quick", "--no-plots", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr

    run = json.loads((tmp_path / "results.json").read_text())
    assert [contender["contender"]["name"] for contender in run["contenders"]] == ["starlette-ours-redis"]
    (contender,) = run["contenders"]
    phases = {phase["name"]: phase for phase in contender["phases"]}
    assert list(phases) == ["steady", "steady-light", "burst", "abuser-4", "abuser-512", "restart", "global"]

    def statuses(phase: str, role: str) -> dict[str, int]:
        total: dict[str, int] = {}
        for tick in phases[phase]["ticks"]:
            if tick["role"] == role:
                for status, count in tick["statuses"].items():
                    total[status] = total.get(status, 0) + count
        return total

    def bound(phase: str, limit: int) -> int:
        return limit * (math.ceil(phases[phase]["end"] - phases[phase]["start"]) + 1)

    # 20,000 clients at random never reach 50 a second each.
    assert set(statuses("steady", "clients")) == {"200"}
    assert set(statuses("steady-light", "clients")) == {"200"}
    assert {tick["connections"] for tick in phases["steady-light"]["ticks"]} == {run["connections"] // 4}
    # Nothing but allowed or limited, and no more allowed than two clients' windows hold.
    assert set(statuses("burst", "clients")) <= {"200", "429"}
    assert statuses("burst", "clients").get("200", 0) <= 2 * bound("burst", run["per_client"])
    for phase in ("abuser-4", "abuser-512"):
        assert set(statuses(phase, "abuser")) <= {"200", "429"}
        assert statuses(phase, "abuser").get("200", 0) <= bound(phase, run["per_client"])
    # The fallback answers while Redis restarts: no 5xx, no broken connection.
    assert set(statuses("restart", "clients")) == {"200"}
    assert all(sum(tick["errors"].values()) == 0 for tick in phases["restart"]["ticks"])
    assert statuses("global", "clients").get("200", 0) <= bound("global", run["shared"])
    # The sampler read Redis INFO, commandstats included, and our /metrics.
    redis_samples = [sample["redis"] for sample in contender["samples"] if "redis" in sample]
    assert any("evalsha" in sample["commandstats"] for sample in redis_samples)
    assert any("metrics" in sample for sample in contender["samples"])

    report = (tmp_path / "README.md").read_text()
    assert report.startswith("# Load test\n")
    assert "| `starlette-ours-redis` |" in report
    restart = "- starlette-ours-redis: the Redis restart costs 0 5xx or socket errors with the fallback"
    assert restart + " (met)." in report


def test_the_paths_benchmark_counts_only_the_processes_serving_its_port() -> None:
    sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
    serving = [
        subprocess.Popen([*sleep, "--port", "4012"]),  # uvicorn
        subprocess.Popen([*sleep, "-b", "127.0.0.1:4012"]),  # gunicorn
    ]
    others = [
        subprocess.Popen([*sleep, "--port", "40123"]),  # another server
        subprocess.Popen([*sleep, "http://127.0.0.1:4012/api/calls"]),  # wrk
    ]
    # In a process of its own: the benchmark puts its folders on sys.path.
    ask = "import paths; print(sorted(int(entry.name) for entry in paths.serving_processes(4012)))"
    try:
        done = subprocess.run(
            [sys.executable, "-c", ask],
            cwd=ROOT / "benchmarks" / "loadtest",
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        for process in serving + others:
            process.kill()
            process.wait()
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(sorted(process.pid for process in serving))
