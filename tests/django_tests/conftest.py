"""Django for these tests: the test project's settings, and limits on a manual clock.

``configure(**fields)`` sets ``BISMAN_RATELIMIT`` for one test; by default
the limiters share one memory store driven by the ``clock`` fixture, so
windows move only when a test says so.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import django
import pytest
from django.test.utils import override_settings

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_project.settings")
django.setup()

from bisman_ratelimit import AsyncLimiter, Limiter  # noqa: E402
from bisman_ratelimit.storage import MemoryStorage  # noqa: E402

# A whole minute (and hour, and day): fixed windows start here.
MINUTE_START = 1_699_999_200.0

Configure = Callable[..., dict[str, Any]]


@pytest.fixture
def configure(clock: Any) -> Iterator[Configure]:
    clock.now = MINUTE_START
    active: list[override_settings] = []

    def apply(**fields: Any) -> dict[str, Any]:
        value = dict(fields)
        if "STORAGE_URL" not in value and "LIMITER" not in value:
            storage = MemoryStorage(clock=clock)
            value["LIMITER"] = Limiter(storage)
            value["ASYNC_LIMITER"] = AsyncLimiter(storage)
        override = override_settings(BISMAN_RATELIMIT=value)
        override.enable()
        active.append(override)
        return value

    yield apply
    for override in reversed(active):
        override.disable()


@pytest.fixture
def limits_file(tmp_path: Path) -> Callable[[str], str]:
    def write(text: str, name: str = "ratelimits.toml") -> str:
        path = tmp_path / name
        path.write_text(text)
        return str(path)

    return write
