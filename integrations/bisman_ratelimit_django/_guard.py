"""The machinery shared by the middleware and the decorator.

A :class:`Target` is what one route, method and view need checked; it is
built once and cached. Per request, :class:`Guard` reads the client out of
the request, starts the :class:`~bisman_ratelimit.web.Evaluation` (or takes
the fast path of a :class:`~bisman_ratelimit.web.SingleCheck`), and turns its
verdict into a refusal or into response headers. Only the calls that can
block differ between sync and async code: the user lookup, callable keys and
costs, and the limiter itself. When the storage fails, :meth:`Guard.outage`
asks the outage policy what to do.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse, HttpResponseBase

from bisman_ratelimit.core import ConfigurationError, Decision, InvalidArgument, StorageError
from bisman_ratelimit.web import (
    CONTENT_TYPE,
    UNAVAILABLE,
    ClientIP,
    Evaluation,
    RoutePlan,
    Rule,
    SingleCheck,
    Verdict,
    adecide,
    decide,
    environ_key,
    outage_reaction,
)

from ._django_internals import header_store, unevaluated
from ._runtime import Runtime

_GO_ON = Verdict(200, ())

# Where a request keeps what the middleware decided, for its response.
STATE = "_bisman_ratelimit"
# The @ratelimit declarations already counted for a request, by the middleware or an outer decorator.
COVERED = "_bisman_ratelimit_covered"

# Fields set twice when a decorator checks apart from the middleware: list members join, and the
# longer Retry-After wins.
_MERGED = frozenset({"ratelimit-policy", "ratelimit", "retry-after"})
_LOWER = {
    name: name.lower()
    for name in (
        "RateLimit-Policy",
        "RateLimit",
        "Retry-After",
        "X-RateLimit-Limit",
        "X-RateLimit-Remaining",
        "X-RateLimit-Reset",
    )
}


@dataclass(frozen=True)
class RateLimitResult:
    """``request.ratelimit`` in views with a ``@ratelimit(..., block=False)``.

    ``limited`` is true when the request went over a limit declared with
    ``block=False`` (those never refuse; the view decides). ``over`` names
    those limits; ``verdict`` is the whole decision, headers included.
    """

    limited: bool
    over: tuple[str, ...]
    verdict: Verdict


class Declared(Protocol):
    """What a guard needs of a ``@ratelimit`` declaration (the decorator module builds them)."""

    @property
    def block(self) -> bool: ...


class Counted:
    """The verdict of a request counted in one step, with nothing left for its response."""

    __slots__ = ("verdict",)

    def __init__(self, verdict: Verdict) -> None:
        self.verdict = verdict


class Target:
    """One route plan and what a request must provide for it."""

    __slots__ = (
        "annotate",
        "callables",
        "covered",
        "deferred",
        "needs_api_key",
        "needs_header",
        "needs_user",
        "plan",
        "quick",
        "single",
    )

    def __init__(
        self, plan: RoutePlan, declarations: Sequence[tuple[Declared, Rule]] = (), *, client_ip: ClientIP
    ) -> None:
        self.plan = plan
        rules = plan.rules
        self.needs_user = any(rule.kind == "user" or rule.exempt.users for rule in rules)
        self.needs_api_key = any(rule.kind == "api_key" for rule in rules)
        self.needs_header = any(rule.kind == "header" for rule in rules)
        # One limit on the client address and nothing else: counted with one hit, no Evaluation.
        self.single = SingleCheck.of(plan, client_ip=client_ip, headers=True)
        # (index in plan.rules, rule) of rules whose key or cost is a function of the request
        self.callables = tuple(
            (index, rule) for index, rule in enumerate(rules) if rule.kind == "custom" or callable(rule.cost)
        )
        self.deferred = any(rule.deduct_when for rule in rules)
        used = set(rules)
        self.covered = frozenset(declaration for declaration, rule in declarations if rule in used)
        # Item names of block=False limits, reported on request.ratelimit (None: no such limit).
        self.annotate: tuple[str, ...] | None = None
        if any(not declaration.block for declaration, _ in declarations):
            self.annotate = tuple(
                name
                for declaration, rule in declarations
                if not declaration.block
                for name in rule.item_names
            )
        # A single check with nothing to report on the request: an allowed request needs no Verdict.
        self.quick = self.single if self.annotate is None else None


class State:
    """What the middleware decided for one request."""

    __slots__ = ("counted", "refused", "target")

    def __init__(self, target: Target, counted: GuardResult, refused: bool) -> None:
        self.target = target
        self.counted = counted
        self.refused = refused


class Passed:
    """A request let through by a quick single check: its headers are made on the way out."""

    __slots__ = ("decision", "single")

    def __init__(self, single: SingleCheck, decision: Decision) -> None:
        self.single = single
        self.decision = decision


# What checking a request gives: a verdict to act on, or an allowed quick check.
GuardResult = Counted | Evaluation | Passed


def view_identity(view: Callable[..., Any]) -> str:
    """``module.Name`` of a view: its class for class-based views, else the function."""
    target: Any = getattr(view, "view_class", None)
    if target is None and isinstance(view, functools.partial):
        # method_decorator hands over partial(bound method): name the class, as the middleware does.
        bound = getattr(view.func, "__self__", None)
        target = type(bound) if bound is not None else view.func
    if target is None:
        target = view
    module = getattr(target, "__module__", None) or "views"
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", None) or type(target).__name__
    return f"{module}.{name}"


def apply_headers(response: HttpResponseBase, headers: Sequence[tuple[str, str]]) -> None:
    """Add rate-limit fields to ``response``; list fields already there are extended."""
    fields = response.headers
    # Our names and values are printable ASCII built here, so Django's per-field charset and
    # newline checks (a third of this function's time) are skipped when its store is at hand.
    store = header_store(response)
    for name, value in headers:
        lower = _LOWER.get(name) or name.lower()
        # The store is keyed by lower-case name: asking it spares the mapping's raise-and-catch lookup.
        if lower in _MERGED and (lower in store if store is not None else name in fields):
            if lower == "retry-after":
                value = str(max(int(fields[name]), int(value)))
            else:
                value = f"{fields[name]}, {value}"
        if store is not None:
            store[lower] = (name, value)
        else:
            fields[name] = value


def apply_passed(response: HttpResponseBase, passed: Passed) -> None:
    """The headers of a request let through by a quick single check."""
    single = passed.single
    if not single.draft:
        return  # HEADERS = "none"
    item = single.ratelimit(passed.decision)
    store = header_store(response)
    if store is None or "ratelimit-policy" in store or "ratelimit" in store:
        apply_headers(response, (("RateLimit-Policy", single.policy_header), ("RateLimit", item)))
    else:
        store["ratelimit-policy"] = ("RateLimit-Policy", single.policy_header)
        store["ratelimit"] = ("RateLimit", item)


def _header_getter(meta: dict[str, Any]) -> Callable[[str], str | None]:
    def header(name: str) -> str | None:
        value = meta.get(environ_key(name))
        return value if isinstance(value, str) else None

    return header


def _username(user: Any) -> str | None:
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    get_username = getattr(user, "get_username", None)
    name = get_username() if get_username is not None else getattr(user, "pk", None)
    return None if name is None or name == "" else str(name)


def _user_sync(request: HttpRequest) -> str | None:
    if "user" not in request.__dict__ and not hasattr(request, "user"):
        raise ConfigurationError(_NO_USER)
    return _username(request.user)


_NO_USER = (
    "a rate limit keyed or exempted by user needs request.user: put AuthenticationMiddleware "
    "before RateLimitMiddleware in MIDDLEWARE, or set BISMAN_RATELIMIT['USER'] to a function of the request"
)


async def _user_async(request: HttpRequest) -> str | None:
    user = request.__dict__.get("user")
    if unevaluated(user):
        auser = getattr(request, "auser", None)
        if auser is not None:
            return _username(await auser())
        # Django 4.2 has no auser(): loading the session user touches the database.
        return await sync_to_async(_user_sync)(request)
    if user is None:
        auser = getattr(request, "auser", None)
        if auser is None:
            raise ConfigurationError(_NO_USER)
        return _username(await auser())
    return _username(user)


class Guard:
    """Checks requests against targets and shapes the responses."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.client_ip = runtime.client_ip
        self.reads_forwarded = runtime.client_ip.reads_headers
        self.forwarded_meta = runtime.forwarded_meta
        self.respond = runtime.settings.response
        self.user_getter = runtime.settings.user
        self.api_key_meta = environ_key(runtime.settings.api_key_header)
        self._peers: dict[str | None, tuple[str | None, str | None]] = {}
        self.on_outage = runtime.settings.outage_policy
        self.outages = runtime.outages
        self.shadows = runtime.shadows
        self.metrics = runtime.settings.metrics
        # Metrics want a Verdict for every request: then no request takes the quick path.
        self.quick = self.metrics is None

    # -- I/O-free steps

    def _client(self, meta: dict[str, Any]) -> tuple[str | None, str | None]:
        """The client address, and its masked form for keys."""
        peer = meta.get("REMOTE_ADDR")
        if self.reads_forwarded:
            ip = self.client_ip.client(peer, meta.get(self.forwarded_meta))
            return ip, self.client_ip.key(ip) if ip is not None else None
        # Without proxies the answer depends on the peer alone: remember it for the busy ones.
        found = self._peers.get(peer)
        if found is None:
            ip = self.client_ip.client(peer)
            found = (ip, self.client_ip.key(ip) if ip is not None else None)
            if len(self._peers) >= 4096:
                self._peers.clear()
            self._peers[peer] = found
        return found

    def _start(
        self,
        request: HttpRequest,
        target: Target,
        user: str | None,
        custom_keys: list[str | None] | None,
        costs: list[int] | None,
    ) -> Evaluation:
        meta = request.META
        ip, ip_key = self._client(meta)
        return Evaluation.start(
            target.plan,
            ip=ip,
            ip_key=ip_key,
            user=user,
            header=_header_getter(meta) if target.needs_header else None,
            api_key=meta.get(self.api_key_meta) or None if target.needs_api_key else None,
            custom_keys=custom_keys,
            costs=costs,
        )

    def decide(self, request: HttpRequest, target: Target, counted: GuardResult) -> HttpResponseBase | None:
        """Annotate ``request.ratelimit`` if asked; the refusal to send, or None to go on."""
        if isinstance(counted, Passed):
            return None  # allowed by a quick check: nothing to record or annotate
        verdict = counted.verdict
        if self.metrics is not None:
            self._record(target.plan.route, verdict)
        if target.annotate is not None:
            over = tuple(name for name in target.annotate if name in verdict.shadowed)
            request.ratelimit = RateLimitResult(bool(over), over, verdict)  # type: ignore[attr-defined]
        if verdict.shadowed:
            # block=False limits are the view's to handle; shadow mode is the operator's to see.
            shadowed = [
                name for name in verdict.shadowed if not target.annotate or name not in target.annotate
            ]
            if shadowed:
                self.shadows.would_refuse(shadowed, f"{request.method} {request.path}")
        if verdict.status == 200:
            return None
        return self.refusal(request, verdict)

    def _record(self, route: str | None, verdict: Verdict) -> None:
        # The root URL pattern's route is "": it matched, and is labeled "/".
        label = "/" if route == "" else route
        self.metrics.record_decision(route=label, allowed=verdict.allowed, reason=verdict.reason)

    def outage(self, request: HttpRequest, keys: Sequence[str], exc: StorageError) -> Counted | None:
        """What the outage policy says of a storage error: a verdict, or None to count the
        request on this process's counters (``Runtime.local``)."""
        reaction = outage_reaction(
            self.on_outage, keys, exc, f"{request.method} {request.path}", self.outages, self.metrics
        )
        if reaction == "fallback":
            return None
        return Counted(_GO_ON if reaction == "open" else UNAVAILABLE)

    def refusal(self, request: HttpRequest, verdict: Verdict) -> HttpResponseBase:
        """The 429 or 503 answer, with its headers."""
        if self.respond is not None:
            response = self.respond(request, verdict)
            if not isinstance(response, HttpResponseBase):
                raise InvalidArgument(
                    f"BISMAN_RATELIMIT['RESPONSE'] must return an HttpResponse, got {response!r}"
                )
            # The rate-limit fields, Retry-After above all, are added unless the hook set them.
            apply_headers(response, [(n, v) for n, v in verdict.headers if n not in response.headers])
            return response
        problem = verdict.problem()
        body = problem.body() if problem is not None else b""
        refusal = HttpResponse(body, status=verdict.status, content_type=CONTENT_TYPE)
        apply_headers(refusal, verdict.headers)
        return refusal

    def _user(self, request: HttpRequest) -> str | None:
        if self.user_getter is None:
            return _user_sync(request)
        return _key_text(self.user_getter(request))

    async def _auser(self, request: HttpRequest) -> str | None:
        if self.user_getter is None:
            return await _user_async(request)
        found = self.user_getter(request)
        return _key_text(await found if inspect.isawaitable(found) else found)

    @staticmethod
    def _calls(request: HttpRequest, target: Target) -> tuple[list[Any] | None, list[Any] | None]:
        """Call the key and cost functions of a target's rules (results may be awaitable)."""
        if not target.callables:
            return None, None
        size = len(target.plan.rules)
        keys: list[Any] = [None] * size
        costs: list[Any] = [1] * size
        for index, rule in target.callables:
            if rule.kind == "custom":
                keys[index] = rule.key(request)  # type: ignore[operator]
            if callable(rule.cost):
                costs[index] = rule.cost(request)
        return keys, costs

    # -- sync shell

    def check(self, request: HttpRequest, target: Target) -> GuardResult:
        """Count ``request`` against ``target``: a :class:`Passed` when a quick check
        allowed it (:func:`apply_passed` makes its headers), else a result whose
        ``.verdict`` says what to do."""
        single = target.single
        if single is not None:
            args = single.hit_args_in(request.META, self.forwarded_meta)
            try:
                decision = self.runtime.limiter.hit(*args)
            except StorageError as exc:
                failed = self.outage(request, (args[0],), exc)
                if failed is not None:
                    return failed
                decision = self.runtime.local()[0].hit(*args)
            else:
                if self.outages.down:
                    self.outages.recovered()
            return self._single(target, single, decision)
        user = self._user(request) if target.needs_user else None
        keys, costs = self._calls(request, target)
        if keys is not None and costs is not None:
            keys = [_key_text(value) for value in keys]
            costs = [_cost_value(value) for value in costs]
        evaluation = self._start(request, target, user, keys, costs)
        try:
            self.runtime.decide(evaluation)
        except StorageError as exc:
            failed = self.outage(request, evaluation.keys, exc)
            if failed is not None:
                return failed
            evaluation = evaluation.restart()
            decide(self.runtime.local()[0], evaluation)
        else:
            if self.outages.down:
                self.outages.recovered()
        return evaluation

    def _single(self, target: Target, single: SingleCheck, decision: Decision) -> Counted | Passed:
        if decision.allowed and target.quick is not None and self.quick:
            return Passed(single, decision)  # its headers are made on the way out
        return Counted(single.verdict(decision))

    def finish(
        self,
        request: HttpRequest,
        target: Target,
        counted: GuardResult,
        response: HttpResponseBase,
    ) -> None:
        """Count a ``deduct_when`` response, then add the headers."""
        if isinstance(counted, Passed):
            apply_passed(response, counted)
            return
        if target.deferred and isinstance(counted, Evaluation):
            counted.on_response(response.status_code)
            try:
                self.runtime.decide(counted)
            except StorageError as exc:
                # The response is made: nothing is left to refuse.
                self.outages.failed(exc, None, f"{request.method} {request.path}")
                return
        apply_headers(response, counted.verdict.headers)

    # -- async shell

    async def acheck(self, request: HttpRequest, target: Target) -> GuardResult:
        single = target.single
        if single is not None:
            args = single.hit_args_in(request.META, self.forwarded_meta)
            try:
                decision = await self.runtime.ahit(request, *args)
            except StorageError as exc:
                failed = self.outage(request, (args[0],), exc)
                if failed is not None:
                    return failed
                decision = await self.runtime.local()[1].hit(*args)
            else:
                if self.outages.down:
                    self.outages.recovered()
            return self._single(target, single, decision)
        user = await self._auser(request) if target.needs_user else None
        keys, costs = self._calls(request, target)
        if keys is not None and costs is not None:
            keys = [_key_text(await value if inspect.isawaitable(value) else value) for value in keys]
            costs = [_cost_value(await value if inspect.isawaitable(value) else value) for value in costs]
        evaluation = self._start(request, target, user, keys, costs)
        try:
            await self.runtime.adecide(request, evaluation)
        except StorageError as exc:
            failed = self.outage(request, evaluation.keys, exc)
            if failed is not None:
                return failed
            evaluation = evaluation.restart()
            await adecide(self.runtime.local()[1], evaluation)
        else:
            if self.outages.down:
                self.outages.recovered()
        return evaluation

    async def afinish(
        self,
        request: HttpRequest,
        target: Target,
        counted: GuardResult,
        response: HttpResponseBase,
    ) -> None:
        if isinstance(counted, Passed):
            apply_passed(response, counted)
            return
        if target.deferred and isinstance(counted, Evaluation):
            counted.on_response(response.status_code)
            try:
                await self.runtime.adecide(request, counted)
            except StorageError as exc:
                self.outages.failed(exc, None, f"{request.method} {request.path}")
                return
        apply_headers(response, counted.verdict.headers)


def _key_text(value: object) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return str(value)
    if inspect.isawaitable(value):
        if inspect.iscoroutine(value):
            value.close()
        raise InvalidArgument("a key function returned an awaitable for a sync view; use a plain function")
    raise InvalidArgument(f"a key function must return a string or None, got {value!r}")


def _cost_value(value: object) -> int:
    if inspect.isawaitable(value):
        if inspect.iscoroutine(value):
            value.close()
        raise InvalidArgument("a cost function returned an awaitable for a sync view; use a plain function")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgument(f"a cost function must return a whole number >= 1, got {value!r}")
    return value
