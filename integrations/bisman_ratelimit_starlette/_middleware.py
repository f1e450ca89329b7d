"""``RateLimitMiddleware``: a pure ASGI middleware for Starlette and FastAPI apps.

Per request it finds the route template the router would pick (cached per
path), checks every limit that applies in one ``hit_many`` call, and either
answers 429/503 itself or passes the request on, adding the rate-limit
header fields to the response in a local ``send`` wrapper. Lifespan and
other scopes pass straight through. WebSocket connection attempts are
limited like requests, and refused with close code 1008 (1013 when the
global limit sheds load); messages may be limited too.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING

from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bisman_ratelimit import AsyncLimiter, InvalidArgument, StorageError
from bisman_ratelimit.core import Algorithm, Limit, LimitLike, parse_limits
from bisman_ratelimit.web import (
    ClientIP,
    CostSource,
    HeaderName,
    HeaderStyle,
    KeySource,
    Planner,
    RateLimitConfig,
    RoutePlan,
    Rule,
    TrustedProxies,
    Verdict,
    load_config,
    run_async,
)

from ._context import Facts, Needs, UserGetter
from ._responses import OnLimited, encode_headers, refuse
from ._routes import resolve, uses_hosts
from ._spec import LimitSpec, declared_on

if TYPE_CHECKING:
    from bisman_ratelimit.metrics import RateLimitMetrics

__all__ = ["ENFORCED", "RateLimitMiddleware"]

logger = logging.getLogger("bisman_ratelimit.starlette")

# The endpoint declarations the middleware enforces for the request being served; the decorator
# and the dependency read it to know they have nothing left to do.
ENFORCED: ContextVar[tuple[LimitSpec, ...]] = ContextVar("bisman_ratelimit_enforced", default=())
_CACHE_SIZE = 10_000
# What a request gets when the storage is down and the middleware fails closed.
_UNAVAILABLE = Verdict(503, (("Retry-After", "1"),), 1)


class _Route:
    """The cached outcome of routing one method and path."""

    __slots__ = ("messages", "needs", "policy_header", "single", "specs", "template")

    def __init__(
        self, needs: Needs, specs: tuple[LimitSpec, ...], messages: Needs | None, *, peer_is_client: bool
    ) -> None:
        self.needs = needs
        self.specs = specs
        self.messages = messages
        self.template = needs.plan.route
        # The fast path needs the client to be the peer; endpoint declarations take the general
        # path, which tells their wrappers they are enforced.
        self.single = needs.plan.single if peer_is_client and not specs else None
        header = needs.plan.policy_header or ""
        self.policy_header = (b"ratelimit-policy", header.encode("latin-1"))


class RateLimitMiddleware:
    """Rate limits for every route of an ASGI app.

    Give ``config`` (a limits file or a loaded ``RateLimitConfig``), or
    ``default_limits`` with ``key``, ``algorithm``, ``cost`` and
    ``global_limits``. ``limiter`` defaults to an in-memory ``AsyncLimiter``.
    ``metrics`` (a ``bisman_ratelimit.metrics._prometheus.RateLimitMetrics``) counts every
    decision by route template and reason. See docs/starlette.md for the rest.
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
        fail_open: bool = True,
        metrics: RateLimitMetrics | None = None,
        websocket_message_limits: LimitLike | Sequence[LimitLike] | None = None,
        routes: Sequence[BaseRoute] | None = None,
    ) -> None:
        self.app = app
        if limiter is None:
            limiter = AsyncLimiter()
        elif not isinstance(limiter, AsyncLimiter):
            raise InvalidArgument(
                f"RateLimitMiddleware needs an AsyncLimiter (a sync client would block the event loop), "
                f"got {limiter!r}"
            )
        self.limiter = limiter
        if config is not None and not isinstance(config, RateLimitConfig):
            config = load_config(config)
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
        self.fail_open = fail_open
        self.metrics = metrics
        self._message_limits: tuple[Limit, ...] | None = None
        if isinstance(websocket_message_limits, (str, Limit)):
            self._message_limits = parse_limits(websocket_message_limits)
        elif websocket_message_limits is not None:
            self._message_limits = parse_limits(list(websocket_message_limits))
        self._message_key = key
        self._routes = routes
        self._hosts: bool | None = None
        self._cache: dict[tuple[str, str, str], _Route] = {}
        self._peer_keys: dict[str, str] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await self._websocket(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        route = self._cache.get((scope["method"], scope["path"], scope.get("root_path", "")))
        if route is None:
            route = self._route(scope, scope["method"])
        single = route.single
        if single is None:
            await self._http(route, scope, receive, send)
            return
        # The common case, kept in this one frame: one limit on the client address.
        client = scope.get("client")
        try:
            decision = await self.limiter.hit(
                single.key(self._peer_key(client[0] if client else None)),
                single.limit,
                single.algorithm,
                single.cost,
            )
        except StorageError as exc:
            await self._storage_failed(exc, route, scope, receive, send)
            return
        metrics = self.metrics
        if not decision.allowed:
            if metrics is not None:
                metrics.record_decision(route=route.template, allowed=False, reason="client")
            await refuse(scope, receive, send, single.verdict(decision), self.on_limited)
            return
        if metrics is not None:
            metrics.record_decision(route=route.template, allowed=True)
        added = (route.policy_header, (b"ratelimit", single.ratelimit(decision).encode("latin-1")))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *added]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _storage_failed(
        self, exc: StorageError, route: _Route, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """Fail open (let the request through) or closed (503), and say so in the log."""
        if self.fail_open:
            logger.warning(
                "rate-limit storage failed, letting %s %s through: %s", scope["method"], scope["path"], exc
            )
            if self.metrics is not None:
                self.metrics.record_decision(route=route.template, allowed=True)
            await self.app(scope, receive, send)
            return
        logger.error("rate-limit storage failed, refusing %s %s: %s", scope["method"], scope["path"], exc)
        if self.metrics is not None:
            self.metrics.record_decision(route=route.template, allowed=False, reason="unavailable")
        await refuse(scope, receive, send, _UNAVAILABLE, self.on_limited)

    def _peer_key(self, peer: str | None) -> str | None:
        """The masked client address, for limits keyed by IP; cached per peer when no proxy is trusted."""
        if peer is None:
            return None
        found = self._peer_keys.get(peer)
        if found is None:
            client_ip = self.facts.client_ip
            address = client_ip.client(peer)
            found = client_ip.key(address) if address else ""
            if len(self._peer_keys) >= _CACHE_SIZE:
                self._peer_keys.clear()
            self._peer_keys[peer] = found
        return found or None

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
        template, leaf = resolve(routes, dict(scope))
        marker = declared_on(getattr(leaf, "endpoint", None), method, getattr(leaf, "dependant", None))
        base = template or scope["path"]
        # Several declarations on one endpoint would share the template as their scope: number them.
        rules = [spec.bind(base if i == 0 else f"{base}#{i + 1}") for i, spec in enumerate(marker.specs)]
        # A HEAD request is a GET without the body: it falls under the GET entry of the file.
        plan = self.planner.plan(
            template, "GET" if method == "HEAD" else method, tuple(rules), exempt=marker.exempt
        )
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
        peer_is_client = not self.facts.client_ip.reads_headers
        found = _Route(Needs(plan), marker.specs, messages, peer_is_client=peer_is_client)
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
        try:
            evaluation = await facts.evaluate(needs, scope, facts.ip(scope))
            verdict = await run_async(self.limiter, evaluation)
        except StorageError as exc:
            await self._storage_failed(exc, route, scope, receive, send)
            return
        if self.metrics is not None:
            _record(self.metrics, route, verdict)
        if verdict.status != 200:
            await refuse(scope, receive, send, verdict, self.on_limited)
            return
        if verdict.shadowed:
            logger.info(
                "shadow limits %s would refuse %s %s",
                ", ".join(verdict.shadowed),
                scope["method"],
                scope["path"],
            )
        limiter = self.limiter
        added = encode_headers(verdict.headers)

        if evaluation.deducts:

            async def send_counted(message: Message) -> None:
                if message["type"] == "http.response.start":
                    evaluation.on_response(message["status"])
                    try:
                        after = await run_async(limiter, evaluation)
                    except StorageError as exc:
                        logger.warning("rate-limit storage failed while counting a response: %s", exc)
                        after = verdict
                    message["headers"] = [*message.get("headers", ()), *encode_headers(after.headers)]
                await send(message)

            await self.app(scope, receive, send_counted)
            return
        if not added:
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *added]
            await send(message)

        await self.app(scope, receive, send_with_headers)

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
            try:
                verdict = await run_async(self.limiter, await facts.evaluate(route.needs, scope, ip))
            except StorageError as exc:
                if not self.fail_open:
                    logger.error("rate-limit storage failed, refusing a WebSocket: %s", exc)
                    verdict = _UNAVAILABLE
                else:
                    logger.warning("rate-limit storage failed, letting a WebSocket through: %s", exc)
                    verdict = Verdict(200, ())
            if self.metrics is not None:
                _record(self.metrics, route, verdict)
            if verdict.status != 200:
                await _refuse_websocket(receive, send, verdict)
                return
            added = encode_headers(verdict.headers)
        if route.messages is not None:
            receive = self._limit_messages(route.messages, scope, ip, receive, send)
        if not added:
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "websocket.accept":
                message["headers"] = [*message.get("headers", ()), *added]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _limit_messages(
        self, needs: Needs, scope: Scope, ip: str | None, receive: Receive, send: Send
    ) -> Receive:
        facts = self.facts
        limiter = self.limiter

        async def receive_limited() -> Message:
            message = await receive()
            if message["type"] == "websocket.receive":
                verdict = await run_async(limiter, await facts.evaluate(needs, scope, ip))
                if verdict.status != 200:
                    reason = _reason(verdict)
                    await send({"type": "websocket.close", "code": 1008, "reason": reason})
                    return {"type": "websocket.disconnect", "code": 1008, "reason": reason}
            return message

        return receive_limited


def _record(metrics: RateLimitMetrics, route: _Route, verdict: Verdict) -> None:
    template = route.template
    if verdict.status == 200:
        metrics.record_decision(route=template, allowed=True, reason="shadow" if verdict.shadowed else None)
    elif verdict is _UNAVAILABLE:
        metrics.record_decision(route=template, allowed=False, reason="unavailable")
    else:
        metrics.record_decision(
            route=template, allowed=False, reason="global" if verdict.status == 503 else "client"
        )


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
