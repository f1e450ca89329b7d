"""``RateLimitMiddleware``: a pure ASGI middleware for Starlette and FastAPI apps.

Per request it finds the route template the router would pick (cached per
path), checks every limit that applies in one ``hit_many`` call, and either
answers 429/503 itself or passes the request on, adding the rate-limit
header fields to the response in a local ``send`` wrapper. Lifespan and
other scopes pass straight through. WebSocket connection attempts are
limited like requests, and refused with close code 1008 (1013 when the
global limit sheds load); messages may be limited too.

When the storage fails, the outage policy (``on_outage``, or ``fail_open``)
says per request (and per WebSocket message) whether to let it through,
refuse it with 503 (close 1013), or decide it on counters in this process.
The failures are logged by state with a count per interval
(:class:`~bisman_ratelimit.web.OutageLog`), not one line per request.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.routing import BaseRoute, Host, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bisman_ratelimit import AsyncLimiter, InvalidArgument, StorageError
from bisman_ratelimit.core import Algorithm, Limit, LimitLike, OutagePolicy, OutageReaction, parse_limits
from bisman_ratelimit.web import (
    ENABLED_ENV,
    UNAVAILABLE,
    ClientIP,
    CostSource,
    Evaluation,
    HeaderName,
    HeaderStyle,
    KeySource,
    OutageLog,
    Planner,
    RateLimitConfig,
    RoutePlan,
    Rule,
    ShadowLog,
    SingleCheck,
    TrustedProxies,
    Verdict,
    adecide,
    enabled_from_env,
    load_config,
    note_memory_default,
    outage_reaction,
)

from ._context import Facts, Needs, UserGetter, header_value
from ._responses import OnLimited, call_with_headers, encode_headers, refuse
from ._routes import resolve, uses_hosts
from ._spec import ENFORCED, EVERYTHING, LimitSpec, declared_on

if TYPE_CHECKING:
    from bisman_ratelimit.metrics import RateLimitMetrics


logger = logging.getLogger("bisman_ratelimit.starlette")

_CACHE_SIZE = 10_000
_GO_ON = Verdict(200, ())


class _Route:
    """The cached outcome of routing one method and path."""

    __slots__ = ("messages", "needs", "policy_header", "single", "specs", "template")

    def __init__(
        self, needs: Needs, specs: tuple[LimitSpec, ...], messages: Needs | None, *, client_ip: ClientIP
    ) -> None:
        self.needs = needs
        self.specs = specs
        self.messages = messages
        self.template = needs.plan.route
        # The fast path here needs the client to be the peer. It serves endpoint declarations too:
        # their wrappers learn from ENFORCED that the check is done.
        single = None
        if not client_ip.reads_headers:
            single = SingleCheck.of(needs.plan, client_ip=client_ip, headers=True)
        self.single = single
        header = needs.plan.policy_header or ""
        self.policy_header = (b"ratelimit-policy", header.encode("latin-1"))


class RateLimitMiddleware:
    """Rate limits for every route of an ASGI app.

    Give ``config`` (a limits file or a loaded ``RateLimitConfig``), or
    ``default_limits`` with ``key``, ``algorithm``, ``cost`` and
    ``global_limits``. ``limiter`` defaults to an in-memory ``AsyncLimiter``.
    ``metrics`` (a ``bisman_ratelimit.metrics._prometheus.RateLimitMetrics``) counts every
    decision by route template and reason. ``enabled=False`` (else
    ``BISMAN_RATELIMIT_ENABLED``, else ``enabled`` in the limits file)
    switches limiting off. See docs/starlette.md for the rest.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        limiter: AsyncLimiter | None = None,
        config: str | os.PathLike[str] | RateLimitConfig | None = None,
        default_limits: LimitLike | Sequence[LimitLike] | None = None,
        key: KeySource = "ip",
        algorithm: Algorithm = "sliding_window",
        cost: CostSource = 1,
        global_limits: LimitLike | Sequence[LimitLike] | None = None,
        trusted_proxies: TrustedProxies = None,
        forwarded_header: HeaderName = "x-forwarded-for",
        ipv6_prefix: int = 64,
        ipv4_prefix: int = 32,
        user: UserGetter | None = None,
        api_key_header: str = "x-api-key",
        headers: HeaderStyle = "draft",
        on_limited: OnLimited | None = None,
        fail_open: bool | None = None,
        on_outage: OutageReaction | OutagePolicy | None = None,
        metrics: RateLimitMetrics | None = None,
        websocket_message_limits: LimitLike | Sequence[LimitLike] | None = None,
        routes: Sequence[BaseRoute] | None = None,
        enabled: bool | None = None,
    ) -> None:
        self.app = app
        if limiter is None:
            limiter = AsyncLimiter()
            note_memory_default(logger)
        elif not isinstance(limiter, AsyncLimiter):
            raise InvalidArgument(
                f"RateLimitMiddleware needs an AsyncLimiter (a sync client would block the event loop), "
                f"got {limiter!r}"
            )
        self.limiter = limiter
        if config is not None and not isinstance(config, RateLimitConfig):
            config = load_config(config)
        self.enabled = switched_on(enabled, config)
        self.planner = Planner(
            config=config,
            default_limits=default_limits,
            key=key,
            algorithm=algorithm,
            cost=cost,
            global_limits=global_limits,
            header_style=headers,
        )
        self.facts = Facts(
            client_ip=ClientIP(
                trusted_proxies=trusted_proxies,
                header=forwarded_header,
                ipv6_prefix=ipv6_prefix,
                ipv4_prefix=ipv4_prefix,
            ),
            api_key_header=api_key_header,
            user=user,
        )
        if on_limited is not None and not callable(on_limited):
            raise InvalidArgument(f"on_limited must be a callable (connection, verdict), got {on_limited!r}")
        self.on_limited = on_limited
        if on_outage is not None and fail_open is not None:
            raise InvalidArgument("give on_outage or fail_open, not both: on_outage='open' is fail_open=True")
        self.on_outage = (
            OutagePolicy.of(on_outage)
            if on_outage is not None
            else OutagePolicy.from_fail_open(True if fail_open is None else fail_open)
        )
        # Storage failures are logged by state and counted, not one line per request.
        self.outages = OutageLog(logger)
        # What shadow limits would refuse, at WARNING so that default logging shows it; not per request.
        self.shadows = ShadowLog(logger)
        # Counters of this process, for requests the outage policy sends to the fallback.
        self._local: AsyncLimiter | None = None
        self.metrics = metrics
        self._message_limits: tuple[Limit, ...] | None = None
        if isinstance(websocket_message_limits, (str, Limit)):
            self._message_limits = parse_limits(websocket_message_limits)
        elif websocket_message_limits is not None:
            self._message_limits = parse_limits(list(websocket_message_limits))
        self._message_key = key
        self._routes = routes
        self._user_given = user is not None
        self._user_checked = False
        self._hosts: bool | None = None
        self._cache: dict[tuple[str, str, str], _Route] = {}
        # Connections to the storage, opened at startup (or by the first requests, which wait for it).
        self._warming: asyncio.Future[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.enabled:
            await self._pass(scope, receive, send)
            return
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await self._websocket(scope, receive, send)
            elif scope["type"] == "lifespan":
                await self.app(scope, self._warm_on_startup(scope, receive), send)
            else:
                await self.app(scope, receive, send)
            return
        warming = self._warming
        if warming is None or not warming.done():
            await self._warm()
        route = self._cache.get((scope["method"], scope["path"], scope.get("root_path", "")))
        if route is None:
            route = self._route(scope, scope["method"])
        single = route.single
        if single is None:
            await self._http(route, scope, receive, send)
            return
        # The common case, kept in this one frame: one limit on the client address or a header.
        client = scope.get("client")
        header = single.asgi_header
        if header is None:
            args = single.hit_args(client[0] if client else None)
        else:
            args = single.hit_args_by(header_value(scope["headers"], header), client[0] if client else None)
        # An endpoint that declared this limit finds it done (ENFORCED); the others pay nothing.
        token = ENFORCED.set(route.specs) if route.specs else None
        try:
            try:
                decision = await self.limiter.hit(*args)
            except StorageError as exc:
                reaction = outage_reaction(
                    self.on_outage, (args[0],), exc, _what(scope), self.outages, self.metrics
                )
                if reaction != "fallback":
                    await self._outage(reaction, route, scope, receive, send)
                    return
                decision = await self._local_limiter().hit(*args)
            else:
                if self.outages.down:
                    self.outages.recovered()
            metrics = self.metrics
            if not decision.allowed:
                if metrics is not None:
                    metrics.record_decision(route=route.template, allowed=False, reason="client")
                await refuse(scope, receive, send, single.verdict(decision), self.on_limited)
                return
            if metrics is not None:
                metrics.record_decision(route=route.template, allowed=True)
            if not single.draft:
                await self.app(scope, receive, send)
                return
            added = (route.policy_header, (b"ratelimit", single.ratelimit(decision).encode("latin-1")))
            await call_with_headers(self.app, scope, receive, send, added)
        finally:
            if token is not None:
                ENFORCED.reset(token)

    async def _pass(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Limiting is switched off: no check, no header, no storage traffic; declarations pass too."""
        token = ENFORCED.set(EVERYTHING)
        try:
            await self.app(scope, receive, send)
        finally:
            ENFORCED.reset(token)

    async def _outage(
        self, reaction: OutageReaction, route: _Route, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """Let the request through, or refuse it with 503, as the outage policy said."""
        verdict = _GO_ON if reaction == "open" else UNAVAILABLE
        if self.metrics is not None:
            _record(self.metrics, route, verdict)
        if verdict.allowed:
            await self.app(scope, receive, send)
        else:
            await refuse(scope, receive, send, verdict, self.on_limited)

    def _warm_on_startup(self, scope: Scope, receive: Receive) -> Receive:
        async def receive_after_warming() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._check_user_source(scope.get("app"))
                await self._warm()
            return message

        return receive_after_warming

    def _check_user_source(self, app: Any) -> None:
        """Say once, at startup (or the first request), that limits keyed by user have no user.

        Without ``scope["user"]`` every request to them fails with a ``ConfigurationError``: a
        500 per request is a poor way to learn that the authentication middleware is missing.
        Only an app whose middleware list is known (Starlette's ``user_middleware``) is judged.
        """
        if self._user_checked:
            return
        self._user_checked = True
        stack = getattr(app, "user_middleware", None)
        if self._user_given or not isinstance(stack, list):
            return
        classes = [getattr(entry, "cls", None) for entry in stack]
        ours = next((i for i, cls in enumerate(classes) if cls is RateLimitMiddleware), None)
        if ours is None:
            return  # this middleware wraps the app some other way: what runs before it is unknown
        # user_middleware lists the outermost first: these run before this middleware.
        if any(isinstance(cls, type) and issubclass(cls, AuthenticationMiddleware) for cls in classes[:ours]):
            return
        routes = self._routes
        if routes is None:
            routes = getattr(getattr(app, "router", app), "routes", None) or ()
        names = self.planner.by_user(_declared_rules(routes, ""))
        if names:
            logger.error(
                "rate limits keyed or exempted by user (%s) need scope['user'], but no "
                "AuthenticationMiddleware runs before RateLimitMiddleware: requests they apply to will "
                "fail with 500. Add it after RateLimitMiddleware, so that it runs first "
                "(app.add_middleware(AuthenticationMiddleware, backend=...)), or pass "
                "RateLimitMiddleware(user=<callable of the request>)",
                ", ".join(names),
            )

    async def _warm(self) -> None:
        """Open the storage's connections once; everyone else waits for that.

        Fifty first requests on cold connections would each open one, and
        time out on each other's handshakes.
        """
        if self._warming is None:
            self._warming = asyncio.ensure_future(self._open_connections())
        await asyncio.shield(self._warming)

    async def _open_connections(self) -> None:
        try:
            await self.limiter.warm()
        except StorageError as exc:
            logger.warning("could not open connections to the rate-limit storage in advance: %s", exc)

    def _local_limiter(self) -> AsyncLimiter:
        if self._local is None:
            self._local = AsyncLimiter()
        return self._local

    async def _decide(self, evaluation: Evaluation, what: str) -> Verdict:
        """The verdict of ``evaluation``, from the storage or as the outage policy says
        (``what`` names the request in the log)."""
        try:
            verdict = await adecide(self.limiter, evaluation)
        except StorageError as exc:
            reaction = outage_reaction(self.on_outage, evaluation.keys, exc, what, self.outages, self.metrics)
            if reaction != "fallback":
                return _GO_ON if reaction == "open" else UNAVAILABLE
            return await adecide(self._local_limiter(), evaluation.restart())
        if self.outages.down:
            self.outages.recovered()
        return verdict

    # -- routing

    def _route(self, scope: Scope, method: str) -> _Route:
        cache_key = (method, scope["path"], scope.get("root_path", ""))
        found = self._cache.get(cache_key)
        if found is not None:
            return found
        routes = self._routes
        if routes is None:
            app = scope.get("app")
            routes = getattr(getattr(app, "router", app), "routes", None) or ()
        if self._hosts is None:
            self._hosts = uses_hosts(routes)
            self._check_user_source(scope.get("app"))  # if no lifespan startup did
        template, leaf = resolve(routes, dict(scope))
        endpoint = getattr(leaf, "endpoint", None)
        if endpoint is None and isinstance(leaf, Mount):
            endpoint = leaf.app  # a mounted app that is not a router, e.g. MetricsEndpoint
        marker = declared_on(endpoint, method, getattr(leaf, "dependant", None))
        base = template or scope["path"]
        # The route's file entry (for any method) and each declaration on its endpoint are policies of
        # their own, with counters of their own: the entry is named after the template, the
        # declarations numbered after it (#2, ...).
        config = self.planner.config
        listed = config is not None and template is not None and config.lists(template)
        rules = [
            spec.bind(base if i == 0 else f"{base}#{i + 1}")
            for i, spec in enumerate(marker.specs, start=1 if listed else 0)
        ]
        plan = self.planner.plan(template, method, tuple(rules), exempt=marker.exempt)
        messages = None
        if method == "WEBSOCKET" and self._message_limits is not None and not plan.exempt:
            message_rule = Rule(
                name="messages",
                scope=f"{template or scope['path']}#messages",
                limits=self._message_limits,
                key=self._message_key,
            )
            messages = Needs(
                RoutePlan(route=template, rules=(message_rule,), global_policy=None, header_style="none")
            )
        found = _Route(Needs(plan), marker.specs, messages, client_ip=self.facts.client_ip)
        if not self._hosts:
            if len(self._cache) >= _CACHE_SIZE:
                self._cache.clear()  # paths with ids are many; the routes behind them are few
            self._cache[cache_key] = found
        return found

    # -- HTTP

    async def _http(self, route: _Route, scope: Scope, receive: Receive, send: Send) -> None:
        if route.specs:
            token = ENFORCED.set(route.specs)
            try:
                await self._http_checked(route, scope, receive, send)
            finally:
                ENFORCED.reset(token)
        else:
            await self._http_checked(route, scope, receive, send)

    async def _http_checked(self, route: _Route, scope: Scope, receive: Receive, send: Send) -> None:
        needs = route.needs
        if not needs.plan.limited:
            await self.app(scope, receive, send)
            return
        facts = self.facts
        evaluation = await facts.evaluate(needs, scope, facts.ip(scope))
        limiter = self.limiter
        try:
            verdict = await adecide(limiter, evaluation)
        except StorageError as exc:
            reaction = outage_reaction(
                self.on_outage, evaluation.keys, exc, _what(scope), self.outages, self.metrics
            )
            if reaction != "fallback":
                await self._outage(reaction, route, scope, receive, send)
                return
            limiter = self._local_limiter()
            evaluation = evaluation.restart()
            verdict = await adecide(limiter, evaluation)
        else:
            if self.outages.down:
                self.outages.recovered()
        if self.metrics is not None:
            _record(self.metrics, route, verdict)
        if verdict.status != 200:
            await refuse(scope, receive, send, verdict, self.on_limited)
            return
        if verdict.shadowed:
            self.shadows.would_refuse(verdict.shadowed, _what(scope))
        added = encode_headers(verdict.headers)

        if evaluation.deducts:

            async def send_counted(message: Message) -> None:
                if message["type"] == "http.response.start":
                    evaluation.on_response(message["status"])
                    try:
                        after = await adecide(limiter, evaluation)
                    except StorageError as exc:
                        self.outages.failed(exc, None, _what(scope))
                        after = verdict
                    message["headers"] = [*message.get("headers", ()), *encode_headers(after.headers)]
                await send(message)

            await self.app(scope, receive, send_counted)
            return
        await call_with_headers(self.app, scope, receive, send, added)

    # -- WebSockets

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._route(scope, "WEBSOCKET")
        if route.specs:
            token = ENFORCED.set(route.specs)
            try:
                await self._websocket_checked(route, scope, receive, send)
            finally:
                ENFORCED.reset(token)
        else:
            await self._websocket_checked(route, scope, receive, send)

    async def _websocket_checked(self, route: _Route, scope: Scope, receive: Receive, send: Send) -> None:
        facts = self.facts
        ip = facts.ip(scope)
        added: list[tuple[bytes, bytes]] = []
        if route.needs.plan.limited:
            evaluation = await facts.evaluate(route.needs, scope, ip)
            verdict = await self._decide(evaluation, "a WebSocket")
            if self.metrics is not None:
                _record(self.metrics, route, verdict)
            if verdict.status != 200:
                await _refuse_websocket(receive, send, verdict)
                return
            added = encode_headers(verdict.headers)
        if route.messages is not None:
            receive = self._limit_messages(route.messages, scope, ip, receive, send)
        await call_with_headers(self.app, scope, receive, send, added, start="websocket.accept")

    def _limit_messages(
        self, needs: Needs, scope: Scope, ip: str | None, receive: Receive, send: Send
    ) -> Receive:
        facts = self.facts

        async def receive_limited() -> Message:
            message = await receive()
            if message["type"] == "websocket.receive":
                verdict = await self._decide(await facts.evaluate(needs, scope, ip), "a WebSocket message")
                if verdict.status != 200:
                    reason = _reason(verdict)
                    code = 1013 if verdict.status == 503 else 1008  # 1013: try again later
                    await send({"type": "websocket.close", "code": code, "reason": reason})
                    return {"type": "websocket.disconnect", "code": code, "reason": reason}
            return message

        return receive_limited


def _declared_rules(routes: Sequence[BaseRoute], prefix: str) -> Iterator[Rule]:
    """The rules declared on the endpoints of ``routes`` (decorators, FastAPI dependencies)."""
    for route in routes:
        if isinstance(route, (Mount, Host)):
            inner = prefix + route.path if isinstance(route, Mount) else prefix
            yield from _declared_rules(route.routes, inner)
            continue
        endpoint = getattr(route, "endpoint", None)
        path = prefix + str(getattr(route, "path", ""))
        for method in getattr(route, "methods", None) or ("GET",):
            for spec in declared_on(endpoint, method, getattr(route, "dependant", None)).specs:
                yield Rule.declared(spec.options, scope=spec.group or path)


def switched_on(explicit: bool | None, config: RateLimitConfig | None) -> bool:
    """Whether limiting is on: the argument, else ``BISMAN_RATELIMIT_ENABLED``, else the limits file."""
    unset = not os.environ.get(ENABLED_ENV, "").strip()
    if explicit is None and config is not None and not config.enabled and unset:
        explicit = False
    return enabled_from_env(explicit)


def _record(metrics: RateLimitMetrics, route: _Route, verdict: Verdict) -> None:
    metrics.record_decision(route=route.template, allowed=verdict.allowed, reason=verdict.reason)


def _what(scope: Scope) -> str:
    return f"{scope['method']} {scope['path']}"


def _reason(verdict: Verdict) -> str:
    problem = verdict.problem()
    return problem.detail if problem is not None else ""


async def _refuse_websocket(receive: Receive, send: Send, verdict: Verdict) -> None:
    """Accept, then close with a code and reason the client can read (a refused handshake carries neither)."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept", "headers": encode_headers(verdict.headers)})
    code = 1013 if verdict.status == 503 else 1008  # 1013: try again later
    await send({"type": "websocket.close", "code": code, "reason": _reason(verdict)})
