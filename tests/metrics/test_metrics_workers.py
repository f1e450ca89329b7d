"""/metrics under several worker processes, with prometheus_client's multi-process mode.

A real uvicorn (Starlette) and a real gunicorn (Django, sync workers), three
workers each, on a real Redis: whichever worker answers a scrape, it reports
every worker's decisions, and the breaker gauge counts the workers alive,
also after a worker is killed and replaced.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import served

from bisman_ratelimit.testing import free_port

HERE = Path(__file__).resolve().parent
WORKERS = 3
LIMIT = 20


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


SERVERS = {
    "uvicorn": ["uvicorn", "--app-dir", str(HERE), "workers_app:app", "--workers", str(WORKERS),
                "--host", "127.0.0.1", "--log-level", "warning", "--port"],
    "gunicorn": ["gunicorn", "--chdir", str(HERE), "django_workers_app:application",
                 "--workers", str(WORKERS), "--log-level", "warning", "--bind"],
}  # fmt: skip


@pytest.fixture(params=sorted(SERVERS))
def workers(request: pytest.FixtureRequest, redis_url: str, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    folder = tmp_path / "prometheus"
    folder.mkdir()
    port = free_port()
    env = {**os.environ, "WORKERS_STORAGE": redis_url, "PROMETHEUS_MULTIPROC_DIR": str(folder)}
    address = str(port) if request.param == "uvicorn" else f"127.0.0.1:{port}"
    command = [sys.executable, "-m", *SERVERS[request.param], address]
    with served(command, port, env) as base:
        yield base, folder


def get(url: str) -> httpx.Response:
    # A connection of its own, so that the kernel hands it to any worker.
    return httpx.get(url, headers={"Connection": "close"}, timeout=10)


def test_a_scrape_of_any_worker_counts_every_workers_decisions(workers: tuple[str, Path]) -> None:
    base, folder = workers
    served: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    with ThreadPoolExecutor(12) as pool:
        # Until every worker has served some (the kernel spreads connections, not evenly).
        while len(served) < WORKERS and sum(statuses.values()) < 600:
            for response in pool.map(get, [base + "/"] * 24):
                served[response.headers["x-worker"]] += 1
                statuses[response.status_code] += 1
    sent = sum(statuses.values())
    assert len(served) == WORKERS
    assert statuses == {200: LIMIT, 429: sent - LIMIT}

    answered_by: set[str] = set()
    for _ in range(30):
        scrape = get(base + "/metrics")
        assert scrape.status_code == 200
        answered_by.add(scrape.headers["x-worker"])
        figures = samples(scrape.text)
        assert figures[("app_rate_limit_allowed_total", (("route", "/"),))] == LIMIT
        assert figures[("app_rate_limit_block_total", (("reason", "client"), ("route", "/")))] == sent - LIMIT
        breaker = (("breaker", "redis"), ("state", "closed"))
        assert figures[("app_breaker_state", breaker)] == WORKERS
        assert figures[("app_breaker_state", (("breaker", "redis"), ("state", "open")))] == 0
        if len(answered_by) > 1:
            break
    assert len(answered_by) > 1, "every scrape reached the same worker"

    pids = sorted(served)
    assert sorted(path.name for path in folder.iterdir()) == sorted(
        [f"counter_{pid}.db" for pid in pids] + [f"gauge_livesum_{pid}.db" for pid in pids]
    )

    # A worker killed outright, and replaced by the server: its decisions still count, it no longer does.
    os.kill(int(pids[0]), signal.SIGKILL)
    deadline = time.monotonic() + 30
    while True:
        scrape = get(base + "/metrics")
        if scrape.headers["x-worker"] not in pids:
            break
        assert time.monotonic() < deadline, "the server did not replace the killed worker"
        time.sleep(0.1)
    figures = samples(scrape.text)
    assert figures[("app_rate_limit_allowed_total", (("route", "/"),))] == LIMIT
    assert figures[("app_breaker_state", (("breaker", "redis"), ("state", "closed")))] == WORKERS
    files = {path.name for path in folder.iterdir()}
    assert {name for name in files if name.startswith("gauge")} == {
        f"gauge_livesum_{pid}.db" for pid in [*pids[1:], scrape.headers["x-worker"]]
    }
    assert {f"counter_{pid}.db" for pid in pids} <= files
