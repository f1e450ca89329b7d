"""Django's private fields, read here and nowhere else in the plugin.

Two, both for speed:

- ``response.headers._store``, the dict behind a response's header mapping
  (lower-case name to ``(name, value)``). Writing to it skips Django's
  per-field charset and newline checks, which the rate-limit fields (printable
  ASCII built by :mod:`bisman_ratelimit.web`) never need.
- ``SimpleLazyObject._wrapped``, ``empty`` until the object is first used. An
  async request whose ``request.user`` is already loaded is keyed by it
  instead of loading the user again through ``auser()``.

Each is checked once, on first use, against a fresh object. When a Django
release has changed one, the public path serves instead (``response.headers[name]
= value``; ``auser()``), one debug line on the ``bisman_ratelimit.django``
logger says so, and only speed is lost.
"""

from __future__ import annotations

import logging
from typing import Any

import django
from django.http import HttpResponse, HttpResponseBase
from django.utils.functional import SimpleLazyObject, empty

logger = logging.getLogger("bisman_ratelimit.django")


class Checks:
    """Whether each private field looks as expected (``None``: not checked yet)."""

    __slots__ = ("headers", "lazy")

    def __init__(self) -> None:
        self.headers: bool | None = None
        self.lazy: bool | None = None


CHECKS = Checks()


def _fell_back(field: str, public: str) -> bool:
    logger.debug("Django %s has no %s as expected: %s serves instead", django.get_version(), field, public)
    return False


def _store_holds() -> bool:
    """Whether writes to ``response.headers._store`` are the response's fields."""
    try:
        response = HttpResponse(b"", content_type="text/plain")
        store = response.headers._store
        response.headers["X-Probe"] = "1"
        if type(store) is not dict or store.get("x-probe") != ("X-Probe", "1"):
            return False
        store["x-written"] = ("X-Written", "2")
        return bool(
            response.headers.get("x-written") == "2"
            and ("X-Written", "2") in response.items()
            and b"X-Written: 2" in response.serialize_headers()
        )
    except Exception:
        return False


def header_store(response: HttpResponseBase) -> dict[str, tuple[str, str]] | None:
    """The dict behind ``response.headers``, keyed by lower-case name; ``None``: use the mapping."""
    holds = CHECKS.headers
    if holds is None:
        holds = _store_holds() or _fell_back("HttpResponse.headers._store", "response.headers")
        CHECKS.headers = holds
    if not holds:
        return None
    store: dict[str, tuple[str, str]] | None = getattr(response.headers, "_store", None)
    return store


def _lazy_holds() -> bool:
    """Whether ``SimpleLazyObject._wrapped`` is ``empty`` until first use, then the value."""
    made: list[str] = []

    def make() -> str:
        made.append("value")
        return "value"

    try:
        lazy: Any = SimpleLazyObject(make)
        # Were _wrapped gone, reading it would load the object: `made` tells.
        if lazy._wrapped is not empty or made:
            return False
        return bool(lazy.upper() == "VALUE" and lazy._wrapped == "value" and made == ["value"])
    except Exception:
        return False


def unevaluated(value: object) -> bool:
    """Whether ``value`` is a ``SimpleLazyObject`` not loaded yet (true when that cannot be told)."""
    if not isinstance(value, SimpleLazyObject):
        return False
    holds = CHECKS.lazy
    if holds is None:
        holds = _lazy_holds() or _fell_back("SimpleLazyObject._wrapped", "auser()")
        CHECKS.lazy = holds
    return not holds or value._wrapped is empty
