"""``@limit(...)`` and ``@exempt`` for Starlette endpoints.

The decorators mark the endpoint; ``RateLimitMiddleware`` finds the mark when
it routes a request (following ``__wrapped__`` through other decorators, so
their order does not matter) and checks these limits in the same call as the
others. The wrapper only verifies that this happened. Without the
middleware it checks on its own when given ``limiter=``, and otherwise
fails loudly instead of silently not limiting.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from bisman_ratelimit import ConfigurationError
from bisman_ratelimit.core import Algorithm, LimitLike
from bisman_ratelimit.web import (
    CONTENT_TYPE,
    ClientIP,
    CostSource,
    KeySource,
    LimitOptions,
    adecide,
    enabled_from_env,
)

from ._context import check_alone
from ._responses import encode_headers
from ._spec import ENFORCED, MARKER, LimitSpec, Marker

F = TypeVar("F", bound=Callable[..., Any])

_HANDLERS = ("get", "head", "post", "put", "patch", "delete", "options", "query")


def limit(
    limits: LimitLike | Sequence[LimitLike],
    *,
    key: KeySource = "ip",
    algorithm: Algorithm = "sliding_window",
    cost: CostSource = 1,
    shadow: bool = False,
    exempt_ips: Sequence[str] = (),
    exempt_users: Sequence[str] = (),
    deduct_when: Sequence[int] = (),
    group: str | None = None,
    limiter: Any = None,
    client_ip: ClientIP | None = None,
    enabled: bool | None = None,
) -> Callable[[F], F]:
    """Limit an endpoint: ``@limit("10/minute", key="user")``.

    ``key`` and ``cost`` may be callables of the request (sync or async).
    ``group`` shares one counter between every endpoint that names it.
    ``limiter`` (an ``AsyncLimiter``) lets the decorator work without the
    middleware; ``client_ip`` then says which proxies to trust, and
    ``enabled`` (else ``BISMAN_RATELIMIT_ENABLED``) whether it checks at all.
    """
    options = LimitOptions(
        limits=limits,
        key=key,
        algorithm=algorithm,
        cost=cost,
        shadow=shadow,
        exempt_ips=exempt_ips,
        exempt_users=exempt_users,
        deduct_when=deduct_when,
        group=group,
    )
    spec = LimitSpec(
        options=options,
        limiter=limiter,
        client_ip=client_ip,
        enabled=enabled_from_env(enabled) if limiter is not None else True,
    )

    def decorate(endpoint: F) -> F:
        if isinstance(endpoint, type):
            # An HTTPEndpoint class: each handler it defines is limited.
            for name in _HANDLERS:
                handler = endpoint.__dict__.get(name)
                if handler is not None:
                    setattr(endpoint, name, _wrap(handler, spec))
            _mark(endpoint, spec)
            return endpoint
        return _wrap(endpoint, spec)  # type: ignore[return-value]

    return decorate


def exempt(endpoint: F) -> F:
    """Never limit this endpoint (nor count it against the global limit)."""
    previous = getattr(endpoint, MARKER, None)
    specs = previous.specs if isinstance(previous, Marker) else ()
    setattr(endpoint, MARKER, Marker(specs=specs, exempt=True))
    return endpoint


def _mark(target: Any, spec: LimitSpec) -> Marker:
    previous = getattr(target, MARKER, None)
    marker = Marker(
        specs=(*previous.specs, spec) if isinstance(previous, Marker) else (spec,),
        exempt=isinstance(previous, Marker) and previous.exempt,
    )
    setattr(target, MARKER, marker)
    return marker


def _wrap(endpoint: Callable[..., Any], spec: LimitSpec) -> Callable[..., Any]:
    # The mark goes on the endpoint itself too: a router that registered it before this decorator
    # ran (the decorator written above a route decorator) still shows it to the middleware.
    marker = _mark(endpoint, spec)
    is_async = inspect.iscoroutinefunction(endpoint)
    name = f"{getattr(endpoint, '__module__', '?')}.{getattr(endpoint, '__qualname__', repr(endpoint))}"

    @functools.wraps(endpoint)
    async def limited(*args: Any, **kwargs: Any) -> Any:
        if spec in ENFORCED.get():
            # The middleware checked it: the endpoint is all that is left (inlined, per request).
            if is_async:
                return await endpoint(*args, **kwargs)
            return await run_in_threadpool(endpoint, *args, **kwargs)
        return await _standalone(spec, name, endpoint, is_async, args, kwargs)

    setattr(limited, MARKER, marker)
    return limited


async def _run(endpoint: Callable[..., Any], is_async: bool, args: Any, kwargs: Any) -> Any:
    if is_async:
        return await endpoint(*args, **kwargs)
    return await run_in_threadpool(endpoint, *args, **kwargs)


def _find_connection(args: Any, kwargs: Any) -> HTTPConnection | None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, HTTPConnection):
            return value
    return None


async def _standalone(
    spec: LimitSpec, name: str, endpoint: Callable[..., Any], is_async: bool, args: Any, kwargs: Any
) -> Any:
    if not spec.enabled:
        return await _run(endpoint, is_async, args, kwargs)
    limiter = spec.limiter
    if limiter is None:
        raise ConfigurationError(
            f"@limit on {name} is not enforced: add RateLimitMiddleware to the app, "
            "or pass limiter=AsyncLimiter(...) to the decorator"
        )
    connection = _find_connection(args, kwargs)
    if not isinstance(connection, Request):
        raise ConfigurationError(
            f"@limit(limiter=...) on {name} needs the endpoint to take the Request; in FastAPI use "
            "Depends(RateLimit(...)), or add RateLimitMiddleware to the app"
        )
    evaluation, verdict = await check_alone(spec, limiter, name, connection.scope)
    if verdict.status != 200:
        problem = verdict.problem()
        return Response(
            problem.body() if problem is not None else b"",
            status_code=verdict.status,
            media_type=CONTENT_TYPE,
            headers=dict(verdict.headers),
        )
    response = await _run(endpoint, is_async, args, kwargs)
    if isinstance(response, Response):
        if evaluation is not None and evaluation.deducts:
            evaluation.on_response(response.status_code)
            verdict = await adecide(limiter, evaluation)
        response.raw_headers.extend(encode_headers(verdict.headers))
    return response
