"""Every Python block of README.md and docs/*.md runs here, one test per block.

The blocks of one document share a namespace and run in document order, as
a reader would type them; a block run on its own (``-k``) first runs the
blocks above it. ``REDIS_URL``, which the docs name as "your server's", is
a flushed server from the fixtures, and the working directory is
``example_apps/``, so ``"ratelimits.toml"`` is the example limits file.

A block that cannot run as it is says so just above it, with the reason:
``<!-- skip: next "why" -->``. Every fenced block names its language, so a
Python block cannot hide from this test as an untagged one.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import django
import pytest
import redis
from sybil import Document, Example
from sybil.parsers.markdown import PythonCodeBlockParser, SkipParser

from bisman_ratelimit.testing import RedisServer, find_server_binary

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_project.settings")
django.setup()

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PYTHON = frozenset({"python", "py", "python3", "pycon"})
FENCE = re.compile(r"^(`{3,}|~{3,})(.*)$")


def parse(path: Path) -> Document:
    return Document.parse(str(path), PythonCodeBlockParser(), SkipParser())


def is_code(example: Example) -> bool:
    return not isinstance(example.parsed, tuple)  # skip directives parse to (action, reason)


def block_id(path: Path, example: Example) -> str:
    return f"{path.relative_to(ROOT).as_posix()}:line {example.line}"


def needs_server(document: Document) -> bool:
    return any(is_code(example) and "REDIS_URL" in str(example.parsed) for example in document)


def collect() -> list[Any]:
    params = []
    for path in DOCUMENTS:
        document = parse(path)
        marks = [pytest.mark.redis] if needs_server(document) else []
        for index, example in enumerate(document):
            if is_code(example):
                params.append(pytest.param(path, index, id=block_id(path, example), marks=marks))
    return params


@dataclass
class Reading:
    """One document read from the top: its examples and how far they have run."""

    examples: list[Example]
    done: int = 0


readings: dict[Path, Reading] = {}


def server_url(pool: dict[str, RedisServer]) -> str:
    """The session's server of the first kind installed, started if need be."""
    kind = "redis" if find_server_binary("redis") else "valkey"
    server = pool.get(kind)
    if server is None or server.process is None or server.process.poll() is not None:
        server = pool[kind] = RedisServer(find_server_binary(kind)).start()
    return server.url


@pytest.fixture
def in_example_apps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT / "example_apps")


@pytest.mark.parametrize(("path", "index"), collect())
def test_block_runs(path: Path, index: int, request: pytest.FixtureRequest, in_example_apps: None) -> None:
    reading = readings.get(path)
    if reading is None or reading.done > index:
        document = parse(path)
        # As in a script the reader runs: Flask(__name__) finds its root there.
        document.namespace["__name__"] = "__main__"
        reading = readings[path] = Reading(list(document))
        if needs_server(document):
            url = server_url(request.getfixturevalue("server_pool"))
            with redis.Redis.from_url(url) as client:
                client.flushall()
            document.namespace["REDIS_URL"] = url
    # The blocks above this one, as the reader ran them; a skipped or failed one has its own test.
    for example in reading.examples[reading.done : index]:
        with contextlib.suppress(Exception):
            example.evaluate()
    reading.done = index + 1
    reading.examples[index].evaluate()


def test_every_python_block_is_run_or_marked() -> None:
    """Each fence names its language; each Python fence is an example of the run above."""
    untagged: list[str] = []
    missed: list[str] = []
    for path in DOCUMENTS:
        run = {example.line for example in parse(path) if is_code(example)}
        lines = path.read_text(encoding="utf-8").splitlines()
        inside: str | None = None
        for number, line in enumerate(lines, start=1):
            match = FENCE.match(line)
            if match is None:
                continue
            if inside is not None:
                if line.strip() == inside:
                    inside = None
                continue
            inside = match.group(1)
            language = match.group(2).strip().split(" ")[0].lower()
            where = f"{path.relative_to(ROOT).as_posix()}:line {number}"
            if not language:
                untagged.append(where)
            elif language in PYTHON and number not in run:
                missed.append(where)
    assert untagged == [], "fenced blocks without a language (write ```sh, ```text, ```python, ...)"
    assert missed == [], "Python blocks the docs test does not run"
