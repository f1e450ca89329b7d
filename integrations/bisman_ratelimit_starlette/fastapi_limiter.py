"""fastapi-limiter's documented surface, on this library's engine: moving over is a change of imports.

::

    from bisman_ratelimit_starlette.fastapi_limiter import FastAPILimiter, RateLimiter

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        await FastAPILimiter.init(redis.asyncio.from_url("redis://localhost:6379"))
        yield
        await FastAPILimiter.close()

    @app.get("/", dependencies=[Depends(RateLimiter(times=2, seconds=5))])
    async def index(): ...

Every ``RateLimiter`` of a route (route, router and nested dependencies) is
checked in one call (``hit_many``) by the first of them that runs; the
others read their own decision. A refusal goes to the callback, by default
fastapi-limiter's: ``HTTPException(429, "Too Many Requests")`` with
``Retry-After``. An allowed response gets our ``RateLimit-Policy`` and
``RateLimit`` fields, which fastapi-limiter does not send. What differs
from fastapi-limiter is in docs/migrating.md.
"""

# No "from __future__ import annotations" here: FastAPI reads the parameter types of
# RateLimiter.__call__, and older versions do not resolve string annotations.

import logging
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from fastapi import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from bisman_ratelimit import AsyncLimiter, ConfigurationError, Decision, InvalidArgument, Limit, StorageError
from bisman_ratelimit.core import ALGORITHMS, Algorithm, OutagePolicy, OutageReaction, hash_tag
from bisman_ratelimit.web import (
    OutageLog,
    enabled_from_env,
    outage_reaction,
    policy_item,
    ratelimit_value,
    sf_string,
)

if TYPE_CHECKING:
    from bisman_ratelimit.metrics import RateLimitMetrics

__all__ = [
    "FastAPILimiter",
    "RateLimiter",
    "default_identifier",
    "http_default_callback",
]

logger = logging.getLogger("bisman_ratelimit.starlette")

# Where the first RateLimiter of a request leaves the decisions of all of them.
_DECISIONS = "bisman_ratelimit.fastapi_limiter"
_CACHE_SIZE = 4096


async def default_identifier(request: HTTPConnection) -> str:
    """fastapi-limiter's identifier: the first ``X-Forwarded-For`` address (else the peer), and the path.

    Any client can send that header: behind no proxy, pass an identifier of
    the peer address instead.
    """
    forwarded = request.headers.get("X-Forwarded-For")
    ip = forwarded.split(",")[0] if forwarded else (request.client.host if request.client else "unknown")
    path: str = request.scope["path"]
    return ip + ":" + path


async def http_default_callback(request: Request, response: Response, pexpire: int) -> None:
    """fastapi-limiter's answer: 429 ``{"detail": "Too Many Requests"}``, ``Retry-After`` in whole seconds."""
    expire = math.ceil(pexpire / 1000)
    raise HTTPException(429, "Too Many Requests", headers={"Retry-After": str(expire)})


