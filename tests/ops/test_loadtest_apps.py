"""The load test's apps declare the same limits wherever ``LOADTEST_DECLARE`` puts them.

``benchmarks/loadtest/paths.py`` compares the limits file with the
frameworks' decorators and dependencies; that comparison means something
only if each app limits the same routes to the same amounts either way.
Each app runs in a process of its own (they read the environment on
import; Django's settings are per process), on memory.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

APPS = Path(__file__).resolve().parents[2] / "benchmarks" / "loadtest" / "apps"

ASGI = """
import json, sys, warnings
warnings.simplefilter("ignore")
from starlette.testclient import TestClient
app = __import__(sys.argv[1]).app
with TestClient(app) as client:
    answers = [client.get(path, headers=headers) for path, headers in {requests}]
"""

DJANGO = """
import json, django
django.setup()
from django.test import Client
client = Client()
answers = [client.get(path, headers=headers) for path, headers in {requests}]
"""

# What each answer shows: its status and its two RateLimit headers, as JSON on the last line.
SHOW = """
shown = [[a.status_code, a.headers.get("ratelimit-policy"), a.headers.get("ratelimit")] for a in answers]
print(json.dumps(shown))
"""

REQUESTS = [
    ("/api/calls", {"x-client": "a"}),
    ("/api/calls", {"x-client": "a"}),
    ("/api/global", {"x-tenant": "all"}),
    ("/health", {}),
]


def answers(framework: str, declared: str) -> list[tuple[int, str | None, str | None]]:
    env = {
        **os.environ,
        "LOADTEST_LIB": "ours",
        "LOADTEST_DECLARE": declared,
        "BISMAN_RATELIMIT_STORAGE_URL": "memory://",
        "PYTHONPATH": os.pathsep.join([str(APPS), os.environ.get("PYTHONPATH", "")]),
    }
    if framework == "django":
        env["DJANGO_SETTINGS_MODULE"] = "django_settings"
        command = [sys.executable, "-c", DJANGO.format(requests=REQUESTS) + SHOW]
    else:
        command = [sys.executable, "-c", ASGI.format(requests=REQUESTS) + SHOW, f"{framework}_app"]
    done = subprocess.run(command, env=env, cwd=APPS, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [tuple(answer) for answer in json.loads(done.stdout.splitlines()[-1])]


def without_names(found: list[tuple[int, str | None, str | None]]) -> list[tuple[int, str, str]]:
    """Status, policy and what remains, without the policies' names (route, view, "default") or the
    seconds to the window's end."""
    return [
        (status, re.sub(r'"[^"]*";', "", policy or ""), re.sub(r'"[^"]*";|;t=\d+', "", now or ""))
        for status, policy, now in found
    ]


@pytest.mark.parametrize(
    ("framework", "declared"),
    [
        ("starlette", "file"),
        ("starlette", "decorator"),
        ("fastapi", "file"),
        ("fastapi", "decorator"),
        ("fastapi", "dependency"),
        ("fastapi", "file+noop"),
        ("django", "file"),
        ("django", "decorator"),
    ],
)
def test_every_declaration_limits_alike(framework: str, declared: str) -> None:
    first, second, shared, health = without_names(answers(framework, declared))
    assert first == (200, "q=50;w=1", "r=49")
    # The same client again: one fewer, unless a new second (a new window) began between the two.
    assert second in ((200, "q=50;w=1", "r=48"), (200, "q=50;w=1", "r=49"))
    assert shared == (200, "q=200;w=1", "r=199")
    assert health == (200, "", "")


def test_an_unknown_declaration_is_refused() -> None:
    env = {**os.environ, "LOADTEST_LIB": "ours", "LOADTEST_DECLARE": "yaml", "PYTHONPATH": str(APPS)}
    done = subprocess.run(
        [sys.executable, "-c", "import starlette_app"], env=env, cwd=APPS, capture_output=True, text=True
    )
    assert done.returncode == 1
    assert "LOADTEST_DECLARE must be one of file, decorator, dependency, file+noop, not 'yaml'" in done.stderr
