"""Which limits apply to a request, and what their decisions mean.

This is the framework-free part of the web integrations. A :class:`Planner`
is built once from a :class:`~bisman_ratelimit.web._config.RateLimitConfig` or
from default limits, and gives one :class:`RoutePlan` per route template and
method (``/users/{id}`` is one plan, whatever the id):

- the global limit (key ``rl:global``), shared by every request;
- the route's own policy, else the limits declared on the endpoint, else
  the defaults;
- the limits declared on the endpoint (decorator, dependency) as well.

Per request, :meth:`RoutePlan.evaluate` turns the client's address, user and
headers into an :class:`Evaluation`: the entries of one ``hit_many`` call
(every limit, one round trip), then the reading of its result as a
:class:`Verdict`: go on, 429 (this client is over a limit) or 503 (the
server is over its global limit, whoever asks), with the response headers
computed from the same decisions.

Two policy options need more than that one call:

- ``shadow``: a shadow limit over its quota lets the request through. As
  ``hit_many`` consumes all or nothing, the enforced limits are then hit
  again without it, so that they keep counting.
- ``deduct_when``: such a limit is peeked before the request (a request
  over it is refused) and hit only once the response status is known and
  listed, e.g. failed logins only.

An :class:`Evaluation` asks for that I/O as operations
(``("hit_many", entries)``, ``("peek", ...)``, ``("hit", ...)``) and is fed
the results; :func:`run` and :func:`run_async` carry them out on a
``Limiter`` or an ``AsyncLimiter``. So sync and async frameworks share all
of the logic.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from bisman_ratelimit._limiter import AsyncLimiter, Limiter
from bisman_ratelimit.core import (
    ALGORITHMS,
    Algorithm,
    Decision,
    InvalidArgument,
    InvalidLimit,
    Limit,
    LimitLike,
    MultiDecision,
    escape,
    most_restrictive,
    parse_limits,
)
from bisman_ratelimit.web._config import Exemptions, GlobalPolicy, IPNetwork, Policy, RateLimitConfig
from bisman_ratelimit.web._headers import legacy_headers, policy_item, ratelimit_item, retry_after, sf_string
from bisman_ratelimit.web._problem import Problem, service_unavailable, too_many_requests

__all__ = [
    "GLOBAL_KEY",
    "Evaluation",
    "HeaderStyle",
    "Planner",
    "RoutePlan",
    "Rule",
    "Verdict",
    "run",
    "run_async",
]

GLOBAL_KEY = "rl:global"
HeaderStyle = Literal["draft", "legacy", "both", "none"]
# A key: "ip", "user", "api_key", "header:<name>", or a framework-level callable of the request.
KeySource = str | Callable[..., Any]
# A cost: a whole number, or a framework-level callable of the request.
CostSource = int | Callable[..., Any]
# One operation for a limiter; see Evaluation.
Op = tuple[Any, ...]

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


def _secret_id(value: str) -> str:
    """API keys and header values may be credentials: keys hold a digest, never the value."""
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]


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
        cost = self.cost
        if not callable(cost):
            if isinstance(cost, bool) or not isinstance(cost, int) or cost < 1:
                raise InvalidArgument(f"cost must be a whole number >= 1 or a callable, got {cost!r}")
            for limit in self.limits:
                if cost > limit.capacity:
                    raise InvalidLimit(
                        f"cost {cost} is more than the limit {limit} allows at once, "
                        f"so rule {self.name!r} would deny every request"
                    )
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
    def declared(
        cls,
        limits: LimitLike | Sequence[LimitLike],
        *,
        scope: str,
        name: str | None = None,
        algorithm: Algorithm = "sliding_window",
        key: KeySource = "ip",
        cost: CostSource = 1,
        shadow: bool = False,
        exempt_ips: Sequence[str] = (),
        exempt_users: Sequence[str] = (),
        deduct_when: Sequence[int] = (),
    ) -> Rule:
        """A rule written in code (an endpoint decorator or dependency)."""
        parsed = parse_limits(limits if isinstance(limits, (str, Limit)) else list(limits))
        exempt = _NO_EXEMPTIONS
        if exempt_ips or exempt_users:
            exempt = Exemptions(ips=_networks("exempt_ips", exempt_ips), users=_users(exempt_users))
        codes = tuple(sorted(set(deduct_when)))
        for code in codes:
            if isinstance(code, bool) or not isinstance(code, int) or not 100 <= code <= 599:
                raise InvalidArgument(f"deduct_when must list HTTP status codes (100-599), got {code!r}")
        if algorithm not in ALGORITHMS:
            raise InvalidArgument(
                f"unknown algorithm {algorithm!r}: expected one of {', '.join(sorted(ALGORITHMS))}"
            )
        return cls(
            name=name or scope,
            scope=scope,
            limits=parsed,
            algorithm=algorithm,
            key=key,
            cost=cost,
            shadow=shadow,
            exempt=exempt,
            deduct_when=codes,
        )


def _networks(name: str, values: Sequence[str]) -> tuple[IPNetwork, ...]:
    if isinstance(values, str):
        values = [values]
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
    if isinstance(values, str):
        values = [values]
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


class Verdict(NamedTuple):
    """What to do with a request, and the headers to add to its response.

    ``status`` is 200 when the request goes on, else 429 or 503.
    ``shadowed`` names the shadow limits that would have refused it.
    """

    status: int
    headers: tuple[tuple[str, str], ...]
    retry_after: int | None = None
    violated: tuple[str, ...] = ()
    shadowed: tuple[str, ...] = ()

    @property
    def allowed(self) -> bool:
        return self.status == 200

    def problem(self, instance: str | None = None) -> Problem | None:
        """The RFC 9457 body of a refusal, or None when the request goes on."""
        if self.status == 429:
            return too_many_requests(self.violated, self.retry_after or 1, instance=instance)
        if self.status == 503:
            return service_unavailable(self.retry_after or 1, instance=instance)
        return None


_GO_ON = Verdict(200, ())


class RoutePlan:
    """Everything about one route and method that does not depend on the request."""

    __slots__ = (
        "_global_entry",
        "_global_size",
        "exempt",
        "global_shadow",
        "header_style",
        "policy_header",
        "policy_item_count",
        "route",
        "rules",
        "single",
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
        if global_policy is not None and not exempt:
            self._global_entry: tuple[str, tuple[Limit, ...], str, int] | None = (
                GLOBAL_KEY,
                global_policy.limits,
                global_policy.algorithm,
                1,
            )
            self._global_size = len(global_policy.limits)
            self.global_shadow = global_policy.shadow
        else:
            self._global_entry = None
            self._global_size = 0
            self.global_shadow = False
        items = [item for rule in self.rules for item in rule.policy_items]
        # The global limit is capacity information and stays out of the headers (draft section 8.2).
        self.policy_header = ", ".join(items) if items and header_style in ("draft", "both") else None
        self.policy_item_count = len(items)
        self.single = SingleCheck(self) if SingleCheck.fits(self) else None

    @property
    def limited(self) -> bool:
        """False when nothing is ever checked for this route."""
        return bool(self.rules) or self._global_entry is not None

    def evaluate(
        self,
        *,
        ip: str | None,
        ip_key: str | None,
        user: str | None = None,
        header: Callable[[str], str | None] | None = None,
        api_key: str | None = None,
        custom_keys: Sequence[str | None] | None = None,
        costs: Sequence[int] | None = None,
    ) -> Evaluation:
        """Start checking one request.

        ``ip`` is the client address (for exemptions), ``ip_key`` its masked
        form (for keys); ``header`` looks a request header up by lower-case
        name; ``api_key`` is the request's API key if the framework found one.
        ``custom_keys`` and ``costs`` hold, per rule, what the framework got
        from callable keys and costs (ignored for the others).
        """
        active: list[tuple[Rule, str, int]] = []
        for index, rule in enumerate(self.rules):
            if rule.has_exemptions and rule.exempt.matches(ip, user):
                continue
            kind = rule.kind
            identity: str | None
            if kind == "ip":
                identity = ip_key
            elif kind == "user":
                identity = user
            elif kind == "api_key":
                identity = _secret_id(api_key) if api_key else None
            elif kind == "header":
                value = header(rule.header) if header is not None and rule.header else None
                identity = _secret_id(value) if value else None
            else:
                identity = custom_keys[index] if custom_keys is not None else None
            if identity is None:
                # No user, key or header: count the client by address instead.
                kind, identity = "ip", ip_key or "unknown"
            elif kind == "header":
                kind = "header:" + rule.header  # type: ignore[operator]
            cost = rule.cost if type(rule.cost) is int else (costs[index] if costs is not None else 1)
            active.append((rule, f"rl:{kind}:{escape(identity)}{rule.key_suffix}", cost))
        return Evaluation(self, active)


class SingleCheck:
    """The common plan that is one limit on the client address and nothing else: a fast path.

    Such a request needs no :class:`Evaluation`: one ``hit`` of ``limit``
    under ``key(ip_key)``; then :meth:`ratelimit` gives the ``RateLimit``
    value of an allowed decision (``policy_header`` being constant), and
    :meth:`verdict` the full verdict of any decision.
    """

    __slots__ = ("_prefix", "_quoted", "_suffix", "algorithm", "cost", "limit", "plan", "policy_header")

    @staticmethod
    def fits(plan: RoutePlan) -> bool:
        if len(plan.rules) != 1 or plan._global_entry is not None or plan.header_style != "draft":
            return False
        rule = plan.rules[0]
        return (
            rule.kind == "ip"
            and len(rule.limits) == 1
            and type(rule.cost) is int
            and not (rule.shadow or rule.deduct_when or rule.has_exemptions)
        )

    def __init__(self, plan: RoutePlan) -> None:
        rule = plan.rules[0]
        self.plan = plan
        self.limit = rule.limits[0]
        self.algorithm = rule.algorithm
        self.cost: int = rule.cost  # type: ignore[assignment]
        self.policy_header: str = plan.policy_header or ""
        self._quoted = rule.quoted[0]
        self._prefix = "rl:ip:"
        self._suffix = rule.key_suffix

    def key(self, ip_key: str | None) -> str:
        """The storage key of a client, from its masked address (as in :meth:`RoutePlan.evaluate`)."""
        if not ip_key:
            return self._prefix + "unknown" + self._suffix
        # Dotted IPv4 needs no escaping; IPv6 networks hold ':'.
        return self._prefix + (escape(ip_key) if ":" in ip_key else ip_key) + self._suffix

    def ratelimit(self, decision: Decision) -> str:
        return ratelimit_item(self._quoted, decision)

    def verdict(self, decision: Decision) -> Verdict:
        rule = self.plan.rules[0]
        item = ratelimit_item(self._quoted, decision)
        if decision.allowed:
            return Verdict(200, (("RateLimit-Policy", self.policy_header), ("RateLimit", item)))
        wait = retry_after(decision)
        headers = (("RateLimit-Policy", self.policy_header), ("RateLimit", item), ("Retry-After", str(wait)))
        return Verdict(429, headers, wait, (rule.item_names[0],))


class Evaluation:
    """One request's checks, driven by :func:`run` or :func:`run_async`.

    ``next_op()`` gives the operation to carry out, ``None`` when done:
    ``("hit_many", entries, slots)`` or ``("peek_many", entries, slots)``,
    both answered with a :class:`MultiDecision` passed to ``feed()``. Then
    ``verdict`` is final. After the response, ``on_response(status)`` queues
    the hits of ``deduct_when`` rules that match; once they are run,
    ``verdict.headers`` describe the counters after them.
    """

    __slots__ = ("_active", "_decisions", "_ops", "_pending", "_plan", "_responded", "verdict")

    def __init__(self, plan: RoutePlan, active: list[tuple[Rule, str, int]]) -> None:
        self._plan = plan
        self._active = active
        # check index -> its decisions, one per limit; -1 is the global limit.
        self._decisions: dict[int, Sequence[Decision]] = {}
        self._pending: Op | None = None
        self._responded = False
        self.verdict: Verdict = _GO_ON
        ops: list[Op] = []
        deferred = [i for i, (rule, _, _) in enumerate(active) if rule.deduct_when]
        if deferred:
            ops.append(("peek_many", *self._entries(deferred, with_global=False)))
        immediate = [i for i, (rule, _, _) in enumerate(active) if not rule.deduct_when]
        entries, slots = self._entries(immediate, with_global=plan._global_entry is not None)
        if entries:
            ops.append(("hit_many", entries, slots))
        self._ops = ops

    def _entries(self, indexes: list[int], *, with_global: bool) -> tuple[list[Any], list[int]]:
        entries: list[Any] = []
        slots: list[int] = []
        if with_global:
            entries.append(self._plan._global_entry)
            slots.append(-1)
        for index in indexes:
            rule, key, cost = self._active[index]
            entries.append((key, rule.limits, rule.algorithm, cost))
            slots.append(index)
        return entries, slots

    @property
    def deducts(self) -> bool:
        """Whether some limit waits for the response status (``deduct_when``)."""
        return any(rule.deduct_when for rule, _, _ in self._active)

    def next_op(self) -> Op | None:
        self._pending = self._ops.pop(0) if self._ops else None
        return self._pending

    def feed(self, multi: MultiDecision) -> None:
        op = self._pending
        if op is None:
            raise InvalidArgument("Evaluation.feed() called with no operation pending")
        self._pending = None
        kind, entries, slots = op
        decisions = multi.decisions
        offset = 0
        for entry, slot in zip(entries, slots, strict=True):
            size = len(entry[1])
            self._decisions[slot] = decisions[offset : offset + size]
            offset += size
        if self._responded:
            self.verdict = self._verdict(self.verdict.status)
            return
        plan = self._plan
        if kind == "peek_many":
            if not multi.allowed and self._denied_by_enforced(slots):
                self._ops.clear()
            if not self._ops:
                self.verdict = self._verdict(None)
            return
        if not multi.allowed and not self._denied_by_enforced(slots):
            # Only shadow limits said no. hit_many consumed nothing, so count the enforced ones again.
            keep = [slot for slot in slots if slot >= 0 and not self._active[slot][0].shadow]
            retry, retry_slots = self._entries(keep, with_global=-1 in slots and not plan.global_shadow)
            if retry:
                self._ops.insert(0, ("hit_many", retry, retry_slots))
                return
        if not self._ops:
            self.verdict = self._verdict(None)

    def _denied_by_enforced(self, slots: list[int]) -> bool:
        for slot in slots:
            shadow = self._plan.global_shadow if slot < 0 else self._active[slot][0].shadow
            if not shadow and not all(d.allowed for d in self._decisions[slot]):
                return True
        return False

    def on_response(self, status: int) -> None:
        """Queue the hits of ``deduct_when`` rules that count ``status``."""
        self._responded = True
        matching = [i for i, (rule, _, _) in enumerate(self._active) if status in rule.deduct_when]
        if matching:
            entries, slots = self._entries(matching, with_global=False)
            self._ops.append(("hit_many", entries, slots))

    def _verdict(self, status: int | None) -> Verdict:
        plan = self._plan
        decisions = self._decisions
        violated: list[str] = []
        shadowed: list[str] = []
        refusing: list[Decision] = []
        items: list[str] = []
        shown: list[Decision] = []
        draft = plan.header_style in ("draft", "both")
        for index, (rule, _, _) in enumerate(self._active):
            got = decisions.get(index)
            if got is None:
                continue
            for position, decision in enumerate(got):
                if not decision.allowed:
                    if rule.shadow:
                        shadowed.append(rule.item_names[position])
                    else:
                        violated.append(rule.item_names[position])
                        refusing.append(decision)
                if draft:
                    items.append(ratelimit_item(rule.quoted[position], decision))
                shown.append(decision)
        global_refusing: list[Decision] = []
        if not plan.global_shadow:
            global_refusing = [d for d in decisions.get(-1, ()) if not d.allowed]
        if status is None:
            status = 503 if global_refusing else 429 if refusing else 200
        headers: list[tuple[str, str]] = []
        if items:
            if plan.policy_header is not None and len(items) == plan.policy_item_count:
                headers.append(("RateLimit-Policy", plan.policy_header))
            else:
                headers.append(("RateLimit-Policy", ", ".join(self._policy_items())))
            headers.append(("RateLimit", ", ".join(items)))
        if shown and plan.header_style in ("legacy", "both"):
            headers.extend(legacy_headers(most_restrictive(shown)))
        wait: int | None = None
        if status == 503:
            wait = max(retry_after(d) for d in global_refusing)
        elif status == 429:
            wait = max(retry_after(d) for d in refusing)
        if wait is not None:
            headers.append(("Retry-After", str(wait)))
        refused = tuple(violated) if status == 429 else ()
        return Verdict(status, tuple(headers), wait, refused, tuple(shadowed))

    def _policy_items(self) -> list[str]:
        return [
            item
            for index, (rule, _, _) in enumerate(self._active)
            if index in self._decisions
            for item in rule.policy_items
        ]


def _execute(limiter: Limiter, op: Op) -> MultiDecision:
    if op[0] == "hit_many":
        return limiter.hit_many(op[1])
    return limiter.peek_many(op[1])


async def _execute_async(limiter: AsyncLimiter, op: Op) -> MultiDecision:
    if op[0] == "hit_many":
        return await limiter.hit_many(op[1])
    return await limiter.peek_many(op[1])


def run(limiter: Limiter, evaluation: Evaluation) -> Verdict:
    """Carry out an evaluation's operations on a synchronous limiter."""
    op = evaluation.next_op()
    while op is not None:
        evaluation.feed(_execute(limiter, op))
        op = evaluation.next_op()
    return evaluation.verdict


async def run_async(limiter: AsyncLimiter, evaluation: Evaluation) -> Verdict:
    """Carry out an evaluation's operations on an asynchronous limiter."""
    op = evaluation.next_op()
    while op is not None:
        evaluation.feed(await _execute_async(limiter, op))
        op = evaluation.next_op()
    return evaluation.verdict


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
                    default_limits, scope="default", name="default", key=key, algorithm=algorithm, cost=cost
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
