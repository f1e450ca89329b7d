"""What a scrape answers: this process's figures, or every worker's added up.

A server with several worker processes (``uvicorn --workers``, ``gunicorn -w``)
has as many sets of counters, and a scrape reaches whichever worker accepts
it. With prometheus_client's multi-process mode on (``PROMETHEUS_MULTIPROC_DIR``
names an empty folder, set before the server starts), every worker writes its
values into files there, and :func:`exposition` answers any scrape with the
sum over all of them, for the metrics ``registry`` holds; collectors that read
something shared when scraped (as ``RedisCollector`` reads Redis) answer as
they do in one process. The live gauges of workers that have exited are
removed at each scrape (what ``mark_process_dead`` does), so that a worker
replaced by the process manager is not counted twice.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector


def multiprocess_dir() -> str | None:
    """The folder of prometheus_client's multi-process mode, or ``None`` when it is off."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class AllWorkers(Collector):
    """``registry``'s metrics with each value summed over the workers that wrote to ``path``.

    A metric no worker has written yet, and a collector's own families, come
    from ``registry`` as they are.
    """

    def __init__(self, registry: CollectorRegistry, path: str) -> None:
        self.registry = registry
        self.path = path

    def collect(self) -> Iterable[Metric]:
        forget_dead_workers(self.path)
        here = list(self.registry.collect())
        names = {family.name for family in here}
        # prometheus_client types neither call.
        workers = MultiProcessCollector(None, self.path).collect()  # type: ignore[no-untyped-call]
        shared = [family for family in workers if family.name in names]
        summed = {family.name for family in shared}
        return [*shared, *(family for family in here if family.name not in summed)]


def exposition(registry: CollectorRegistry, accept: str = "") -> tuple[bytes, str]:
    """The body and content type that answer a scrape sending ``Accept: accept``.

    OpenMetrics when the scraper asks for it, else the Prometheus text format.
    """
    encoder, content_type = choose_encoder(accept)
    path = multiprocess_dir()
    if path is None:
        return encoder(registry), content_type
    merged = CollectorRegistry(auto_describe=False)
    merged.register(AllWorkers(registry, path))
    return encoder(merged), content_type


_LIVE_GAUGE = re.compile(r"gauge_live[a-z]+_(\d+)\.db")


def forget_dead_workers(path: str) -> None:
    """Remove the live gauges of processes that no longer run, as prometheus_client's ``mark_process_dead``.

    ``app_breaker_state`` counts the live workers in each state; a worker that
    was stopped or killed, and replaced, must not count. Done at each scrape,
    so that it holds under any process manager.
    """
    for name in os.listdir(path):
        found = _LIVE_GAUGE.fullmatch(name)
        if found is not None and not _running(int(found[1])):
            # Another worker's scrape may be removing it too.
            Path(path, name).unlink(missing_ok=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True
