"""Checking one request against a route plan, and what the decisions mean.

Per request, :meth:`Evaluation.start` turns the client's address, user and
headers into an :class:`Evaluation`: the entries of one ``hit_many`` call
(every limit, one round trip), then the reading of its result as a
:class:`Verdict`: go on, 429 (this client is over a limit) or 503 (the
server is over its global limit, whoever asks, or the storage is down and
the outage policy refuses), with the response headers computed from the
same decisions.

Two policy options need more than that one call:

- ``shadow``: a shadow limit over its quota lets the request through. As
  ``hit_many`` consumes all or nothing, the enforced limits are then hit
  again without it, so that they keep counting.
- ``deduct_when``: such a limit is hit with the others before the request
  (so concurrent requests cannot all pass before any is counted), and the
  hit is given back once the response status is known and not listed:
  e.g. only failed logins stay counted.

An :class:`Evaluation` asks for that I/O as operations
(``("hit_many", entries, slots)``, ``("refund_many", entries, slots, at)``)
and is fed the results;
:func:`decide` and :func:`adecide` carry them out on a ``Limiter`` or an
``AsyncLimiter``. So sync and async frameworks share all of the logic.

The common plan of one limit on the client address takes a fast path,
:class:`SingleCheck`: one ``hit``, no :class:`Evaluation`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, NamedTuple, Protocol

from bisman_ratelimit._limiter import AsyncLimiter, Limiter
from bisman_ratelimit.backends import caches_in
from bisman_ratelimit.core import (
    Algorithm,
    Decision,
    InvalidArgument,
    Limit,
    MultiDecision,
    OutagePolicy,
    OutageReaction,
    StorageError,
    UndecidedCause,
    hash_tag,
    most_restrictive,
    undecided_cause,
)
from bisman_ratelimit.web._clientip import ClientIP
from bisman_ratelimit.web._headers import legacy_headers, ratelimit_item, retry_after
from bisman_ratelimit.web._outage_log import OutageLog
from bisman_ratelimit.web._plan import GLOBAL_KEY, RoutePlan, Rule
from bisman_ratelimit.web._problem import Problem, service_unavailable, too_many_requests

# Why a verdict refused (or would have: "shadow"), as the decision metric labels it.
Reason = Literal["global", "client", "unavailable", "shadow"]
# One operation for a limiter; see Evaluation.
Op = tuple[Any, ...]
# The arguments of one Limiter.hit: (key, limit, algorithm, cost).
HitArgs = tuple[str, Limit, Algorithm, int]

_CACHE_SIZE = 4096
# The longest header value SingleCheck remembers the arguments of.
_KEPT_VALUE = 256


class Verdict(NamedTuple):
    """What to do with a request, and the headers to add to its response.

    ``status`` is 200 when the request goes on, else 429 or 503.
    ``shadowed`` names the shadow limits that would have refused it;
    ``outage`` is true for the 503 of a storage that could not be reached.
    """

    status: int
    headers: tuple[tuple[str, str], ...]
    retry_after: int | None = None
    violated: tuple[str, ...] = ()
    shadowed: tuple[str, ...] = ()
    outage: bool = False

    @property
    def allowed(self) -> bool:
        return self.status == 200

    @property
    def reason(self) -> Reason | None:
        """The ``reason`` label of the decision metric: why refused, or ``shadow``."""
        if self.status == 200:
            return "shadow" if self.shadowed else None
        if self.status == 503:
            return "unavailable" if self.outage else "global"
        return "client"

    def problem(self, instance: str | None = None) -> Problem | None:
        """The RFC 9457 body of a refusal, or None when the request goes on."""
        if self.status == 429:
            return too_many_requests(self.violated, self.retry_after or 1, instance=instance)
        if self.status == 503:
            return service_unavailable(self.retry_after or 1, instance=instance)
        return None


# What a request gets when the storage is down and the outage policy refuses.
UNAVAILABLE = Verdict(503, (("Retry-After", "1"),), 1, outage=True)
_GO_ON = Verdict(200, ())


class UndecidedRecorder(Protocol):
    """Counts requests the storage could not decide (``RateLimitMetrics`` is one)."""

    def record_undecided(self, *, cause: UndecidedCause, reaction: OutageReaction) -> None: ...


def outage_reaction(
    policy: OutagePolicy,
    keys: Iterable[str],
    exc: StorageError,
    what: str,
    log: OutageLog,
    metrics: UndecidedRecorder | None = None,
) -> OutageReaction:
    """Ask ``policy`` what a storage error means for a request's ``keys``, count it in ``log``
    (and in ``metrics``).

    ``what`` names the request in the log, e.g. ``"GET /login"``. A storage
    that only found no free connection in time is not let off the limits:
    "open" becomes "fallback" then.
    """
    cause = undecided_cause(exc)
    reaction = policy.reaction_for(keys, busy=cause == "busy")
    if metrics is not None:
        metrics.record_undecided(cause=cause, reaction=reaction)
    log.failed(exc, reaction, what)
    return reaction


def environ_key(header: str) -> str:
    """The key of a request header in a WSGI environ (PEP 3333, and Django's ``request.META``)."""
    key = header.upper().replace("-", "_")
    return key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key


def _secret_id(value: str) -> str:
    """API keys and header values may be credentials: keys hold a digest, never the value."""
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class SingleCheck:
    """The common plan that is one limit and nothing else, on the client address or a header: the fast path.

    Every plugin checks such a request the same way: ``limiter.hit(*args)``
    with ``args`` from :meth:`hit_args` (the peer address) or, when
    ``header`` names a request header, :meth:`hit_args_by` (its value),
    then, when ``draft`` (the plan's header style is ``"draft"``; the other
    fitting style is ``"none"``), :meth:`ratelimit` gives the ``RateLimit``
    value of an allowed decision (``policy_header`` being constant), and
    :meth:`verdict` the full verdict of any decision. The arguments of the
    hit are remembered per peer when the peer alone names the client, and
    per header value.
    """

    __slots__ = (
        "_by_peer",
        "_by_value",
        "_client_ip",
        "_header_prefix",
        "_prefix",
        "_quoted",
        "_reads_headers",
        "_suffix",
        "algorithm",
        "asgi_header",
        "cost",
        "draft",
        "environ_key",
        "header",
        "item_name",
        "limit",
        "plan",
        "policy_header",
    )

    @staticmethod
    def fits(plan: RoutePlan, *, headers: bool = False) -> bool:
        """Whether ``plan`` takes the fast path (one keyed by a header: if the plugin reads ``headers``)."""
        if (
            len(plan.rules) != 1
            or plan.global_entry is not None
            or plan.header_style not in ("draft", "none")
        ):
            return False
        rule = plan.rules[0]
        return (
            (rule.kind == "ip" or (headers and rule.kind == "header"))
            and len(rule.limits) == 1
            and type(rule.cost) is int
            and not (rule.shadow or rule.deduct_when or rule.has_exemptions)
        )

    @classmethod
    def of(cls, plan: RoutePlan, *, client_ip: ClientIP, headers: bool = False) -> SingleCheck | None:
        """The fast path of ``plan`` for clients told apart by ``client_ip``, or None when it does not fit.

        With ``headers``, a limit keyed by a request header fits too: the
        plugin then gives that header's value to :meth:`hit_args_by`.
        """
        return cls(plan, client_ip=client_ip, headers=headers) if cls.fits(plan, headers=headers) else None

    def __init__(self, plan: RoutePlan, *, client_ip: ClientIP, headers: bool = False) -> None:
        if not self.fits(plan, headers=headers):
            raise InvalidArgument(f"the plan of {plan.route!r} is not one limit on the client address")
        rule = plan.rules[0]
        self.plan = plan
        self.limit = rule.limits[0]
        self.algorithm = rule.algorithm
        self.cost: int = rule.cost  # type: ignore[assignment]
        self.item_name = rule.item_names[0]
        self.policy_header: str = plan.policy_header or ""
        # Whether an allowed response carries RateLimit-Policy and RateLimit (a refusal has Retry-After).
        self.draft = plan.header_style == "draft"
        self._quoted = rule.quoted[0]
        self._prefix = "rl:ip:"
        self._suffix = rule.key_suffix
        self._client_ip = client_ip
        self._reads_headers = client_ip.reads_headers
        self._by_peer: dict[str | None, HitArgs] = {}
        # The header whose value names the client (lower case), as Evaluation.start keys it,
        # its name in an ASGI scope, and its key in a WSGI environ (Django's request.META).
        self.header: str | None = rule.header if rule.kind == "header" else None
        self.asgi_header = None if self.header is None else self.header.encode("latin-1")
        self.environ_key = None if self.header is None else environ_key(self.header)
        self._header_prefix = f"rl:header:{self.header}:"
        self._by_value: dict[str, HitArgs] = {}

    def key(self, ip_key: str | None) -> str:
        """The storage key of a client, from its masked address (as :meth:`Evaluation.start` builds it)."""
        return self._prefix + hash_tag(ip_key or "unknown") + self._suffix

    def hit_args(self, peer: str | None, forwarded: str | None = None) -> HitArgs:
        """The arguments of ``Limiter.hit`` for the client behind ``peer`` (and ``forwarded``, if trusted)."""
        if self._reads_headers:
            return self._args(self._client_ip.client(peer, forwarded))
        found = self._by_peer.get(peer)
        if found is None:
            found = self._args(self._client_ip.client(peer))
            if len(self._by_peer) >= _CACHE_SIZE:
                self._by_peer.clear()
            self._by_peer[peer] = found
        return found

    def hit_args_by(self, value: str | None, peer: str | None, forwarded: str | None = None) -> HitArgs:
        """The arguments of ``Limiter.hit`` for the client that ``header``'s ``value`` names.

        Without a value, the client is counted by address, as
        :meth:`Evaluation.start` counts it. The value may be a credential:
        the key holds its digest.
        """
        if not value:
            return self.hit_args(peer, forwarded)
        found = self._by_value.get(value)
        if found is None:
            key = self._header_prefix + hash_tag(_secret_id(value)) + self._suffix
            found = (key, self.limit, self.algorithm, self.cost)
            # Only short values are kept: clients choose them, and 4096 values of
            # the 16 KB a server lets through would hold 64 MB.
            if len(value) <= _KEPT_VALUE:
                if len(self._by_value) >= _CACHE_SIZE:
                    self._by_value.clear()
                self._by_value[value] = found
        return found

    def hit_args_in(self, environ: Mapping[str, Any], forwarded_key: str) -> HitArgs:
        """The arguments of ``Limiter.hit`` for a WSGI request (``environ``, or Django's ``request.META``).

        ``forwarded_key`` names the forwarded header's entry, read when proxies are trusted.
        """
        peer, forwarded = environ.get("REMOTE_ADDR"), environ.get(forwarded_key)
        key = self.environ_key
        if key is None:
            return self.hit_args(peer, forwarded)
        value = environ.get(key)
        return self.hit_args_by(value if isinstance(value, str) else None, peer, forwarded)

    def _args(self, ip: str | None) -> HitArgs:
        return (self.key(self._client_ip.key(ip) if ip else None), self.limit, self.algorithm, self.cost)

    def ratelimit(self, decision: Decision) -> str:
        return ratelimit_item(self._quoted, decision)

    def verdict(self, decision: Decision) -> Verdict:
        if not self.draft:
            if decision.allowed:
                return _GO_ON
            wait = retry_after(decision)
            return Verdict(429, (("Retry-After", str(wait)),), wait, (self.item_name,))
        item = ratelimit_item(self._quoted, decision)
        if decision.allowed:
            return Verdict(200, (("RateLimit-Policy", self.policy_header), ("RateLimit", item)))
        wait = retry_after(decision)
        headers = (("RateLimit-Policy", self.policy_header), ("RateLimit", item), ("Retry-After", str(wait)))
        return Verdict(429, headers, wait, (self.item_name,))


class Evaluation:
    """One request's checks, driven by :func:`decide` or :func:`adecide`.

    ``next_op()`` gives the operation to carry out, ``None`` when done:
    ``("hit_many", entries, slots)``, answered with a :class:`MultiDecision`
    passed to ``feed()``. Then ``verdict`` is final. After the response,
    ``on_response(status)`` queues ``("refund_many", entries, slots, at)``
    for the ``deduct_when`` rules whose hits were counted and that do not
    count ``status``; once it is run, ``verdict.headers`` describe the
    counters after it.
    """

    __slots__ = (
        "_active",
        "_at",
        "_counted",
        "_decisions",
        "_ops",
        "_pending",
        "_plan",
        "_responded",
        "verdict",
    )

    @classmethod
    def start(
        cls,
        plan: RoutePlan,
        *,
        ip: str | None,
        ip_key: str | None,
        user: str | None = None,
        header: Callable[[str], str | None] | None = None,
        api_key: str | None = None,
        custom_keys: Sequence[str | None] | None = None,
        costs: Sequence[int] | None = None,
    ) -> Evaluation:
        """Start checking one request against ``plan``.

        ``ip`` is the client address (for exemptions), ``ip_key`` its masked
        form (for keys); ``header`` looks a request header up by lower-case
        name; ``api_key`` is the request's API key if the framework found one.
        ``custom_keys`` and ``costs`` hold, per rule, what the framework got
        from callable keys and costs (ignored for the others).
        """
        active: list[tuple[Rule, str, int]] = []
        for index, rule in enumerate(plan.rules):
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
            # The hash tag around the identity keeps its keys in one Cluster slot.
            active.append((rule, f"rl:{kind}:{hash_tag(identity)}{rule.key_suffix}", cost))
        return cls(plan, active)

    def __init__(self, plan: RoutePlan, active: list[tuple[Rule, str, int]]) -> None:
        self._plan = plan
        self._active = active
        # check index -> its decisions, one per limit; -1 is the global limit.
        self._decisions: dict[int, Sequence[Decision]] = {}
        self._pending: Op | None = None
        self._responded = False
        # The slots the committed hit_many consumed, and when (for refunds).
        self._counted: list[int] = []
        self._at: int | None = None
        self.verdict: Verdict = _GO_ON
        entries, slots = self._entries(list(range(len(active))), with_global=plan.global_entry is not None)
        self._ops: list[Op] = [("hit_many", entries, slots)] if entries else []

    def restart(self) -> Evaluation:
        """The same checks from the beginning, e.g. to decide them on other counters after an outage."""
        return Evaluation(self._plan, self._active)

    @property
    def keys(self) -> list[str]:
        """The storage keys this request is counted under."""
        keys = [key for _, key, _ in self._active]
        return [GLOBAL_KEY, *keys] if self._plan.global_entry is not None else keys

    def _entries(self, indexes: list[int], *, with_global: bool) -> tuple[list[Any], list[int]]:
        entries: list[Any] = []
        slots: list[int] = []
        if with_global:
            entries.append(self._plan.global_entry)
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

    @property
    def provisional(self) -> list[str]:
        """The key endings of the limits whose hits a response may give back (``deduct_when``)."""
        return [rule.key_suffix for rule, _, _ in self._active if rule.deduct_when]

    def next_op(self) -> Op | None:
        self._pending = self._ops.pop(0) if self._ops else None
        return self._pending

    def feed(self, multi: MultiDecision) -> None:
        op = self._pending
        if op is None:
            raise InvalidArgument("Evaluation.feed() called with no operation pending")
        self._pending = None
        entries, slots = op[1], op[2]
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
        if multi.allowed:
            self._counted, self._at = slots, multi.at
        elif not self._denied_by_enforced(slots):
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

    def on_response(self, status: int, counts: Callable[[Rule], bool] | None = None) -> None:
        """Queue the refund of the ``deduct_when`` hits that ``status`` does not count.

        ``counts``, when given, says instead whether the response counts for a
        ``deduct_when`` rule (frameworks whose users judge the whole response).
        """
        self._responded = True
        active = self._active
        if counts is None:
            refunded = [
                i
                for i in self._counted
                if i >= 0 and active[i][0].deduct_when and status not in active[i][0].deduct_when
            ]
        else:
            refunded = [
                i for i in self._counted if i >= 0 and active[i][0].deduct_when and not counts(active[i][0])
            ]
        # Given back once, however often this is called.
        self._counted = []
        if refunded:
            entries, slots = self._entries(refunded, with_global=False)
            self._ops.append(("refund_many", entries, slots, self._at))

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
    return limiter.refund_many(op[1], op[3])


async def _aexecute(limiter: AsyncLimiter, op: Op) -> MultiDecision:
    if op[0] == "hit_many":
        return await limiter.hit_many(op[1])
    return await limiter.refund_many(op[1], op[3])


def _not_cached(limiter: Limiter | AsyncLimiter, evaluation: Evaluation) -> None:
    # A process refusing from its blocked-keys cache would not see the hits another one gives
    # back when its response does not count: these denials are left to Redis.
    for cache in caches_in(limiter.storage):
        for ending in evaluation.provisional:
            cache.provisional(ending)


def decide(limiter: Limiter, evaluation: Evaluation) -> Verdict:
    """Carry out an evaluation's operations on a synchronous limiter."""
    if evaluation.deducts:
        _not_cached(limiter, evaluation)
    op = evaluation.next_op()
    while op is not None:
        evaluation.feed(_execute(limiter, op))
        op = evaluation.next_op()
    return evaluation.verdict


async def adecide(limiter: AsyncLimiter, evaluation: Evaluation) -> Verdict:
    """Carry out an evaluation's operations on an asynchronous limiter."""
    if evaluation.deducts:
        _not_cached(limiter, evaluation)
    op = evaluation.next_op()
    while op is not None:
        evaluation.feed(await _aexecute(limiter, op))
        op = evaluation.next_op()
    return evaluation.verdict
