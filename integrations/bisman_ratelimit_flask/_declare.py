"""Limits written in code: ``limiter.limit(...)``, ``limiter.shared_limit(...)`` and the
defaults and application limits of the extension.

A :class:`Declaration` holds one such call, validated when it is written
(import time). When a request first reaches an endpoint, the extension
turns the declarations that apply to it into
:class:`~bisman_ratelimit.web.Rule` objects, once per endpoint and method.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from flask import Blueprint
from flask.wrappers import Response

from bisman_ratelimit.core import Algorithm, InvalidArgument, InvalidLimit, Limit, parse_limits
from bisman_ratelimit.web import KeySource, Rule, covers

from .util import get_remote_address

# What the rules of a declaration are counted with: "route" limits count per endpoint, "shared"
# limits per scope, "default" limits per endpoint apart from its own, "application" limits once.
Kind = Literal["route", "shared", "default", "application"]
KeyFunc = Callable[[], Any]
# The statuses of a rule whose deduction a function of the response decides: every status defers it.
_ANY_STATUS = tuple(range(100, 600))


def key_source(key_func: KeyFunc | None) -> KeySource:
    """The key of a rule: the client address for ``get_remote_address``, else the function."""
    if key_func is None or key_func is get_remote_address:
        return "ip"
    if not callable(key_func):
        raise InvalidArgument(f"key_func must be a function of no arguments, got {key_func!r}")
    return key_func


def qualified_name(view: Callable[..., Any]) -> str:
    """The name a view is known by, whichever decorator is applied first."""
    return f"{getattr(view, '__module__', 'views')}.{getattr(view, '__qualname__', repr(view))}"


@dataclass(frozen=True, eq=False, kw_only=True)
class Declaration:
    """One ``limit(...)`` call, or the extension's defaults or application limits."""

    limits: tuple[Limit, ...]
    kind: Kind
    key: KeySource = "ip"
    scope: str | None = None
    per_method: bool = False
    methods: frozenset[str] | None = None
    error_message: str | Callable[[], str] | None = None
    exempt_when: Callable[[], bool] | None = None
    override_defaults: bool = True
    deduct_when: Callable[[Response], bool] | None = None
    cost: int | Callable[[], int] = 1
    _rules: dict[tuple[str, str, str], Rule] = field(default_factory=dict, repr=False)

    @classmethod
    def of(
        cls,
        limit_value: str | Sequence[str] | Limit,
        *,
        kind: Kind,
        key_func: KeyFunc | None = None,
        scope: str | None = None,
        per_method: bool = False,
        methods: Sequence[str] | None = None,
        error_message: str | Callable[[], str] | None = None,
        exempt_when: Callable[[], bool] | None = None,
        override_defaults: bool = True,
        deduct_when: Callable[[Response], bool] | None = None,
        cost: int | Callable[[], int] | None = 1,
    ) -> Declaration:
        if callable(limit_value):
            raise InvalidArgument(
                "limits given as a function are not supported: give the limit string, "
                "or a limits file (config=) for limits that change without a deploy"
            )
        limits = parse_limits(limit_value if isinstance(limit_value, (str, Limit)) else list(limit_value))
        if kind == "shared" and (not isinstance(scope, str) or not scope):
            raise InvalidArgument(f"shared_limit needs a scope naming the shared counters, got {scope!r}")
        if scope is not None and (not isinstance(scope, str) or not scope):
            raise InvalidArgument(f"scope must be a non-empty string, got {scope!r}")
        if cost is None:
            cost = 1
        if not callable(cost):
            if isinstance(cost, bool) or not isinstance(cost, int) or cost < 1:
                raise InvalidArgument(f"cost must be a whole number >= 1 or a function, got {cost!r}")
            for limit in limits:
                if cost > limit.capacity:
                    raise InvalidLimit(f"cost {cost} is more than {limit} allows at once")
        for name, value in (("exempt_when", exempt_when), ("deduct_when", deduct_when)):
            if value is not None and not callable(value):
                raise InvalidArgument(f"{name} must be a function, got {value!r}")
        if methods is not None and (isinstance(methods, str) or not all(isinstance(m, str) for m in methods)):
            raise InvalidArgument(f"methods must be a list of HTTP methods such as ['GET'], got {methods!r}")
        return cls(
            limits=limits,
            kind=kind,
            key=key_source(key_func),
            scope=scope,
            per_method=bool(per_method),
            methods=frozenset(m.upper() for m in methods) if methods is not None else None,
            error_message=error_message,
            exempt_when=exempt_when,
            override_defaults=bool(override_defaults),
            deduct_when=deduct_when,
            cost=cost,
        )

    def applies_to(self, method: str) -> bool:
        """Whether this declaration counts a ``method`` request (what is written for GET counts HEAD)."""
        return covers(self.methods, method)

    def rule_for(self, endpoint: str, method: str, algorithm: Algorithm) -> Rule:
        """The rule of this declaration on ``endpoint`` and ``method`` (cached)."""
        cache_key = (endpoint, method, algorithm)
        rule = self._rules.get(cache_key)
        if rule is None:
            if self.kind == "shared":
                name = scope = self.scope or endpoint
            elif self.kind == "application":
                name = scope = "application"
            elif self.kind == "default":
                # Each endpoint has its own default counters, apart from its declared ones.
                name, scope = "default", "default/" + endpoint
            else:
                # A route limit's scope, when given, tells its counters apart within the endpoint.
                name = scope = endpoint if self.scope is None else f"{endpoint}:{self.scope}"
            if self.per_method:
                # A HEAD request is counted as the GET it stands for.
                scope = f"{scope}:{'GET' if method == 'HEAD' else method}"
            rule = Rule(
                name=name,
                scope=scope,
                limits=self.limits,
                algorithm=algorithm,
                key=self.key,
                cost=self.cost,
                deduct_when=_ANY_STATUS if self.deduct_when is not None else (),
            )
            self._rules[cache_key] = rule
        return rule


class LimitDecorator:
    """What ``limiter.limit(...)`` gives: a decorator for a view function or a blueprint."""

    def __init__(self, declaration: Declaration, register: Callable[[Any, Declaration], None]) -> None:
        self.declaration = declaration
        self._register = register

    def __call__(self, obj: Any) -> Any:
        if not isinstance(obj, Blueprint) and not callable(obj):
            raise InvalidArgument(f"limit(...) decorates a view function or a Blueprint, got {obj!r}")
        self._register(obj, self.declaration)
        return obj
