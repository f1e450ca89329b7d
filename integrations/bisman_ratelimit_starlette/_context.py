"""From an ASGI scope to the facts a route plan needs: client address, user, headers, callables.

Shared by the middleware, the ``limit`` decorator and the ``RateLimit``
dependency. What a plan needs is worked out once per plan (:class:`Needs`),
so a request only pays for what its limits use. :func:`check_alone` checks
a declaration on a request no middleware saw.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from starlette.requests import HTTPConnection, Request
from starlette.types import Scope

from bisman_ratelimit import AsyncLimiter, ConfigurationError, InvalidArgument
from bisman_ratelimit.web import ClientIP, Evaluation, RoutePlan, SingleCheck, Verdict, adecide

from ._spec import LimitSpec

# A user getter receives the connection and returns a user id (or None), possibly awaitable.
UserGetter = Callable[[HTTPConnection], Any]


class Needs:
    """What one plan reads from a request, decided once."""

    __slots__ = ("api_key", "custom", "headers", "plan", "user")

    def __init__(self, plan: RoutePlan) -> None:
        self.plan = plan
        rules = plan.rules
        self.user = any(rule.kind == "user" or rule.exempt.users for rule in rules)
        self.api_key = any(rule.kind == "api_key" for rule in rules)
        self.headers = any(rule.kind == "header" for rule in rules)
        # Per rule: (key callable or None, cost callable or None); None when no rule has one.
        custom = [
            (rule.key if callable(rule.key) else None, rule.cost if callable(rule.cost) else None)
            for rule in rules
        ]
        self.custom = custom if any(k or c for k, c in custom) else None


async def _call(function: Callable[..., Any], connection: HTTPConnection) -> Any:
    result = function(connection)
    if inspect.isawaitable(result):
        result = await result
    return result


def header_value(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    """One header's value; repeated field lines are joined with a comma, as RFC 9110 allows."""
    found: list[bytes] = [value for key, value in headers if key == name]
    if not found:
        return None
    return (found[0] if len(found) == 1 else b", ".join(found)).decode("latin-1")


class Facts:
    """Reads requests for route plans; built once with the app's settings."""

    def __init__(
        self,
        *,
        client_ip: ClientIP,
        api_key_header: str = "x-api-key",
        user: UserGetter | None = None,
    ) -> None:
        if not isinstance(api_key_header, str) or not api_key_header:
            raise InvalidArgument(f"api_key_header must be a header name, got {api_key_header!r}")
        if user is not None and not callable(user):
            raise InvalidArgument(f"user must be a callable of the request, got {user!r}")
        self.client_ip = client_ip
        self._forwarded = client_ip.header.encode("latin-1")
        self._api_key = api_key_header.lower().encode("latin-1")
        self._user = user

    def ip(self, scope: Scope) -> str | None:
        client = scope.get("client")
        peer = client[0] if client else None
        if not self.client_ip.reads_headers:
            return self.client_ip.client(peer)
        return self.client_ip.client(peer, header_value(scope["headers"], self._forwarded))

    def peer(self, scope: Scope) -> tuple[str | None, str | None]:
        """The peer address, and the forwarded header when proxies are trusted (for a fast path)."""
        client = scope.get("client")
        peer = client[0] if client else None
        if not self.client_ip.reads_headers:
            return peer, None
        return peer, header_value(scope["headers"], self._forwarded)

    async def evaluate(self, needs: Needs, scope: Scope, ip: str | None) -> Evaluation:
        """Start the checks of ``needs.plan`` for this request."""
        ip_key = self.client_ip.key(ip) if ip else None
        if needs.user is False and needs.api_key is False and needs.headers is False and needs.custom is None:
            return Evaluation.start(needs.plan, ip=ip, ip_key=ip_key)
        connection: HTTPConnection | None = None
        user = None
        if needs.user:
            connection = self.connection(scope)
            user = await self.user(connection)
        headers = scope["headers"]
        api_key = header_value(headers, self._api_key) if needs.api_key else None

        def header(name: str) -> str | None:
            return header_value(headers, name.encode("latin-1"))

        custom_keys: list[str | None] | None = None
        costs: list[int] | None = None
        if needs.custom is not None:
            connection = connection or self.connection(scope)
            custom_keys, costs = [], []
            for key_fn, cost_fn in needs.custom:
                custom_keys.append(_identity(await _call(key_fn, connection)) if key_fn else None)
                costs.append(_cost(await _call(cost_fn, connection)) if cost_fn else 1)
        return Evaluation.start(
            needs.plan,
            ip=ip,
            ip_key=ip_key,
            user=user,
            header=header,
            api_key=api_key,
            custom_keys=custom_keys,
            costs=costs,
        )

    @staticmethod
    def connection(scope: Scope) -> HTTPConnection:
        # No receive: a key function must not consume the request body.
        return Request(scope) if scope["type"] == "http" else HTTPConnection(scope)

    async def user(self, connection: HTTPConnection) -> str | None:
        """The user id: from the ``user`` callable if given, else from ``scope["user"]``."""
        if self._user is not None:
            return _identity(await _call(self._user, connection))
        if "user" not in connection.scope:
            raise ConfigurationError(
                "a rate limit keyed or exempted by user needs scope['user']: add AuthenticationMiddleware "
                "outside RateLimitMiddleware (add it after, so it runs first), or pass user=<callable>"
            )
        found = connection.scope["user"]
        if found is None or not getattr(found, "is_authenticated", True):
            return None
        for attribute in ("identity", "display_name", "username", "id"):
            try:
                value = getattr(found, attribute)
            except (AttributeError, NotImplementedError):
                continue
            if value not in (None, ""):
                return str(value)
        return None


def _identity(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return str(value)
    raise InvalidArgument(f"a key function must return a str, an int or None, got {value!r}")


def _cost(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgument(f"a cost function must return a whole number >= 1, got {value!r}")
    return value


class _Alone:
    """How a declaration checks a route on its own: its plan, and its fast path if it has one."""

    __slots__ = ("facts", "needs", "single")

    def __init__(self, spec: LimitSpec, route: str) -> None:
        plan = RoutePlan(route=route, rules=(spec.bind(route),), global_policy=None)
        client_ip = spec.client_ip or ClientIP()
        self.facts = Facts(client_ip=client_ip)
        self.needs = Needs(plan)
        self.single = SingleCheck.of(plan, client_ip=client_ip, headers=True)


# Declarations used without the middleware, per declaration and route.
_standalone: dict[tuple[LimitSpec, str], _Alone] = {}


async def check_alone(
    spec: LimitSpec, limiter: AsyncLimiter, name: str, scope: Scope
) -> tuple[Evaluation | None, Verdict]:
    """Check ``spec`` on a request no middleware saw, counting it under the route ``name``.

    The evaluation is None when the fast path decided: it has nothing left for the response.
    """
    alone = _standalone.get((spec, name))
    if alone is None:
        alone = _standalone[(spec, name)] = _Alone(spec, name)
    single = alone.single
    if single is not None:
        peer, forwarded = alone.facts.peer(scope)
        header = single.asgi_header
        if header is None:
            args = single.hit_args(peer, forwarded)
        else:
            args = single.hit_args_by(header_value(scope["headers"], header), peer, forwarded)
        return None, single.verdict(await limiter.hit(*args))
    facts = alone.facts
    evaluation = await facts.evaluate(alone.needs, scope, facts.ip(scope))
    return evaluation, await adecide(limiter, evaluation)
