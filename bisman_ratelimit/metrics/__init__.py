"""Prometheus metrics for decisions and the cache, and instrumented clients
and storages that feed them."""

from __future__ import annotations

from bisman_ratelimit.metrics._instrument import (
    AsyncInstrumentedStorage,
    InstrumentedRedis,
    InstrumentedStorage,
    instrument_storage,
)
from bisman_ratelimit.metrics._prometheus import REASONS, CacheMetrics, RateLimitMetrics, Reason

__all__ = [
    "REASONS",
    "AsyncInstrumentedStorage",
    "CacheMetrics",
    "InstrumentedRedis",
    "InstrumentedStorage",
    "RateLimitMetrics",
    "Reason",
    "instrument_storage",
]
