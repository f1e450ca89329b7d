"""ShadowLog: shadow refusals at WARNING, one line per limit and interval, never one per request."""

from __future__ import annotations

import logging
import threading

import pytest
from support import ManualClock

from bisman_ratelimit.core import InvalidArgument
from bisman_ratelimit.web import ShadowLog


def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(record.levelname, record.getMessage()) for record in caplog.records]


def test_first_refusal_per_limit_then_one_count_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock(0.0)
    log = ShadowLog(logging.getLogger("test.shadow"), interval=60, clock=clock)
    with caplog.at_level(logging.WARNING, logger="test.shadow"):
        for _ in range(125):
            log.would_refuse(("/search",), "GET /search")
        log.would_refuse(("/search", "/export"), "GET /export")
        clock.advance(59.9)
        log.would_refuse(("/search",), "GET /search")
        clock.advance(0.1)
        log.would_refuse(("/search",), "GET /search?q=2")
    assert lines(caplog) == [
        (
            "WARNING",
            "shadow limit /search would refuse GET /search (let through: shadow mode); "
            "further refusals are counted, one line per 60 s",
        ),
        (
            "WARNING",
            "shadow limit /export would refuse GET /export (let through: shadow mode); "
            "further refusals are counted, one line per 60 s",
        ),
        # 124 after the first, one with /export, one at 59.9 s and this one.
        (
            "WARNING",
            "shadow limit /search would have refused 127 requests in the last 60 s "
            "(the last: GET /search?q=2)",
        ),
    ]


def test_many_threads_write_one_line(caplog: pytest.LogCaptureFixture) -> None:
    log = ShadowLog(logging.getLogger("test.shadow.threads"), clock=ManualClock(0.0))
    start = threading.Barrier(16)

    def refuse() -> None:
        start.wait()
        for _ in range(100):
            log.would_refuse(("/search",), "GET /search")

    with caplog.at_level(logging.WARNING, logger="test.shadow.threads"):
        threads = [threading.Thread(target=refuse) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(caplog.records) == 1


@pytest.mark.parametrize("interval", [0, -1, True, "60"])
def test_interval_must_be_positive(interval: object) -> None:
    with pytest.raises(InvalidArgument, match=r"shadow log interval must be a positive number of seconds"):
        ShadowLog(logging.getLogger("test.shadow"), interval=interval)  # type: ignore[arg-type]
