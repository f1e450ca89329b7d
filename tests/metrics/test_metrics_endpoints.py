"""The /metrics endpoint of the ASGI plugin and the metrics view of the Django plugin."""

from __future__ import annotations

import os

import django
import httpx
import pytest
import redis
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.routing import Route

from bisman_ratelimit.metrics import RateLimitMetrics
from bisman_ratelimit.ops import RedisCollector
from bisman_ratelimit_starlette.metrics import MetricsEndpoint

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_project.settings")
django.setup()

from django.test import RequestFactory  # noqa: E402

from bisman_ratelimit_django.views import make_metrics_view  # noqa: E402

# The exact versions depend on the prometheus_client release.
TEXT = "text/plain; version="
OPENMETRICS = "application/openmetrics-text; version="


@pytest.fixture
def registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    metrics = RateLimitMetrics(registry=registry)
    metrics.record_decision(route="/users/{id}", allowed=False, reason="client")
    return registry


async def test_starlette_metrics_endpoint(registry: CollectorRegistry, redis_client: redis.Redis) -> None:
    redis_client.set("rl:user:1:api:x", 1, ex=60)
    registry.register(RedisCollector(redis_client))
    app = Starlette(routes=[Route("/metrics", MetricsEndpoint(registry=registry))])
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith(TEXT)
        assert 'app_rate_limit_block_total{reason="client",route="/users/{id}"} 1.0' in response.text
        assert "redis_up 1.0" in response.text
        assert 'redis_namespace_keys{namespace="rl:user"} 1.0' in response.text

        negotiated = await client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
        assert negotiated.headers["content-type"].startswith(OPENMETRICS)
        assert negotiated.text.endswith("# EOF\n")

        head = await client.head("/metrics")
        assert (head.status_code, head.content) == (200, b"")

        refused = await client.post("/metrics")
        assert (refused.status_code, refused.headers["allow"]) == (405, "GET, HEAD")


def test_django_metrics_view(registry: CollectorRegistry) -> None:
    view = make_metrics_view(registry)
    factory = RequestFactory()
    response = view(factory.get("/metrics"))
    assert response.status_code == 200
    assert response["Content-Type"].startswith(TEXT)
    assert b'app_rate_limit_block_total{reason="client",route="/users/{id}"} 1.0' in response.content

    negotiated = view(factory.get("/metrics", HTTP_ACCEPT="application/openmetrics-text"))
    assert negotiated["Content-Type"].startswith(OPENMETRICS)

    refused = view(factory.post("/metrics"))
    assert (refused.status_code, refused["Allow"]) == (405, "GET, HEAD")