class FastAPILimiter:
    """The settings every ``RateLimiter`` reads, set once by :meth:`init`."""

    redis: ClassVar[Any] = None
    limiter: ClassVar[AsyncLimiter | None] = None
    prefix: ClassVar[str] = "fastapi-limiter"
    identifier: ClassVar[Callable[..., Any]] = default_identifier
    http_callback: ClassVar[Callable[..., Any]] = http_default_callback
    enabled: ClassVar[bool] = True
    on_outage: ClassVar[OutagePolicy] = OutagePolicy.of("open")
    outages: ClassVar[OutageLog] = OutageLog(logger)
    # Counters of this process, for requests the outage policy sends to the fallback.
    local: ClassVar[AsyncLimiter | None] = None
    metrics: ClassVar["RateLimitMetrics | None"] = None
    _groups: ClassVar[dict[int, tuple[Any, "_Group"]]] = {}

    @classmethod
    async def init(
        cls,
        redis: Any,
        prefix: str = "fastapi-limiter",
        identifier: Callable[..., Any] = default_identifier,
        http_callback: Callable[..., Any] = http_default_callback,
        *,
        enabled: bool | None = None,
        on_outage: OutageReaction | OutagePolicy = "open",
        metrics: "RateLimitMetrics | None" = None,
    ) -> None:
        """Use ``redis`` (a ``redis.asyncio`` client, or one of our ``AsyncLimiter``) from now on.

        ``enabled`` defaults to ``BISMAN_RATELIMIT_ENABLED``, else on; switched
        off, the dependencies pass every request without a word to the storage.
        ``metrics`` (a ``RateLimitMetrics``) counts decisions by route template.
        """
        if not isinstance(prefix, str) or not prefix:
            raise InvalidArgument(f"prefix must be a non-empty string, got {prefix!r}")
        for name, function in (("identifier", identifier), ("http_callback", http_callback)):
            if not callable(function):
                raise InvalidArgument(f"{name} must be an async callable, got {function!r}")
        cls.limiter = redis if isinstance(redis, AsyncLimiter) else AsyncLimiter(redis, prefix=prefix)
        cls.redis = redis
        cls.prefix = prefix
        cls.identifier = identifier
        cls.http_callback = http_callback
        cls.enabled = enabled_from_env(enabled)
        cls.on_outage = OutagePolicy.of(on_outage)
        cls._groups = {}
        cls.local = None
        cls.metrics = metrics
        if cls.enabled:
            # At startup, so that the first requests do not each open a connection.
            try:
                await cls.limiter.warm()
            except StorageError as exc:
                logger.warning("could not open connections to the rate-limit storage in advance: %s", exc)

    @classmethod
    async def close(cls) -> None:
        """Close the connections (the client's too, as fastapi-limiter does)."""
        limiter, redis = cls.limiter, cls.redis
        cls.limiter = cls.redis = None
        if limiter is not None:
            await limiter.aclose()
        if redis is not None and not isinstance(redis, AsyncLimiter):
            await redis.aclose()


class RateLimiter:
    """``Depends(RateLimiter(times=2, seconds=5))``: ``times`` requests per window.

    The window is ``milliseconds + seconds + minutes + hours``. ``identifier``
    and ``callback`` override those given to :meth:`FastAPILimiter.init`.
    ``algorithm`` is ours (default ``sliding_window``; fastapi-limiter's
    is ``fixed_window``).
    """

    def __init__(
        self,
        times: int = 1,
        milliseconds: int = 0,
        seconds: int = 0,
        minutes: int = 0,
        hours: int = 0,
        identifier: Callable[..., Any] | None = None,
        callback: Callable[..., Any] | None = None,
        *,
        algorithm: Algorithm = "sliding_window",
    ) -> None:
        if isinstance(times, bool) or not isinstance(times, int) or times < 1:
            raise InvalidArgument(f"times must be a whole number >= 1, got {times!r}")
        total = milliseconds + 1000 * seconds + 60_000 * minutes + 3_600_000 * hours
        if total < 1:
            raise InvalidArgument(
                "RateLimiter needs a window: give milliseconds, seconds, minutes or hours "
                f"(they add up to {total} ms)"
            )
        if algorithm not in ALGORITHMS:
            raise InvalidArgument(
                f"unknown algorithm {algorithm!r}: expected one of {', '.join(sorted(ALGORITHMS))}"
            )
        self.times = times
        self.milliseconds = total
        self.limit = Limit(times, total / 1000)
        self.algorithm = algorithm
        self.identifier = identifier
        self.callback = callback

    def __repr__(self) -> str:
        return f"RateLimiter(times={self.times}, milliseconds={self.milliseconds})"

    async def __call__(self, request: Request, response: Response) -> Any:
        if not FastAPILimiter.enabled:
            return None
        limiter = FastAPILimiter.limiter
        if limiter is None:
            raise ConfigurationError("You must call FastAPILimiter.init in startup event of fastapi!")
        decisions: dict[RateLimiter, Decision] | None = request.scope.get(_DECISIONS)
        if decisions is None or self not in decisions:
            group = _group(request, self)
            decisions = await _check_all(limiter, request, group)
            request.scope[_DECISIONS] = decisions
            if all(d.allowed and d.limit for d in decisions.values()):
                # fastapi-limiter sends no rate-limit fields: ours, for every limiter of the route.
                response.headers["RateLimit-Policy"] = group.policy
                response.headers["RateLimit"] = ratelimit_value(group.quoted, list(decisions.values()))
        decision = decisions[self]
        if decision.allowed:
            return None
        callback = self.callback or FastAPILimiter.http_callback
        return await callback(request, response, max(1, math.ceil(decision.retry_after * 1000)))


