"""Limits declared on endpoints, by the ``limit`` decorator or the ``RateLimit`` dependency.

A :class:`LimitSpec` is validated when it is written (import time) and bound
to a route template when the middleware first routes a request to it: the
template, or ``group`` when given, is the scope its counters live under.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bisman_ratelimit import AsyncLimiter, InvalidArgument, Limit, parse_limits
from bisman_ratelimit.core import Algorithm, LimitLike
from bisman_ratelimit.web import ClientIP, CostSource, KeySource, Rule

__all__ = ["MARKER", "LimitSpec", "Marker", "declared_on"]

# Attribute set on decorated endpoints; functools.wraps copies it to outer wrappers.
MARKER = "__bisman_ratelimit__"


@dataclass(frozen=True, eq=False)
class LimitSpec:
    """Limits written on an endpoint. Compared by identity: each declaration is its own."""

    limits: tuple[Limit, ...]
    key: KeySource = "ip"
    algorithm: Algorithm = "sliding_window"
    cost: CostSource = 1
    shadow: bool = False
    exempt_ips: tuple[str, ...] = ()
    exempt_users: tuple[str, ...] = ()
    deduct_when: tuple[int, ...] = ()
    group: str | None = None
    # For use without the middleware.
    limiter: AsyncLimiter | None = None
    client_ip: ClientIP | None = None
    _rules: dict[str, Rule] = field(default_factory=dict, repr=False)

    @classmethod
    def make(
        cls,
        limits: LimitLike | Sequence[LimitLike],
        *,
        key: KeySource = "ip",
        algorithm: Algorithm = "sliding_window",
        cost: CostSource = 1,
        shadow: bool = False,
        exempt_ips: Sequence[str] = (),
        exempt_users: Sequence[str] = (),
        deduct_when: Sequence[int] = (),
        group: str | None = None,
        limiter: AsyncLimiter | None = None,
        client_ip: ClientIP | None = None,
    ) -> LimitSpec:
        if group is not None and (not isinstance(group, str) or not group):
            raise InvalidArgument(f"group must be a non-empty string, got {group!r}")
        if limiter is not None and not isinstance(limiter, AsyncLimiter):
            raise InvalidArgument(
                f"limiter must be an AsyncLimiter (a sync client would block the event loop), got {limiter!r}"
            )
        spec = cls(
            limits=parse_limits(limits if isinstance(limits, (str, Limit)) else list(limits)),
            key=key,
            algorithm=algorithm,
            cost=cost,
            shadow=shadow,
            exempt_ips=(exempt_ips,) if isinstance(exempt_ips, str) else tuple(exempt_ips),
            exempt_users=(exempt_users,) if isinstance(exempt_users, str) else tuple(exempt_users),
            deduct_when=tuple(deduct_when),
            group=group,
            limiter=limiter,
            client_ip=client_ip,
        )
        spec.bind("/")  # validates everything now, at import time
        spec._rules.clear()
        return spec

    def bind(self, route: str) -> Rule:
        """The rule of this declaration on ``route`` (cached)."""
        rule = self._rules.get(route)
        if rule is None:
            scope = self.group or route
            rule = Rule.declared(
                self.limits,
                scope=scope,
                name=scope,
                algorithm=self.algorithm,
                key=self.key,
                cost=self.cost,
                shadow=self.shadow,
                exempt_ips=self.exempt_ips,
                exempt_users=self.exempt_users,
                deduct_when=self.deduct_when,
            )
            self._rules[route] = rule
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
    from ._dependencies import RateLimit

    found: list[LimitSpec] = []
    for sub in getattr(dependant, "dependencies", ()) or ():
        if id(sub) in seen:
            continue
        seen.add(id(sub))
        call = getattr(sub, "call", None)
        if isinstance(call, RateLimit):
            found.append(call.spec)
        found.extend(_dependency_specs(sub, seen))
    return found
