"""Limits declared on endpoints, by the ``limit`` decorator or the ``RateLimit`` dependency.

A :class:`LimitSpec` is validated when it is written (import time) and bound
to a route template when the middleware first routes a request to it: the
template, or ``group`` when given, is the scope its counters live under.
"""

from __future__ import annotations

import functools
from collections.abc import Container
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from bisman_ratelimit import AsyncLimiter, InvalidArgument, Limit
from bisman_ratelimit.web import ClientIP, LimitOptions, Rule

# Attribute set on decorated endpoints and on RateLimit dependencies; functools.wraps copies it to
# outer wrappers.
MARKER = "__bisman_ratelimit__"


class _Everything:
    """Holds every declaration: with limiting switched off, none is left to check."""

    def __contains__(self, item: object) -> bool:
        return True

    def __repr__(self) -> str:
        return "EVERYTHING"


EVERYTHING: Container[LimitSpec] = _Everything()

# The endpoint declarations the middleware enforces for the request being served; the decorator
# and the dependency read it to know they have nothing left to do.
ENFORCED: ContextVar[Container[LimitSpec]] = ContextVar("bisman_ratelimit_enforced", default=())


@dataclass(frozen=True, eq=False, kw_only=True)
class LimitSpec:
    """Limits written on an endpoint. Compared by identity: each declaration is its own.

    ``limiter`` and ``client_ip`` serve a declaration used without the middleware, and
    ``enabled`` (read once, when it is written) switches its own checks off.
    """

    options: LimitOptions
    limiter: AsyncLimiter | None = None
    client_ip: ClientIP | None = None
    enabled: bool = True
    _rules: dict[str, Rule] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.options, LimitOptions):
            raise InvalidArgument(f"options must be a LimitOptions, got {self.options!r}")
        if self.limiter is not None and not isinstance(self.limiter, AsyncLimiter):
            raise InvalidArgument(
                "limiter must be an AsyncLimiter (a sync client would block the event loop), "
                f"got {self.limiter!r}"
            )

    @property
    def limits(self) -> tuple[Limit, ...]:
        return self.options.parsed

    @property
    def group(self) -> str | None:
        return self.options.group

    def bind(self, route: str) -> Rule:
        """The rule of this declaration on ``route`` (cached)."""
        rule = self._rules.get(route)
        if rule is None:
            rule = self._rules[route] = Rule.declared(self.options, scope=self.options.group or route)
        return rule


@dataclass(frozen=True)
class Marker:
    """What the decorators left on an endpoint."""

    specs: tuple[LimitSpec, ...] = ()
    exempt: bool = False


_NO_MARKER = Marker()


def _marker_of(obj: Any) -> Marker | None:
    seen: set[int] = set()
    while obj is not None and id(obj) not in seen:
        seen.add(id(obj))
        marker = getattr(obj, MARKER, None)
        if isinstance(marker, Marker):
            return marker
        obj = obj.func if isinstance(obj, functools.partial) else getattr(obj, "__wrapped__", None)
    return None


def declared_on(endpoint: Any, method: str, dependant: Any = None) -> Marker:
    """Limits declared on an endpoint (function, method of an endpoint class) and its dependencies."""
    specs: list[LimitSpec] = []
    exempt = False
    candidates = [endpoint]
    if isinstance(endpoint, type):
        # A class-based endpoint: its handler for this method may carry the declaration.
        handler = method.lower() if method not in ("HEAD", "WEBSOCKET") else "get"
        candidates.append(getattr(endpoint, handler, None))
    for candidate in candidates:
        marker = _marker_of(candidate)
        if marker is not None:
            specs.extend(marker.specs)
            exempt = exempt or marker.exempt
    if dependant is not None:
        specs.extend(_dependency_specs(dependant, set()))
    if not specs and not exempt:
        return _NO_MARKER
    unique = tuple(dict.fromkeys(specs))
    return Marker(specs=unique, exempt=exempt)


def _dependency_specs(dependant: Any, seen: set[int]) -> list[LimitSpec]:
    """``RateLimit`` instances among FastAPI dependencies, route- and router-level ones included."""
    found: list[LimitSpec] = []
    for sub in getattr(dependant, "dependencies", ()) or ():
        if id(sub) in seen:
            continue
        seen.add(id(sub))
        # A RateLimit carries its declaration's marker, as a decorated endpoint does.
        marker = getattr(getattr(sub, "call", None), MARKER, None)
        if isinstance(marker, Marker):
            found.extend(marker.specs)
        found.extend(_dependency_specs(sub, seen))
    return found
