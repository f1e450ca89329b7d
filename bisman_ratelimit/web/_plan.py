"""Which limits apply to a request: rules, route plans and the planner.

This is the framework-free part of the web integrations that does not
depend on the request. A :class:`Planner` is built once from a
:class:`~bisman_ratelimit.web._config.RateLimitConfig` or from default
limits, and gives one :class:`RoutePlan` per route template and method
(``/users/{id}`` is one plan, whatever the id):

- the global limit (key ``rl:global``), shared by every request;
- the route's own policy, else the limits declared on the endpoint, else
  the defaults;
- the limits declared on the endpoint (decorator, dependency) as well.

A HEAD request gets the plan of a GET (unless the file has an entry for
HEAD itself): the same view answers it.

Limits written in code carry their options in one :class:`LimitOptions`,
which every decorator and dependency builds. Checking a request against a
plan is the business of :mod:`bisman_ratelimit.web._evaluate`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from bisman_ratelimit.core import (
    ALGORITHMS,
    Algorithm,
    InvalidArgument,
    InvalidLimit,
    Limit,
    LimitLike,
    escape,
    parse_limits,
)
from bisman_ratelimit.web._config import (
    Exemptions,
    GlobalPolicy,
    IPNetwork,
    Policy,
    RateLimitConfig,
    shared_window,
)
from bisman_ratelimit.web._headers import policy_item, sf_string

GLOBAL_KEY = "rl:global"
HeaderStyle = Literal["draft", "legacy", "both", "none"]
# A key: "ip", "user", "api_key", "header:<name>", or a framework-level callable of the request.
KeySource = str | Callable[..., Any]
# A cost: a whole number, or a framework-level callable of the request.
CostSource = int | Callable[..., Any]

_NO_EXEMPTIONS = Exemptions()


def _kind_of(key: KeySource) -> str:
    if callable(key):
        return "custom"
    if key in ("ip", "user", "api_key"):
        return key
    if isinstance(key, str) and key.startswith("header:") and len(key) > len("header:"):
        return "header"
    raise InvalidArgument(
        f"unknown key {key!r}: expected 'ip', 'user', 'api_key', 'header:<name>' or a callable"
    )


def _check_cost(cost: CostSource, limits: tuple[Limit, ...], owner: str) -> None:
    if callable(cost):
        return
    if isinstance(cost, bool) or not isinstance(cost, int) or cost < 1:
        raise InvalidArgument(f"cost must be a whole number >= 1 or a callable, got {cost!r}")
    for limit in limits:
        if cost > limit.capacity:
            raise InvalidLimit(
                f"cost {cost} is more than the limit {limit} allows at once, "
                f"so {owner} would deny every request"
            )


@dataclass(frozen=True, kw_only=True)
class LimitOptions:
    """The options of a limit written in code (a decorator or a dependency), validated once.

    ``limits`` takes what :func:`~bisman_ratelimit.parse_limits` takes;
    ``group`` names the counters shared by every endpoint that gives it.
    The sequences are kept as tuples, so equal options compare equal.
    """

    limits: LimitLike | Sequence[LimitLike]
    key: KeySource = "ip"
    algorithm: Algorithm = "sliding_window"
    cost: CostSource = 1
    shadow: bool = False
    exempt_ips: Sequence[str] = ()
    exempt_users: Sequence[str] = ()
    deduct_when: Sequence[int] = ()
    group: str | None = None
    # Derived once.
    parsed: tuple[Limit, ...] = field(init=False, repr=False, compare=False)
    exempt: Exemptions = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        limits = self.limits
        parsed = parse_limits(limits if isinstance(limits, (str, Limit)) else list(limits))
        if self.group is not None and (not isinstance(self.group, str) or not self.group):
            raise InvalidArgument(f"group must be a non-empty string, got {self.group!r}")
        if not isinstance(self.shadow, bool):
            raise InvalidArgument(f"shadow must be True or False, got {self.shadow!r}")
        if self.algorithm not in ALGORITHMS:
            raise InvalidArgument(
                f"unknown algorithm {self.algorithm!r}: expected one of {', '.join(sorted(ALGORITHMS))}"
            )
        _kind_of(self.key)
        _check_cost(self.cost, parsed, "this limit")
        problem = shared_window(parsed)
        if problem:
            raise InvalidLimit(problem)
        codes = tuple(sorted(set(self.deduct_when)))
        for code in codes:
            if isinstance(code, bool) or not isinstance(code, int) or not 100 <= code <= 599:
                raise InvalidArgument(f"deduct_when must list HTTP status codes (100-599), got {code!r}")
        ips = (self.exempt_ips,) if isinstance(self.exempt_ips, str) else tuple(self.exempt_ips)
        users = (self.exempt_users,) if isinstance(self.exempt_users, str) else tuple(self.exempt_users)
        exempt = _NO_EXEMPTIONS
        if ips or users:
            exempt = Exemptions(ips=_networks("exempt_ips", ips), users=_users(users))
        setattr_ = object.__setattr__
        setattr_(self, "limits", parsed)
        setattr_(self, "parsed", parsed)
        setattr_(self, "exempt_ips", ips)
        setattr_(self, "exempt_users", users)
        setattr_(self, "deduct_when", codes)
        setattr_(self, "exempt", exempt)


@dataclass(frozen=True)
class Rule:
    """Limits counted under one key, in one scope.

    ``name`` is the policy name of the ``RateLimit`` header fields;
    ``scope`` the part of the storage key that separates this rule's
    counters from those of other rules (a route template, ``default``, or a
    group name shared by several routes).
    """

    name: str
    scope: str
    limits: tuple[Limit, ...]
    algorithm: Algorithm = "sliding_window"
    key: KeySource = "ip"
    cost: CostSource = 1
    shadow: bool = False
    exempt: Exemptions = _NO_EXEMPTIONS
    deduct_when: tuple[int, ...] = ()
    # Derived once.
    kind: str = field(init=False, repr=False, compare=False)
    header: str | None = field(init=False, repr=False, compare=False)
    quoted: tuple[str, ...] = field(init=False, repr=False, compare=False)
    item_names: tuple[str, ...] = field(init=False, repr=False, compare=False)
    policy_items: tuple[str, ...] = field(init=False, repr=False, compare=False)
    key_suffix: str = field(init=False, repr=False, compare=False)
    has_exemptions: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise InvalidArgument(f"a rule name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.scope, str) or not self.scope:
            raise InvalidArgument(f"a rule scope must be a non-empty string, got {self.scope!r}")
        if not self.limits:
            raise InvalidLimit(f"rule {self.name!r} has no limits")
        kind = _kind_of(self.key)
        _check_cost(self.cost, self.limits, f"rule {self.name!r}")
        problem = shared_window(self.limits)
        if problem:
            raise InvalidLimit(f"rule {self.name!r}: {problem}")
        names = _item_names(self.name, self.limits)
        setattr_ = object.__setattr__
        setattr_(self, "kind", kind)
        setattr_(self, "header", self.key[len("header:") :].lower() if kind == "header" else None)  # type: ignore[index]
        setattr_(self, "item_names", names)
        setattr_(self, "quoted", tuple(sf_string(name) for name in names))
        setattr_(
            self,
            "policy_items",
            tuple(policy_item(n, lim) for n, lim in zip(names, self.limits, strict=True)),
        )
        setattr_(self, "key_suffix", ":api:" + escape(self.scope))
        setattr_(self, "has_exemptions", bool(self.exempt))

    @classmethod
    def from_policy(cls, policy: Policy, *, name: str, scope: str) -> Rule:
        return cls(
            name=name,
            scope=scope,
            limits=policy.limits,
            algorithm=policy.algorithm,
            key=policy.key,
            cost=policy.cost,
            shadow=policy.shadow,
            exempt=policy.exempt,
            deduct_when=policy.deduct_when,
        )

    @classmethod
    def declared(cls, options: LimitOptions, *, scope: str, name: str | None = None) -> Rule:
        """A rule written in code (an endpoint decorator or dependency), counted under ``scope``."""
        return cls(
            name=name or scope,
            scope=scope,
            limits=options.parsed,
            algorithm=options.algorithm,
            key=options.key,
            cost=options.cost,
            shadow=options.shadow,
            exempt=options.exempt,
            deduct_when=tuple(options.deduct_when),
        )


def _networks(name: str, values: Sequence[str]) -> tuple[IPNetwork, ...]:
    out: list[IPNetwork] = []
    for index, value in enumerate(values):
        try:
            out.append(ipaddress.ip_network(value, strict=False))
        except (TypeError, ValueError):
            raise InvalidArgument(
                f"{name}[{index}]: {value!r} is not an IP address or a CIDR "
                "such as '10.0.0.0/8' or 'fd00::/8'"
            ) from None
    return tuple(out)


def _users(values: Sequence[str]) -> tuple[str, ...]:
    for index, value in enumerate(values):
        if not isinstance(value, str) or not value:
            raise InvalidArgument(f"exempt_users[{index}] must be a non-empty user id string, got {value!r}")
    return tuple(values)


def _item_names(name: str, limits: tuple[Limit, ...]) -> tuple[str, ...]:
    if len(limits) == 1:
        return (name,)
    windows = [f"{name}-{limit.period:g}s" for limit in limits]
    if len(set(windows)) == len(windows):
        return tuple(windows)
    return tuple(f"{name}-{index}" for index in range(len(limits)))


# One entry of a hit_many call: (key, limits, algorithm, cost).
Entry = tuple[str, tuple[Limit, ...], str, int]


class RoutePlan:
    """Everything about one route and method that does not depend on the request."""

    __slots__ = (
        "exempt",
        "global_entry",
        "global_shadow",
        "global_size",
        "header_style",
        "policy_header",
        "policy_item_count",
        "route",
        "rules",
    )

    def __init__(
        self,
        *,
        route: str | None,
        rules: tuple[Rule, ...],
        global_policy: GlobalPolicy | None,
        exempt: bool = False,
        header_style: HeaderStyle = "draft",
    ) -> None:
        self.route = route
        self.exempt = exempt
        self.rules = () if exempt else rules
        self.header_style = header_style
        # The hit_many entry of the global limit, None when there is none.
        self.global_entry: Entry | None
        if global_policy is not None and not exempt:
            self.global_entry = (GLOBAL_KEY, global_policy.limits, global_policy.algorithm, 1)
            self.global_size = len(global_policy.limits)
            self.global_shadow = global_policy.shadow
        else:
            self.global_entry = None
            self.global_size = 0
            self.global_shadow = False
        items = [item for rule in self.rules for item in rule.policy_items]
        # The global limit is capacity information and stays out of the headers (draft section 8.2).
        self.policy_header = ", ".join(items) if items and header_style in ("draft", "both") else None
        self.policy_item_count = len(items)

    @property
    def limited(self) -> bool:
        """False when nothing is ever checked for this route."""
        return bool(self.rules) or self.global_entry is not None


class Planner:
    """Route plans for one app: built once, then one cached plan per route and method.

    Give either ``config`` (a loaded limits file) or ``default_limits`` with
    ``key``, ``algorithm``, ``cost`` and optionally ``global_limits``.
    """

    def __init__(
        self,
        *,
        config: RateLimitConfig | None = None,
        default_limits: LimitLike | Sequence[LimitLike] | None = None,
        key: KeySource = "ip",
        algorithm: Algorithm = "sliding_window",
        cost: CostSource = 1,
        global_limits: LimitLike | Sequence[LimitLike] | None = None,
        header_style: HeaderStyle = "draft",
    ) -> None:
        if header_style not in ("draft", "legacy", "both", "none"):
            raise InvalidArgument(
                f"headers must be 'draft', 'legacy', 'both' or 'none', got {header_style!r}"
            )
        self.header_style: HeaderStyle = header_style
        self.config = config
        self.global_policy: GlobalPolicy | None
        self.default_rule: Rule | None
        if config is not None:
            if default_limits is not None or global_limits is not None:
                raise InvalidArgument(
                    "give either config or default_limits/global_limits, not both: "
                    "put the defaults and the global limit in the config file"
                )
            self.global_policy = config.global_limit
            defaults = config.defaults
            self.default_rule = (
                Rule.from_policy(defaults, name="default", scope="default") if defaults.limits else None
            )
        else:
            self.global_policy = (
                GlobalPolicy(limits=parse_limits(_as_limit_like(global_limits)))
                if global_limits is not None
                else None
            )
            self.default_rule = (
                Rule.declared(
                    LimitOptions(limits=default_limits, key=key, algorithm=algorithm, cost=cost),
                    scope="default",
                    name="default",
                )
                if default_limits is not None
                else None
            )
        self._plans: dict[tuple[Any, ...], RoutePlan] = {}

    def plan(
        self,
        route: str | None,
        method: str,
        declared: tuple[Rule, ...] = (),
        *,
        exempt: bool = False,
    ) -> RoutePlan:
        """The plan for a route template (None when no route matched) and method.

        ``declared`` are the rules written on the endpoint; ``exempt`` is true
        for endpoints marked exempt in code.
        """
        cache_key = (route, method, declared, exempt)
        found = self._plans.get(cache_key)
        if found is None:
            found = self._build(route, method, declared, exempt)
            if len(self._plans) >= 4096:
                self._plans.clear()  # unbounded only if routes are made up per request
            self._plans[cache_key] = found
        return found

    def by_user(self, declared: Iterable[Rule] = ()) -> tuple[str, ...]:
        """The names of the limits keyed or exempted by user, among the file's entries, the
        defaults and ``declared``: those need the request's user, which a plugin checks at start-up."""
        rules = [] if self.default_rule is None else [self.default_rule]
        if self.config is not None:
            rules.extend(
                Rule.from_policy(entry.policy, name=entry.path, scope=entry.path)
                for entry in self.config.routes
                if not entry.policy.exempt.all
            )
        rules.extend(declared)
        names = (rule.name for rule in rules if rule.kind == "user" or rule.exempt.users)
        return tuple(dict.fromkeys(names))

    def _build(self, route: str | None, method: str, declared: tuple[Rule, ...], exempt: bool) -> RoutePlan:
        rules: list[Rule] = []
        entry = self.config.route_for(route, method) if self.config is not None and route else None
        if entry is not None:
            if entry.policy.exempt.all:
                exempt = True
            else:
                rules.append(Rule.from_policy(entry.policy, name=entry.path, scope=entry.path))
            rules.extend(declared)
        elif declared:
            rules.extend(declared)
        elif self.default_rule is not None:
            rules.append(self.default_rule)
        return RoutePlan(
            route=route,
            rules=tuple(rules),
            global_policy=self.global_policy,
            exempt=exempt,
            header_style=self.header_style,
        )


def _as_limit_like(value: LimitLike | Sequence[LimitLike]) -> LimitLike | list[LimitLike]:
    return value if isinstance(value, (str, Limit)) else list(value)