class _Group:
    """The RateLimiters of one route, in the order FastAPI runs them, and their header parts."""

    __slots__ = ("limiters", "policy", "quoted", "scope")

    def __init__(self, scope: str, limiters: tuple[RateLimiter, ...]) -> None:
        self.scope = scope
        self.limiters = limiters
        names = [scope if i == 0 else f"{scope}#{i + 1}" for i in range(len(limiters))]
        self.quoted = [sf_string(name) for name in names]
        self.policy = ", ".join(policy_item(n, d.limit) for n, d in zip(names, limiters, strict=True))


def _group(request: Request, first: RateLimiter) -> _Group:
    """The group of the request's route (cached per route)."""
    route = request.scope.get("route")
    scope = getattr(route, "path_format", None) or "unrouted"
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return _Group(scope, (first,))
    cached = FastAPILimiter._groups.get(id(route))
    if cached is not None and cached[0] is route and first in cached[1].limiters:
        return cached[1]
    found: list[RateLimiter] = []
    _collect(dependant, found, set())
    group = _Group(scope, tuple(dict.fromkeys(found)) if first in found else (first,))
    if len(FastAPILimiter._groups) >= _CACHE_SIZE:
        FastAPILimiter._groups.clear()
    FastAPILimiter._groups[id(route)] = (route, group)
    return group


def _collect(dependant: Any, found: list[RateLimiter], seen: set[int]) -> None:
    for sub in getattr(dependant, "dependencies", ()) or ():
        if id(sub) in seen:
            continue
        seen.add(id(sub))
        _collect(sub, found, seen)
        call = getattr(sub, "call", None)
        if isinstance(call, RateLimiter):
            found.append(call)


async def _check_all(limiter: AsyncLimiter, request: Request, group: _Group) -> dict[RateLimiter, Decision]:
    """One round trip for every RateLimiter of the route: all counted, or none."""
    scope = group.scope
    entries: list[tuple[str, Limit, Algorithm, int]] = []
    for index, dependency in enumerate(group.limiters):
        identifier = dependency.identifier or FastAPILimiter.identifier
        rate_key = await identifier(request)
        # The identifier's text is the Redis Cluster hash tag (braces in it
        # escaped), so one client's limiters share a slot.
        entries.append((f"{hash_tag(rate_key)}:{scope}:{index}", dependency.limit, dependency.algorithm, 1))
    try:
        decisions = await _hit(limiter, entries)
    except StorageError as exc:
        what = f"{request.method} {request.url.path}"
        reaction = outage_reaction(
            FastAPILimiter.on_outage,
            [e[0] for e in entries],
            exc,
            what,
            FastAPILimiter.outages,
            FastAPILimiter.metrics,
        )
        if reaction == "closed":
            raise HTTPException(503, "Service Unavailable", headers={"Retry-After": "1"}) from None
        if reaction == "fallback":
            if FastAPILimiter.local is None:
                FastAPILimiter.local = AsyncLimiter()
            decisions = await _hit(FastAPILimiter.local, entries)
        else:
            return dict.fromkeys(group.limiters, _PASS)
    else:
        if FastAPILimiter.outages.down:
            FastAPILimiter.outages.recovered()
    metrics = FastAPILimiter.metrics
    if metrics is not None:
        if all(decision.allowed for decision in decisions):
            metrics.record_decision(route=scope, allowed=True)
        else:
            metrics.record_decision(route=scope, allowed=False, reason="client")
    return dict(zip(group.limiters, decisions, strict=True))


async def _hit(limiter: AsyncLimiter, entries: list[tuple[str, Limit, Algorithm, int]]) -> Sequence[Decision]:
    """The decisions of ``entries``, all counted or none: the common single limiter in one ``hit``."""
    if len(entries) == 1:
        return (await limiter.hit(*entries[0]),)
    return (await limiter.hit_many(entries)).decisions


# What a request let through by the outage policy reads.
_PASS = Decision(allowed=True, limit=0, remaining=0, reset_after=0.0, retry_after=0.0, key="", algorithm="")
