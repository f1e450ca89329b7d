"""Shadow limits in the Django plugin log a WARNING (shown by default logging), not one per request."""

from __future__ import annotations

import logging

import pytest
from django.test import Client


def test_shadow_refusals_log_one_warning(configure, limits_file, caplog: pytest.LogCaptureFixture) -> None:
    configure(
        CONFIG=limits_file(
            """
[[routes]]
path = "plain/"
limits = "5/minute"
algorithm = "fixed_window"
shadow = true
"""
        )
    )
    client = Client()
    with caplog.at_level(logging.WARNING, logger="bisman_ratelimit.django"):
        assert {client.get("/plain/").status_code for _ in range(125)} == {200}
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "WARNING",
            "shadow limit plain/ would refuse GET /plain/ (let through: shadow mode); "
            "further refusals are counted, one line per 60 s",
        )
    ]


def test_block_false_limits_are_the_views_to_handle(configure, caplog: pytest.LogCaptureFixture) -> None:
    configure()
    client = Client()
    with caplog.at_level(logging.WARNING, logger="bisman_ratelimit.django"):
        assert [client.get("/annotated/").json()["limited"] for _ in range(4)] == [False, False, True, True]
    assert caplog.records == []
