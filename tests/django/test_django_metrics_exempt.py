"""The Django metrics view answers once the global limit sheds load: it is exempt by default."""

from __future__ import annotations

import pytest
from django.test import Client
from django.test.utils import override_settings
from django_project import metrics_urls

from bisman_ratelimit import InvalidArgument
from bisman_ratelimit_django.views import make_metrics_view


def test_metrics_view_answers_after_the_global_limit_trips(configure) -> None:
    configure(
        DEFAULT_LIMITS="100/minute",
        DEFAULT_ALGORITHM="fixed_window",
        GLOBAL_LIMITS="3/minute",
        METRICS=metrics_urls.METRICS,
    )
    with override_settings(ROOT_URLCONF="django_project.metrics_urls"):
        client = Client()
        assert [client.get("/plain/").status_code for _ in range(4)] == [200, 200, 200, 503]
        assert client.get("/metrics-counted").status_code == 503

        scraped = client.get("/metrics")
        assert scraped.status_code == 200
        lines = scraped.content.decode().splitlines()
        assert 'app_rate_limit_allowed_total{route="plain/"} 3.0' in lines
        assert 'app_rate_limit_block_total{reason="global",route="plain/"} 1.0' in lines
        assert 'app_rate_limit_block_total{reason="global",route="metrics-counted"} 1.0' in lines
        assert not any('route="metrics"' in line for line in lines)
        assert [client.get("/metrics").status_code for _ in range(5)] == [200] * 5


def test_exempt_must_be_a_bool() -> None:
    with pytest.raises(InvalidArgument, match=r"exempt must be True or False, got 1"):
        make_metrics_view(exempt=1)  # type: ignore[arg-type]
