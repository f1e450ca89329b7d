"""What every command shares: the ``--url`` argument, the connection it names, and exit codes.

Exit codes, as docs/RUNBOOK.md promises: 0 success, 1 a failed check or an
error from the server, 2 bad arguments (argparse's own, and
:class:`UsageError` found after parsing), 130 on SIGINT, 143 on SIGTERM.
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.sentinel

from bisman_ratelimit.backends import RedisConnection, masked_url, redis_from_url
from bisman_ratelimit.backends._urls import without_parameters
from bisman_ratelimit.core import InvalidArgument
from bisman_ratelimit.web import STORAGE_URL_ENV, EnvironmentWarning, storage_url_from_env

DEFAULT_URL = "redis://localhost:6379/0"
EXIT_FAILED = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """Bad arguments found after parsing; the command exits 2, as argparse does."""


# --- arguments (pure) -----------------------------------------------------------------------------------


def whole_number(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``minimum``, one message for every bad value."""

    def parse(text: str) -> int:
        value = text.strip()
        if not value.isdigit() or int(value) < minimum:
            raise argparse.ArgumentTypeError(f"bad number {text!r}: expected a whole number >= {minimum}")
        return int(value)

    return parse


def add_url(
    parser: argparse.ArgumentParser, *, what: str = "the Redis server", fallback: bool = True
) -> None:
    """``--url``; without it, the storage URL variable, then (``fallback``) the local server."""
    otherwise = f", else {DEFAULT_URL}" if fallback else ""
    parser.add_argument(
        "--url",
        default=None,
        help=f"URL of {what}: redis://, rediss://, unix:// or redis+sentinel:// "
        f"(default: ${STORAGE_URL_ENV}{otherwise})",
    )
    parser.set_defaults(url_fallback=DEFAULT_URL if fallback else None)


def resolve_url(args: argparse.Namespace) -> str:
    """The URL a command works on; a near-miss variable name is reported on stderr."""
    if args.url:
        return str(args.url)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", EnvironmentWarning)
        url: str | None = storage_url_from_env(args.url_fallback)
    for warning in caught:
        print(f"bisman-ratelimit: warning: {warning.message}", file=sys.stderr)
    if url is None:
        raise UsageError(f"give --url redis://host:port/db (or set {STORAGE_URL_ENV})")
    args.url = url
    return url


def scheme_of(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def display_url(url: str) -> str:
    """``url`` with any password masked, for printing."""
    return masked_url(url)


def _without_budget(url: str) -> str:
    # An app's URL may carry its hot-path budget (?timeout=50ms); operations
    # such as MONITOR or BGSAVE need far longer, so the command sets its own.
    return without_parameters(url, "timeout")


def password_hint(url: str) -> str:
    """Why the server refused us, and where the password goes in ``url``."""
    where = masked_url(url)
    scheme, _, rest = where.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if (at and ":" in userinfo) or re.search(r"[?&]password=", rest):
        return (
            f"the server at {where} refused the user name and password in the URL: "
            f"check them ({scheme}://USERNAME:PASSWORD@{host}, or {scheme}://:PASSWORD@{host} "
            "for the default user)"
        )
    hint = (
        f"the server at {where} needs a password: put it in the URL, {scheme}://:PASSWORD@{rest} "
        f"(or {scheme}://USERNAME:PASSWORD@{rest} for an ACL user)"
    )
    if scheme == "redis+sentinel":
        hint += "; the Sentinels' own password goes in ?sentinel_password="
    return hint


@contextmanager
def connection(
    url: str, *, command: str, timeout: float = 30.0, cluster: bool = False
) -> Iterator[RedisConnection]:
    """A client for ``url``, built by the library's own URL parser, and closed on the way out."""
    scheme = scheme_of(url)
    if scheme == "memory":
        raise UsageError(
            f"{command} needs a Redis URL: {url} is storage inside one app's process, "
            "which no command can reach"
        )
    if scheme == "redis+cluster" and not cluster:
        raise UsageError(
            f"{command} works on one server at a time: give each primary of the cluster in turn "
            f"as redis://host:port (got {display_url(url)})"
        )
    try:
        opened = redis_from_url(
            _without_budget(url), asyncio=False, options={"timeout": timeout, "socket_connect_timeout": 5.0}
        )
    except InvalidArgument as exc:
        raise UsageError(f"--url: {exc}") from None
    try:
        yield opened
    finally:
        opened.client.close()
        for client in opened.closing:
            client.close()


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: BaseException | None = exc
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


def explain(exc: BaseException, url: str | None) -> tuple[int, str] | None:
    """The exit code and a message saying what to do, for errors a person can fix in ``--url``."""
    if not url:
        return None
    for cause in _causes(exc):
        if isinstance(cause, redis.AuthenticationError) or re.search(r"\bNOAUTH\b|\bWRONGPASS\b", str(cause)):
            return EXIT_USAGE, password_hint(url)
        if isinstance(cause, redis.sentinel.MasterNotFoundError):
            service = urlsplit(url).path.strip("/").split("/")[0]
            return EXIT_FAILED, (
                f"no Sentinel of {display_url(url)} answered with a master named {service!r}: "
                "check that the Sentinels run and that the name after the hosts is the master's"
            )
    return None


# --- signals --------------------------------------------------------------------------------------------


class Signals:
    """SIGINT and SIGTERM unwind as KeyboardInterrupt (so cleanup runs); the exit code says which came.

    A command may catch the interrupt to print what it has, as ``audit
    hotkeys`` does; the exit code is still 128 + the signal's number.
    """

    def __init__(self) -> None:
        self.received: int | None = None

    def _interrupt(self, signum: int, frame: object) -> None:
        self.received = signum
        raise KeyboardInterrupt

    @contextmanager
    def installed(self) -> Iterator[None]:
        previous: dict[int, Any] = {}
        try:
            for wanted in (signal.SIGINT, signal.SIGTERM):
                previous[wanted] = signal.signal(wanted, self._interrupt)
        except ValueError:  # not the main thread: leave the handlers alone
            pass
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    def exit_code(self) -> int | None:
        return None if self.received is None else 128 + self.received
