"""Headless Chromium driving the example apps, each served by uvicorn on a free port over a real Redis.

Chromium and its driver come from Debian (``chromium``, ``chromium-driver``;
``.ci/system-deps`` installs them). Every page a test looks at is saved as a
PNG under ``build/screenshots/``, whose path the session prints at the end.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from browser_support import APPS, SCREENSHOTS, Browser, Server, chromium, saved, wait_for_port

from bisman_ratelimit.testing import free_port


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if saved:
        terminalreporter.write_sep("-", "browser screenshots")
        terminalreporter.write_line(f"{len(saved)} screenshots in {SCREENSHOTS}")


@pytest.fixture
def serve(tmp_path: Path, redis_url: str) -> Iterator[Callable[[str], Server]]:
    """Starts an example (``"starlette"`` or ``"django"``) on Redis; stops it at the end."""
    started: list[Server] = []

    def start(app: str) -> Server:
        directory, target = APPS[app]
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BISMAN_", "DJANGO_SETTINGS"))}
        env["BISMAN_RATELIMIT_STORAGE_URL"] = redis_url
        env["DJANGO_DATABASE"] = str(tmp_path / f"{app}.sqlite3")  # the Django example's, made at start-up
        log = tmp_path / f"{app}.log"
        command = [
            sys.executable, "-m", "uvicorn", "--app-dir", str(directory), target,
            "--host", "127.0.0.1", "--port", str(port), "--no-proxy-headers",
        ]  # fmt: skip
        with log.open("wb") as sink:
            process = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT)
        server = Server(f"http://127.0.0.1:{port}", process, log)
        started.append(server)
        wait_for_port(port, server)
        return server

    yield start
    for server in started:
        server.process.terminate()
        try:
            server.process.wait(10)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


@pytest.fixture
def browsers(request: pytest.FixtureRequest) -> Iterator[Callable[[str, str], Browser]]:
    """Opens headless Chromium windows, each its own browser context; closes them at the end."""
    opened: list[Browser] = []
    test = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name).strip("_")
    shutil.rmtree(SCREENSHOTS / test, ignore_errors=True)  # this run's pages only

    def open_browser(base: str, name: str) -> Browser:
        browser = Browser(chromium(), base, SCREENSHOTS / test, name)
        opened.append(browser)
        return browser

    yield open_browser
    for browser in opened:
        browser.driver.quit()
