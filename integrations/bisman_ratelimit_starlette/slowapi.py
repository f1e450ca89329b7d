"""slowapi's documented surface, on this library's engine: moving over is a change of imports.

::

    from bisman_ratelimit_starlette.slowapi import Limiter, _rate_limit_exceeded_handler
    from bisman_ratelimit_starlette.slowapi import RateLimitExceeded, get_remote_address

    limiter = Limiter(key_func=get_remote_address)
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)

    @app.get("/home")
    @limiter.limit("5/minute")
    async def homepage(request: Request): ...

What runs underneath is ours: every limit of a request in one round trip
(``hit_many``), a pure ASGI middleware (no ``BaseHTTPMiddleware``), the
storage URLs, outage policy and metrics of the other plugins. What differs
from slowapi (default algorithm, key layout, header values) is in
docs/migrating.md.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from bisman_ratelimit import AsyncLimiter, ConfigurationError, InvalidArgument, StorageError
from bisman_ratelimit.core import ALGORITHMS, Algorithm, Limit, OutagePolicy, OutageReaction, parse_limits
from bisman_ratelimit.web import (
    UNAVAILABLE,
    ClientIP,
    HeaderStyle,
    KeySource,
    OutageLog,
    RoutePlan,
    Rule,
    SingleCheck,
    Verdict,
    adecide,
    enabled_from_env,
    outage_reaction,
    storage_url_from_env,
)

from ._context import Facts, Needs
from ._responses import call_with_headers, encode_headers
from ._routes import resolve, uses_hosts

if TYPE_CHECKING:
    from bisman_ratelimit.metrics import RateLimitMetrics

__all__ = [
    "Limiter",
    "RateLimitExceeded",
    "SlowAPIASGIMiddleware",
    "SlowAPIMiddleware",
    "_rate_limit_exceeded_handler",
    "get_ipaddr",
    "get_remote_address",
]

logger = logging.getLogger("bisman_ratelimit.starlette")

F = TypeVar("F", bound=Callable[..., Any])
LimitValue = str | Sequence[str]

# slowapi's strategies (the limits library's names) and ours.
_STRATEGIES: dict[str, Algorithm] = {
    "fixed-window": "fixed_window",
    "moving-window": "sliding_log",
    "sliding-window-counter": "sliding_window",
    **{name: cast(Algorithm, name) for name in ALGORITHMS},
}
# The granularities the limits library names in "5 per 1 minute", largest first.
_GRANULARITIES = (
    (12 * 30 * 86400, "year"),
    (30 * 86400, "month"),
    (86400, "day"),
    (3600, "hour"),
    (60, "minute"),
    (1, "second"),
)
_CACHE_SIZE = 4096
_GO_ON = Verdict(200, ())
_STATE_FLAG = "_rate_limiting_complete"


def get_remote_address(request: Request) -> str:
    """The peer's address (``127.0.0.1`` when there is none), as slowapi's key function."""
    if not request.client or not request.client.host:
        return "127.0.0.1"
    return request.client.host


def get_ipaddr(request: Request) -> str:
    """``X_FORWARDED_FOR`` as sent, else the peer's address: slowapi's function, proxies unchecked.

    Any client can send that header: prefer ``get_remote_address`` behind a
    proxy that rewrites the peer address (uvicorn's ``--proxy-headers``).
    """
    forwarded = request.headers.get("X_FORWARDED_FOR")
    if forwarded is not None:
        return forwarded
    return get_remote_address(request)


def limit_text(limit: Limit) -> str:
    """A limit as slowapi's messages show it: ``5 per 1 minute``."""
    period = limit.period
    for seconds, name in _GRANULARITIES:
        count = period / seconds
        if count >= 1 and count == int(count):
            return f"{limit.amount} per {int(count)} {name}"
    return f"{limit.amount} per {period:g} second"


class RateLimitExceeded(HTTPException):
    """A request over a limit: status 429, ``detail`` the limit (``5 per 1 minute``) or ``error_message``.

    ``limit`` is the :class:`~bisman_ratelimit.Limit` that refused, ``headers``
    the rate-limit fields of the refusal (``Retry-After`` always).
    """

    def __init__(
        self, detail: str, *, limit: Limit | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(status_code=429, detail=detail, headers=headers)
        self.limit = limit


def _rate_limit_exceeded_handler(request: Request, exc: Exception) -> Response:
    """slowapi's handler: ``{"error": "Rate limit exceeded: 5 per 1 minute"}`` with status 429."""
    if not isinstance(exc, RateLimitExceeded):
        raise exc
    return JSONResponse({"error": f"Rate limit exceeded: {exc.detail}"}, status_code=429, headers=exc.headers)


def _of_request(function: Callable[..., Any], what: str) -> Callable[[Request], Any]:
    """``function`` called with the request, whether it takes one or not (slowapi allows both)."""
    if not callable(function):
        raise InvalidArgument(f"{what} must be a callable, got {function!r}")
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return function
    if parameters:
        return function
    return lambda _request: function()


def _key_of(function: Callable[..., Any]) -> KeySource:
    # The peer's address is what our "ip" key counts: no call into Python per request, and the
    # plugins' client-address handling (IPv6 kept whole here, as slowapi keeps it).
    if function is get_remote_address:
        return "ip"
    return _of_request(function, "key_func")


@dataclass(frozen=True, eq=False, kw_only=True)
class _Declared:
    """One ``limit``/``shared_limit`` decoration (or the defaults, or the application limits)."""

    limits: tuple[Limit, ...]
    key: KeySource
    shared_scope: str | None = None
    per_method: bool = False
    methods: frozenset[str] | None = None
    error_message: str | Callable[[], str] | None = None
    exempt_when: Callable[[Request], Any] | None = None
    cost: int | Callable[[Request], Any] = 1
    override_defaults: bool = True
    _rules: dict[str, Rule] = field(default_factory=dict, repr=False)

    def applies(self, method: str, request: Request) -> bool:
        if self.methods is not None and method not in self.methods:
            return False
        return self.exempt_when is None or not self.exempt_when(request)

    def rule(self, scope: str, algorithm: Algorithm) -> Rule:
        rule = self._rules.get(scope)
        if rule is None:
            if len(self._rules) >= _CACHE_SIZE:
                self._rules.clear()
            rule = self._rules[scope] = Rule(
                name=scope, scope=scope, limits=self.limits, algorithm=algorithm, key=self.key, cost=self.cost
            )
        return rule

    def message(self, limit: Limit) -> str:
        message = self.error_message
        if message is None:
            return limit_text(limit)
        return message() if callable(message) else message


# A route's plan, what it reads from a request, its limits by item name, and its fast path if any.
_Planned = tuple[RoutePlan, Needs, dict[str, tuple[_Declared, Limit]], SingleCheck | None]


class Limiter:
    """slowapi's ``Limiter``, with the same arguments, checking on this library's engine.

    ``storage_uri`` takes our storage URLs (``memory://``, ``redis://...``);
    without it ``BISMAN_RATELIMIT_STORAGE_URL`` is read, else memory.
    ``strategy`` takes slowapi's names (``fixed-window``, ``moving-window``)
    or ours; the default is ours, ``sliding_window``. ``enabled`` defaults
    to ``BISMAN_RATELIMIT_ENABLED``, else on. Ours on top: ``limiter`` (an
    ``AsyncLimiter`` to use instead of ``storage_uri``), ``on_outage`` and
    ``metrics``.
    """

    def __init__(
        self,
        key_func: Callable[..., Any],
        *,
        default_limits: Sequence[LimitValue] = (),
        application_limits: Sequence[LimitValue] = (),
        headers_enabled: bool = False,
        strategy: str | None = None,
        storage_uri: str | None = None,
        storage_options: dict[str, Any] | None = None,
        auto_check: bool = True,
        swallow_errors: bool = False,
        in_memory_fallback_enabled: bool = False,
        key_prefix: str = "",
        enabled: bool | None = None,
        key_style: str = "url",
        limiter: AsyncLimiter | None = None,
        on_outage: OutageReaction | OutagePolicy | None = None,
        metrics: RateLimitMetrics | None = None,
    ) -> None:
        self._key_func = _key_of(key_func)
        if strategy is not None and strategy not in _STRATEGIES:
            raise InvalidArgument(
                f"unknown strategy {strategy!r}: expected one of {', '.join(sorted(_STRATEGIES))}"
            )
        self._algorithm: Algorithm = _STRATEGIES[strategy] if strategy is not None else "sliding_window"
        if key_style not in ("url", "endpoint"):
            raise InvalidArgument(f"key_style must be 'url' or 'endpoint', got {key_style!r}")
        self._key_style = key_style
        if not isinstance(key_prefix, str):
            raise InvalidArgument(f"key_prefix must be a string, got {key_prefix!r}")
        self._key_prefix = key_prefix
        self.enabled = enabled_from_env(enabled)
        self._headers_enabled = bool(headers_enabled)
        self._header_style: HeaderStyle = "legacy" if headers_enabled else "none"
        self._auto_check = auto_check
        self._default_limits = tuple(self._group(value, "default_limits") for value in default_limits)
        self._application_limits = tuple(
            self._group(value, "application_limits", shared_scope="global") for value in application_limits
        )
        if limiter is not None and storage_uri is not None:
            raise InvalidArgument("give limiter or storage_uri, not both")
        if limiter is None:
            url = storage_uri or storage_url_from_env("memory://") or "memory://"
            # Built now, connected on first use: a switched-off limiter never talks to the storage.
            limiter = AsyncLimiter.from_url(url, **(storage_options or {}))
        elif not isinstance(limiter, AsyncLimiter):
            raise InvalidArgument(f"limiter must be an AsyncLimiter, got {limiter!r}")
        self.limiter = limiter
        if on_outage is None:
            # slowapi raises on a storage error unless told to swallow it; ours lets the request through.
            on_outage = "fallback" if in_memory_fallback_enabled else "open"
        self._on_outage = OutagePolicy.of(on_outage)
        self._outages = OutageLog(logger)
        self._local: AsyncLimiter | None = None
        # Connections to the storage, opened by the first request (the others wait for it).
        self._warming: asyncio.Future[None] | None = None
        self._metrics = metrics
        self._facts = Facts(client_ip=ClientIP(ipv6_prefix=128))
        self._route_limits: dict[str, list[_Declared]] = {}
        self._exempt_routes: set[str] = set()
        self._choices: dict[tuple[Any, ...], tuple[tuple[_Declared, str], ...]] = {}
        self._plans: dict[tuple[Any, ...], _Planned] = {}

    def _group(self, value: Any, what: str, **options: Any) -> _Declared:
        if callable(value):
            raise InvalidArgument(
                f"{what}: limits given as callables are not supported here; give the limit strings"
            )
        return _Declared(limits=_parse(value), key=self._key_func, override_defaults=False, **options)

    # -- decorators

    def limit(
        self,
        limit_value: LimitValue,
        key_func: Callable[..., Any] | None = None,
        per_method: bool = False,
        methods: Sequence[str] | None = None,
        error_message: str | Callable[[], str] | None = None,
        exempt_when: Callable[..., Any] | None = None,
        cost: int | Callable[..., Any] = 1,
        override_defaults: bool = True,
    ) -> Callable[[F], F]:
        """Limit one route: ``@limiter.limit("5/minute")`` (the endpoint takes ``request: Request``)."""
        return self._decorator(
            limit_value,
            key_func=key_func,
            per_method=per_method,
            methods=methods,
            error_message=error_message,
            exempt_when=exempt_when,
            cost=cost,
            override_defaults=override_defaults,
        )

    def shared_limit(
        self,
        limit_value: LimitValue,
        scope: str,
        key_func: Callable[..., Any] | None = None,
        error_message: str | Callable[[], str] | None = None,
        exempt_when: Callable[..., Any] | None = None,
        cost: int | Callable[..., Any] = 1,
        override_defaults: bool = True,
    ) -> Callable[[F], F]:
        """One limit shared by every route decorated with the same ``scope``."""
        if not isinstance(scope, str) or not scope:
            raise InvalidArgument(f"shared_limit needs a scope name (a non-empty string), got {scope!r}")
        return self._decorator(
            limit_value,
            key_func=key_func,
            shared_scope=scope,
            error_message=error_message,
            exempt_when=exempt_when,
            cost=cost,
            override_defaults=override_defaults,
        )

    def exempt(self, obj: F) -> F:
        """Never limit this route, not even by the default or application limits."""
        self._exempt_routes.add(_name_of(obj))
        return obj

    def _decorator(
        self,
        limit_value: LimitValue,
        *,
        key_func: Callable[..., Any] | None,
        shared_scope: str | None = None,
        per_method: bool = False,
        methods: Sequence[str] | None = None,
        error_message: str | Callable[[], str] | None = None,
        exempt_when: Callable[..., Any] | None = None,
        cost: int | Callable[..., Any] = 1,
        override_defaults: bool = True,
    ) -> Callable[[F], F]:
        if callable(limit_value):
            raise InvalidArgument("limits given as callables are not supported here; give the limit string")
        if isinstance(cost, bool) or not (callable(cost) or (isinstance(cost, int) and cost >= 1)):
            raise InvalidArgument(f"cost must be a whole number >= 1 or a callable, got {cost!r}")
        declared = _Declared(
            limits=_parse(limit_value),
            key=_key_of(key_func) if key_func is not None else self._key_func,
            shared_scope=shared_scope,
            per_method=bool(per_method),
            methods=frozenset(m.upper() for m in methods) if methods is not None else None,
            error_message=error_message,
            exempt_when=_of_request(exempt_when, "exempt_when") if exempt_when is not None else None,
            cost=cost if isinstance(cost, int) else _of_request(cost, "cost"),
            override_defaults=override_defaults,
        )

        def decorate(func: F) -> F:
            name = _name_of(func)
            position = _request_position(func, name)
            self._route_limits.setdefault(name, []).append(declared)
            return self._wrap(func, name, position)  # type: ignore[return-value]

        return decorate

    def _wrap(self, func: Callable[..., Any], name: str, position: int) -> Callable[..., Any]:
        is_async = inspect.iscoroutinefunction(func)

        @functools.wraps(func)
        async def limited(*args: Any, **kwargs: Any) -> Any:
            if not self.enabled:
                return await _run(func, is_async, args, kwargs)
            request = kwargs.get("request", args[position] if len(args) > position else None)
            if not isinstance(request, Request):
                raise ConfigurationError(f"{name} must be called with a starlette Request as `request`")
            state = request.scope.setdefault("state", {})
            verdict: Verdict | None = None
            if self._auto_check and not state.get(_STATE_FLAG):
                template = getattr(request.scope.get("route"), "path_format", None)
                verdict = await self._check(request.scope, name, template, in_middleware=False)
                state[_STATE_FLAG] = True
            # The endpoint, inlined: this runs on every request.
            response = (
                await func(*args, **kwargs) if is_async else await run_in_threadpool(func, *args, **kwargs)
            )
            if verdict is not None and self._headers_enabled and verdict.headers:
                target = response if isinstance(response, Response) else kwargs.get("response")
                if not isinstance(target, Response):
                    raise ConfigurationError(
                        f"headers_enabled needs {name} to return a Response, "
                        "or to take `response: Response` to carry them"
                    )
                for header, value in verdict.headers:
                    target.headers.append(header, value)
            return response

        return limited

    # -- checking

    def _chosen(
        self, scope: Scope, name: str | None, template: str | None, method: str, in_middleware: bool
    ) -> tuple[tuple[_Declared, str], ...]:
        """The declarations that may apply to a route and method, with the scope each counts under."""
        cache_key = (name, template, method, in_middleware)
        found = self._choices.get(cache_key)
        if found is not None:
            return found
        route = self._route_limits.get(name, []) if name is not None else []
        # Without a template (a Starlette route seen by the decorator alone) the endpoint names the route.
        base = (template or name or "unrouted") if self._key_style == "url" else (name or "unrouted")
        chosen: list[tuple[_Declared, str]] = []
        if in_middleware:
            chosen.extend((declared, "global") for declared in self._application_limits)
        if not route or all(not declared.override_defaults for declared in route):
            chosen.extend((declared, base) for declared in self._default_limits)
        taken = {where for _, where in chosen}
        for declared in route:
            where = declared.shared_scope or base
            if not declared.shared_scope:
                # Several declarations on one route count apart: number them.
                number = 1
                while where in taken:
                    number += 1
                    where = f"{base}#{number}"
                taken.add(where)
            chosen.append((declared, f"{where}:{method}" if declared.per_method else where))
        found = tuple((d, w) for d, w in chosen if d.methods is None or method in d.methods)
        if len(self._choices) >= _CACHE_SIZE:
            self._choices.clear()
        self._choices[cache_key] = found
        return found

    def _plan(self, scope: Scope, name: str | None, template: str | None, in_middleware: bool) -> _Planned:
        method = "GET" if scope["method"] == "HEAD" else scope["method"]
        chosen = self._chosen(scope, name, template, method, in_middleware)
        # exempt_when decides per request; the plans it leads to are few and cached.
        active: tuple[int, ...] | None = None
        if any(declared.exempt_when is not None for declared, _ in chosen):
            request = Request(scope)
            active = tuple(i for i, (declared, _) in enumerate(chosen) if declared.applies(method, request))
        cache_key = (name, template, method, in_middleware, active)
        found = self._plans.get(cache_key)
        if found is not None:
            return found
        rules: list[Rule] = []
        items: dict[str, tuple[_Declared, Limit]] = {}
        for i in range(len(chosen)) if active is None else active:
            declared, where = chosen[i]
            rule = declared.rule(self._key_prefix + where, self._algorithm)
            rules.append(rule)
            for item, limit in zip(rule.item_names, rule.limits, strict=True):
                items[item] = (declared, limit)
        plan = RoutePlan(
            route=template, rules=tuple(rules), global_policy=None, header_style=self._header_style
        )
        found = (plan, Needs(plan), items, SingleCheck.of(plan, client_ip=self._facts.client_ip))
        if len(self._plans) >= _CACHE_SIZE:
            self._plans.clear()
        self._plans[cache_key] = found
        return found

    async def _check(
        self, scope: Scope, name: str | None, template: str | None, *, in_middleware: bool
    ) -> Verdict:
        """Check every limit that applies to this request in one call; raise when one refuses."""
        if name in self._exempt_routes:
            return _GO_ON
        plan, needs, items, single = self._plan(scope, name, template, in_middleware)
        if not plan.limited:
            return _GO_ON
        warming = self._warming
        if warming is None or not warming.done():
            await self._warm()
        facts = self._facts
        unreached: Verdict | None
        if single is not None:
            # One limit on the client address: one hit, no Evaluation.
            args = single.hit_args(*facts.peer(scope))
            try:
                verdict = single.verdict(await self.limiter.hit(*args))
            except StorageError as exc:
                unreached = self._unreached(scope, (args[0],), exc)
                if unreached is None:
                    unreached = single.verdict(await self._local_limiter().hit(*args))
                verdict = unreached
            else:
                if self._outages.down:
                    self._outages.recovered()
        else:
            evaluation = await facts.evaluate(needs, scope, facts.ip(scope))
            try:
                verdict = await adecide(self.limiter, evaluation)
            except StorageError as exc:
                unreached = self._unreached(scope, evaluation.keys, exc)
                if unreached is None:
                    unreached = await adecide(self._local_limiter(), evaluation.restart())
                verdict = unreached
            else:
                if self._outages.down:
                    self._outages.recovered()
        if self._metrics is not None:
            self._metrics.record_decision(route=template, allowed=verdict.allowed, reason=verdict.reason)
        if verdict.status == 429:
            declared, limit = items[verdict.violated[0]]
            raise RateLimitExceeded(declared.message(limit), limit=limit, headers=dict(verdict.headers))
        if verdict.status == 503:
            problem = verdict.problem()
            raise HTTPException(
                503, detail=problem.detail if problem is not None else None, headers=dict(verdict.headers)
            )
        return verdict

    def _unreached(self, scope: Scope, keys: Sequence[str], exc: StorageError) -> Verdict | None:
        """The verdict the outage policy gives a request the storage could not decide; None: ask the
        counters of this process."""
        what = f"{scope['method']} {scope['path']}"
        reaction = outage_reaction(self._on_outage, keys, exc, what, self._outages, self._metrics)
        if reaction == "open":
            return _GO_ON
        if reaction == "closed":
            return UNAVAILABLE
        return None

    def _local_limiter(self) -> AsyncLimiter:
        if self._local is None:
            self._local = AsyncLimiter()
        return self._local

    async def _warm(self) -> None:
        """Open the storage's connections once: fifty first requests would each open one, and time
        out on each other's handshakes."""
        if self._warming is None:
            self._warming = asyncio.ensure_future(self._open_connections())
        await asyncio.shield(self._warming)

    async def _open_connections(self) -> None:
        try:
            await self.limiter.warm()
        except StorageError as exc:
            logger.warning("could not open connections to the rate-limit storage in advance: %s", exc)

    async def aclose(self) -> None:
        """Close the storage's connections."""
        await self.limiter.aclose()


class SlowAPIMiddleware:
    """Checks the default and application limits (and the decorated routes' own, in the same call).

    Pure ASGI; needs ``app.state.limiter``. A refusal is answered by the
    app's handler for :class:`RateLimitExceeded`, else by
    :func:`_rate_limit_exceeded_handler`.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._routes: dict[tuple[str, str, str], tuple[str | None, str | None]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        owner = scope.get("app")
        limiter = getattr(getattr(owner, "state", None), "limiter", None)
        if not isinstance(limiter, Limiter):
            raise ConfigurationError(
                "SlowAPIMiddleware needs the Limiter on the app: app.state.limiter = limiter"
            )
        if not limiter.enabled:
            await self.app(scope, receive, send)
            return
        template, name = self._resolve(owner, scope)
        if name is None or name in limiter._exempt_routes:
            await self.app(scope, receive, send)
            return
        try:
            verdict = await limiter._check(scope, name, template, in_middleware=True)
        except HTTPException as exc:
            await self._refuse(owner, scope, receive, send, exc)
            return
        scope.setdefault("state", {})[_STATE_FLAG] = True
        await call_with_headers(self.app, scope, receive, send, encode_headers(verdict.headers))

    def _resolve(self, owner: Any, scope: Scope) -> tuple[str | None, str | None]:
        """The route template and endpoint name of a request (cached per path)."""
        cache_key = (scope["method"], scope["path"], scope.get("root_path", ""))
        found = self._routes.get(cache_key)
        if found is not None:
            return found
        routes = getattr(getattr(owner, "router", owner), "routes", None) or ()
        template, leaf = resolve(routes, dict(scope))
        endpoint = getattr(leaf, "endpoint", None)
        found = (template, _name_of(endpoint) if endpoint is not None else None)
        if not uses_hosts(routes):
            if len(self._routes) >= _CACHE_SIZE:
                self._routes.clear()
            self._routes[cache_key] = found
        return found

    @staticmethod
    async def _refuse(owner: Any, scope: Scope, receive: Receive, send: Send, exc: HTTPException) -> None:
        handlers = getattr(owner, "exception_handlers", None) or {}
        handler = handlers.get(type(exc))
        if handler is None:
            handler = _rate_limit_exceeded_handler if isinstance(exc, RateLimitExceeded) else _problem
        response = handler(Request(scope, receive), exc)
        if inspect.isawaitable(response):
            response = await response
        await response(scope, receive, send)


class SlowAPIASGIMiddleware(SlowAPIMiddleware):
    """slowapi's other name for the middleware: both are pure ASGI here."""


def _problem(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, HTTPException):
        raise exc
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


def _parse(value: LimitValue) -> tuple[Limit, ...]:
    if isinstance(value, str):
        return parse_limits(value)
    return parse_limits(list(value))


def _name_of(function: Any) -> str:
    return f"{getattr(function, '__module__', '?')}.{getattr(function, '__qualname__', repr(function))}"


def _request_position(func: Callable[..., Any], name: str) -> int:
    for index, parameter in enumerate(inspect.signature(func).parameters.values()):
        if parameter.name in ("request", "websocket"):
            return index
    raise ConfigurationError(f'No "request" or "websocket" argument on function "{name}"')


async def _run(func: Callable[..., Any], is_async: bool, args: Any, kwargs: Any) -> Any:
    if is_async:
        return await func(*args, **kwargs)
    return await run_in_threadpool(func, *args, **kwargs)
