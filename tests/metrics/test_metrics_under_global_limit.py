"""/metrics still answers once the global limit sheds load: the library's endpoints are exempt."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from bisman_ratelimit import AsyncLimiter, InvalidArgument
from bisman_ratelimit.metrics import RateLimitMetrics
from bisman_ratelimit_starlette import RateLimitMiddleware
from bisman_ratelimit_starlette.metrics import MetricsEndpoint


async def work(request: object) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def test_metrics_endpoint_answers_after_the_global_limit_trips(redis_url: str) -> None:
    registry = CollectorRegistry()
    app = Starlette(
        routes=[
            Route("/work", work),
            Route("/metrics", MetricsEndpoint(registry=registry)),
            Mount("/mounted-metrics", MetricsEndpoint(registry=registry)),
            Route("/metrics-counted", MetricsEndpoint(registry=registry, exempt=False)),
        ]
    )
    limiter = AsyncLimiter.from_url(redis_url)
    app.add_middleware(
        RateLimitMiddleware,
        limiter=limiter,
        default_limits="100/minute",
        global_limits="3/minute",
        algorithm="fixed_window",
        metrics=RateLimitMetrics(registry=registry),
    )
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        assert [(await client.get("/work")).status_code for _ in range(4)] == [200, 200, 200, 503]
        assert (await client.get("/metrics-counted")).status_code == 503

        scraped = await client.get("/metrics")
        assert scraped.status_code == 200
        lines = scraped.text.splitlines()
        assert 'app_rate_limit_allowed_total{route="/work"} 3.0' in lines
        assert 'app_rate_limit_block_total{reason="global",route="/work"} 1.0' in lines
        assert 'app_rate_limit_block_total{reason="global",route="/metrics-counted"} 1.0' in lines
        # The exempt scrape is neither counted nor limited, however often it comes.
        assert not any('route="/metrics"' in line for line in lines)
        assert [(await client.get("/metrics")).status_code for _ in range(5)] == [200] * 5
        assert (await client.get("/mounted-metrics/")).status_code == 200
        assert "ratelimit" not in scraped.headers
    await limiter.aclose()


def test_exempt_must_be_a_bool() -> None:
    with pytest.raises(InvalidArgument, match=r"exempt must be True or False, got 'no'"):
        MetricsEndpoint(exempt="no")  # type: ignore[arg-type]
