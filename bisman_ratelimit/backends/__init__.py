"""Where limits are counted: memory, Redis (standalone, Sentinel, Cluster),
routing by namespace, and the fallback behind a circuit breaker, chosen by URL."""

from __future__ import annotations

from bisman_ratelimit.backends._base import (
    AsyncAdapter,
    AsyncRefundable,
    AsyncStorage,
    Check,
    Refundable,
    Spec,
    Storage,
)
from bisman_ratelimit.backends._blocked import BlockedKeys, caches_in
from bisman_ratelimit.backends._bounded import BoundedMap
from bisman_ratelimit.backends._fallback import AsyncFallbackStorage, FallbackStorage
from bisman_ratelimit.backends._memory import MemoryStorage
from bisman_ratelimit.backends._redis import (
    DEFAULT_BUDGET,
    RATELIMIT,
    AsyncRedisStorage,
    RedisStorage,
    is_async_client,
    is_cluster_client,
    is_sync_client,
    translate_errors,
)
from bisman_ratelimit.backends._routing import (
    AsyncRoutingStorage,
    NamespaceRouter,
    RoutingStorage,
    routed_storage,
)
from bisman_ratelimit.backends._scripts import Script
from bisman_ratelimit.backends._urls import (
    REDIS_SCHEMES,
    RedisConnection,
    backend_schemes,
    masked_url,
    memory_options,
    redis_from_url,
    register_backend,
    storage_from_url,
)
from bisman_ratelimit.backends._wire import async_command, sync_command

__all__ = [
    "DEFAULT_BUDGET",
    "RATELIMIT",
    "REDIS_SCHEMES",
    "AsyncAdapter",
    "AsyncFallbackStorage",
    "AsyncRedisStorage",
    "AsyncRefundable",
    "AsyncRoutingStorage",
    "AsyncStorage",
    "BlockedKeys",
    "BoundedMap",
    "Check",
    "FallbackStorage",
    "MemoryStorage",
    "NamespaceRouter",
    "RedisConnection",
    "RedisStorage",
    "Refundable",
    "RoutingStorage",
    "Script",
    "Spec",
    "Storage",
    "async_command",
    "backend_schemes",
    "caches_in",
    "is_async_client",
    "is_cluster_client",
    "is_sync_client",
    "masked_url",
    "memory_options",
    "redis_from_url",
    "register_backend",
    "routed_storage",
    "storage_from_url",
    "sync_command",
    "translate_errors",
]
