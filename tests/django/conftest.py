"""Django for these tests: the test project's settings, and limits on a manual clock.

``configure(**fields)`` sets ``BISMAN_RATELIMIT`` for one test; by default
the limiters share one memory store driven by the ``clock`` fixture, so
windows move only when a test says so.

``engine`` switches ``SESSION_ENGINE`` to ``bisman_ratelimit_django.sessions``
on the parametrized backend (memory, or a flushed Redis/Valkey server) for
one test, with a secret long enough to sign cookies.
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

from sessions_settings import SESSION_SETTINGS  # noqa: E402

from bisman_ratelimit import AsyncLimiter, Limiter  # noqa: E402
from bisman_ratelimit.backends import MemoryStorage  # noqa: E402
from bisman_ratelimit_django import sessions  # noqa: E402

# A whole minute (and hour, and day): fixed windows start here.
MINUTE_START = 1_699_999_200.0


class Configure:
    """Overrides settings for one test; undone in reverse order at teardown."""

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self.active: list[override_settings] = []

    def __call__(self, **fields: Any) -> dict[str, Any]:
        """Set ``BISMAN_RATELIMIT`` to ``fields``, on a memory store on the test clock by default."""
        value = dict(fields)
        if "STORAGE_URL" not in value and "LIMITER" not in value:
            storage = MemoryStorage(clock=self.clock)
            value["LIMITER"] = Limiter(storage)
            value["ASYNC_LIMITER"] = AsyncLimiter(storage)
        self.override(BISMAN_RATELIMIT=value)
        return value

    def override(self, **settings: Any) -> None:
        override = override_settings(**settings)
        override.enable()
        self.active.append(override)

    def undo(self) -> None:
        while self.active:
            self.active.pop().disable()


@pytest.fixture
def configure(clock: Any) -> Iterator[Configure]:
    clock.now = MINUTE_START
    configurator = Configure(clock)
    yield configurator
    configurator.undo()


@pytest.fixture
def limits_file(tmp_path: Path) -> Callable[[str], str]:
    def write(text: str, name: str = "ratelimits.toml") -> str:
        path = tmp_path / name
        path.write_text(text)
        return str(path)

    return write


@pytest.fixture
def engine(backend: tuple[str, str | None]) -> Iterator[str]:
    """The backend's URL, with the session engine configured on it."""
    url = backend[1] or "memory://"
    with override_settings(**SESSION_SETTINGS, BISMAN_SESSIONS={"URL": url}):
        yield url
        sessions.close_connections()
