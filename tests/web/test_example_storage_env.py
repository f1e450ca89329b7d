"""Every example app reads the one storage URL variable, and a near-miss name warns and names it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "example_apps"
DJANGO_PROJECT = EXAMPLES / "django_project"

# Each prints the storage URL the example ended up with.
PROGRAMS = {
    "starlette": (EXAMPLES, "import starlette_app; print(starlette_app.STORAGE)"),
    "fastapi": (EXAMPLES, "import fastapi_app; print(fastapi_app.STORAGE)"),
    "django": (
        DJANGO_PROJECT,
        "import django; from django.conf import settings; django.setup(); "
        "print(settings.BISMAN_RATELIMIT['STORAGE_URL'])",
    ),
}


def start(example: str, **variables: str) -> subprocess.CompletedProcess[str]:
    directory, program = PROGRAMS[example]
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("BISMAN_", "PYTHONWARNINGS", "DJANGO_SETTINGS_MODULE"))
    }
    env.update(variables, DJANGO_SETTINGS_MODULE="example_site.settings")
    return subprocess.run(
        [sys.executable, "-c", program],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


@pytest.mark.parametrize("example", sorted(PROGRAMS))
def test_the_storage_url_variable_is_read(example: str) -> None:
    done = start(example, BISMAN_RATELIMIT_STORAGE_URL="redis://127.0.0.1:6390/0")
    assert (done.returncode, done.stdout, done.stderr) == (0, "redis://127.0.0.1:6390/0\n", "")


@pytest.mark.parametrize("example", sorted(PROGRAMS))
def test_a_near_miss_warns_and_names_the_variable(example: str) -> None:
    # The name the Starlette and FastAPI examples used to read: the Django one silently ignored it.
    done = start(example, BISMAN_RATELIMIT_STORAGE="redis://127.0.0.1:6390/0")
    assert (done.returncode, done.stdout) == (0, "memory://\n")
    assert (
        "EnvironmentWarning: the environment variable BISMAN_RATELIMIT_STORAGE is not read; "
        "did you mean BISMAN_RATELIMIT_STORAGE_URL?"
    ) in done.stderr
