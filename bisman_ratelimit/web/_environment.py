"""The environment variables every plugin, example and the command line read.

One name per setting: ``BISMAN_RATELIMIT_STORAGE_URL`` for the storage and
``BISMAN_RATELIMIT_ENABLED`` for the on/off switch. A near miss (a name that
looks meant for one of them) is not silently ignored: it gives a warning that
names the variable to use.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping
from typing import overload

from bisman_ratelimit.core import InvalidArgument

STORAGE_URL_ENV = "BISMAN_RATELIMIT_STORAGE_URL"
ENABLED_ENV = "BISMAN_RATELIMIT_ENABLED"

_NEAR_MISSES = {
    STORAGE_URL_ENV: (
        "BISMAN_RATELIMIT_STORAGE",
        "BISMAN_RATELIMIT_URL",
        "BISMAN_RATELIMIT_REDIS_URL",
        "BISMAN_REDIS_URL",
        "BISMAN_STORAGE_URL",
    ),
    ENABLED_ENV: (
        "BISMAN_RATELIMIT_ENABLE",
        "BISMAN_RATELIMIT_DISABLED",
        "BISMAN_RATELIMIT_DISABLE",
    ),
}

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


_memory_noted = False


def note_memory_default(logger: logging.Logger) -> None:
    """Say once per process, at WARNING, that no storage is configured and what that means.

    For the plugins, when they count in this process's memory because
    nothing named a storage: under a server with several worker processes
    each counts on its own, which multiplies every limit.
    """
    global _memory_noted
    if _memory_noted:
        return
    _memory_noted = True
    logger.warning(
        "no rate-limit storage is configured: limits are counted in this process's memory, so each "
        "worker process counts on its own (under 4 workers a client gets up to 4 times its limit); "
        "set %s to a Redis URL (redis://host:port/0) to count them together",
        STORAGE_URL_ENV,
    )


class EnvironmentWarning(UserWarning):
    """A variable that looks meant for this library is not one it reads."""


def _warn_near_misses(name: str, environ: Mapping[str, str]) -> None:
    for miss in _NEAR_MISSES[name]:
        if miss in environ:
            warnings.warn(
                f"the environment variable {miss} is not read; did you mean {name}?",
                EnvironmentWarning,
                stacklevel=3,
            )


@overload
def storage_url_from_env(default: str, *, environ: Mapping[str, str] | None = None) -> str: ...
@overload
def storage_url_from_env(default: None = None, *, environ: Mapping[str, str] | None = None) -> str | None: ...


def storage_url_from_env(
    default: str | None = None, *, environ: Mapping[str, str] | None = None
) -> str | None:
    """``BISMAN_RATELIMIT_STORAGE_URL``, else ``default``; warns on a near-miss name."""
    environ = os.environ if environ is None else environ
    _warn_near_misses(STORAGE_URL_ENV, environ)
    value = environ.get(STORAGE_URL_ENV, "").strip()
    return value or default


def parse_switch(value: str, *, where: str) -> bool:
    """``"1"``/``"true"``/``"yes"``/``"on"`` or ``"0"``/``"false"``/``"no"``/``"off"``."""
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise InvalidArgument(f"{where} must be one of 1, true, yes, on, 0, false, no, off; got {value!r}")


def enabled_from_env(explicit: bool | None = None, *, environ: Mapping[str, str] | None = None) -> bool:
    """Whether limiting is on: ``explicit`` when given, else ``BISMAN_RATELIMIT_ENABLED``, else on.

    A value the switch cannot read is an error at start-up, not a silent "on".
    """
    if explicit is not None:
        return bool(explicit)
    environ = os.environ if environ is None else environ
    _warn_near_misses(ENABLED_ENV, environ)
    value = environ.get(ENABLED_ENV)
    if value is None or not value.strip():
        return True
    return parse_switch(value, where=f"the environment variable {ENABLED_ENV}")
