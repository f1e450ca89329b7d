"""``Depends(RateLimit("10/minute"))`` for FastAPI: no ``request`` parameter needed in the endpoint.

With ``RateLimitMiddleware`` on the app, the middleware finds the dependency
on the route (route, router and nested dependencies alike) and checks it in
the same call as every other limit; the dependency then does nothing.
Without the middleware it checks on its own when given ``limiter=``: a
refusal raises :class:`RateLimitExceeded` (an ``HTTPException`` carrying the
headers; register :func:`rate_limit_exceeded_handler` for a problem+json
body), and an accepted request gets the headers on its response.
"""

# No "from __future__ import annotations" here: older FastAPI (0.110 does) reads the parameter types of a
# callable instance's __call__ without resolving string annotations, and would take ``request``
# for a query parameter.

from collections.abc import Sequence
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from bisman_ratelimit import ConfigurationError
from bisman_ratelimit.core import Algorithm, LimitLike
from bisman_ratelimit.web import (
    CONTENT_TYPE,
    ClientIP,
    CostSource,
    KeySource,
    LimitOptions,
    Verdict,
    enabled_from_env,
)

from ._context import check_alone
from ._spec import ENFORCED, MARKER, LimitSpec, Marker


class RateLimitExceeded(HTTPException):
    """A refusal by a ``RateLimit`` dependency used without the middleware."""

    def __init__(self, verdict: Verdict) -> None:
        problem = verdict.problem()
        super().__init__(
            status_code=verdict.status,
            detail=problem.detail if problem is not None else None,
            headers=dict(verdict.headers),
        )
        self.verdict = verdict


def rate_limit_exceeded_handler(request: Request, exc: Exception) -> Response:
    """``app.add_exception_handler(RateLimitExceeded, rate_limit_exceeded_handler)``: problem+json bodies."""
    if not isinstance(exc, RateLimitExceeded):
        raise exc
    problem = exc.verdict.problem()
    return Response(
        problem.body() if problem is not None else b"",
        status_code=exc.status_code,
        media_type=CONTENT_TYPE,
        headers=exc.headers,
    )


class RateLimit:
    """A FastAPI dependency: ``dependencies=[Depends(RateLimit("10/minute", key="user"))]``.

    Takes the options of :func:`~bisman_ratelimit_starlette.limit`, ``enabled`` included.
    """

    def __init__(
        self,
        limits: LimitLike | Sequence[LimitLike],
        *,
        key: KeySource = "ip",
        algorithm: Algorithm = "sliding_window",
        cost: CostSource = 1,
        shadow: bool = False,
        exempt_ips: Sequence[str] = (),
        exempt_users: Sequence[str] = (),
        group: str | None = None,
        limiter: Any = None,
        client_ip: ClientIP | None = None,
        enabled: bool | None = None,
    ) -> None:
        # deduct_when needs the response status, which a dependency never sees: use the middleware.
        options = LimitOptions(
            limits=limits,
            key=key,
            algorithm=algorithm,
            cost=cost,
            shadow=shadow,
            exempt_ips=exempt_ips,
            exempt_users=exempt_users,
            group=group,
        )
        self.spec = LimitSpec(
            options=options,
            limiter=limiter,
            client_ip=client_ip,
            enabled=enabled_from_env(enabled) if limiter is not None else True,
        )
        # The middleware finds the declaration on the route's dependencies by this mark.
        setattr(self, MARKER, Marker(specs=(self.spec,)))

    def __repr__(self) -> str:
        return f"RateLimit({', '.join(str(limit) for limit in self.spec.limits)!r})"

    async def __call__(self, request: Request, response: Response) -> None:
        spec = self.spec
        if not spec.enabled or spec in ENFORCED.get():
            return
        limiter = spec.limiter
        if limiter is None:
            raise ConfigurationError(
                f"{self!r} is not enforced: add RateLimitMiddleware to the app, "
                "or pass limiter=AsyncLimiter(...) to RateLimit"
            )
        name = getattr(request.scope.get("route"), "path_format", None) or "unrouted"
        _, verdict = await check_alone(spec, limiter, name, request.scope)
        if verdict.status != 200:
            raise RateLimitExceeded(verdict)
        for header, value in verdict.headers:
            response.headers[header] = value
