"""Prometheus metrics for decisions and the cache, the instrumented clients
and storages that feed them, and what a scrape answers (every worker
process's figures added up, in prometheus_client's multi-process mode)."""

from __future__ import annotations

from bisman_ratelimit.metrics._exposition import AllWorkers, exposition
from bisman_ratelimit.metrics._instrument import (
    AsyncInstrumentedStorage,
    InstrumentedRedis,
    InstrumentedStorage,
    instrument_storage,
)
from bisman_ratelimit.metrics._prometheus import REASONS, CacheMetrics, RateLimitMetrics, Reason

__all__ = [
    "REASONS",
    "AllWorkers",
    "AsyncInstrumentedStorage",
    "CacheMetrics",
    "InstrumentedRedis",
    "InstrumentedStorage",
    "RateLimitMetrics",
    "Reason",
    "exposition",
    "instrument_storage",
]
