"""Django for the session engine tests: the test project's settings, with the engine on top.

``engine`` switches ``SESSION_ENGINE`` to ``bisman_ratelimit_django.sessions``
on the parametrized backend (memory, or a flushed Redis/Valkey server) for
one test, with a secret long enough to sign cookies.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import django
import pytest
from django.test.utils import override_settings

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_project.settings")
django.setup()

from sessions_settings import SESSION_SETTINGS  # noqa: E402

from bisman_ratelimit_django import sessions  # noqa: E402


@pytest.fixture
def engine(backend: tuple[str, str | None]) -> Iterator[str]:
    """The backend's URL, with the session engine configured on it."""
    url = backend[1] or "memory://"
    with override_settings(**SESSION_SETTINGS, BISMAN_SESSIONS={"URL": url}):
        yield url
        sessions.close_connections()
