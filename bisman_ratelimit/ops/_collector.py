"""A Prometheus collector that reads Redis ``INFO`` at scrape time.

Register it in the registry you serve::

    registry.register(RedisCollector(redis.Redis.from_url(url, socket_timeout=2)))

Each scrape runs one ``INFO``, a SCAN of at most ``sample_keys`` keys and
one pipeline of TTL and ``MEMORY USAGE`` reads, so it stays cheap on a
large instance: per-namespace figures are estimates scaled to ``DBSIZE``
unless the sample covered every key (``redis_namespace_sample_complete``).
When Redis cannot be reached the scrape still answers, with ``redis_up 0``.

The collector is synchronous, as ``prometheus_client`` scrapes are; give it
its own ``redis.Redis`` client even in an asyncio app.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import redis
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bisman_ratelimit.core import InvalidArgument
from bisman_ratelimit.ops._cardinality import sample_keyspace
from bisman_ratelimit.ops._grouping import NamespaceGrouper
from bisman_ratelimit.stores import NamespaceRegistry, default_registry

# (metric name, INFO field, help) for the plain gauges and counters.
_GAUGES = (
    ("redis_memory_bytes", "used_memory", "Memory used by Redis (INFO used_memory), in bytes."),
    ("redis_memory_max_bytes", "maxmemory", "The maxmemory setting in bytes; 0 means no limit."),
    ("redis_connected_clients", "connected_clients", "Client connections open now."),
)
_COUNTERS = (
    ("redis_commands_processed", "total_commands_processed", "Commands processed by the server."),
    ("redis_keyspace_hits", "keyspace_hits", "Key lookups that found the key."),
    ("redis_keyspace_misses", "keyspace_misses", "Key lookups that did not find the key."),
    ("redis_evicted_keys", "evicted_keys", "Keys evicted because of the maxmemory limit."),
    ("redis_expired_keys", "expired_keys", "Keys removed because their TTL ran out."),
)


class RedisCollector(Collector):
    """Redis server figures and per-namespace key counts, read when scraped."""

    def __init__(
        self,
        client: Any,
        *,
        namespaces: NamespaceRegistry = default_registry,
        sample_keys: int = 1000,
        memory_samples: int = 20,
    ) -> None:
        if isinstance(sample_keys, bool) or not isinstance(sample_keys, int) or sample_keys < 0:
            raise InvalidArgument(
                f"sample_keys must be a whole number >= 0 (0: no SCAN), got {sample_keys!r}"
            )
        if isinstance(memory_samples, bool) or not isinstance(memory_samples, int) or memory_samples < 0:
            raise InvalidArgument(f"memory_samples must be a whole number >= 0, got {memory_samples!r}")
        self.client = client
        self.grouper = NamespaceGrouper(namespaces)
        self.sample_keys = sample_keys
        self.memory_samples = memory_samples

    @classmethod
    def from_url(cls, url: str, *, timeout: float = 2.0, **options: Any) -> RedisCollector:
        """A collector on its own client for ``url``; a scrape waits at most ``timeout`` s per call."""
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        return cls(client, **options)

    def describe(self) -> Iterable[Metric]:
        # Lets a registry check names at register() without calling Redis.
        return list(self._families().values())

    def collect(self) -> Iterable[Metric]:
        families = self._families()
        try:
            info = self.client.info()
            sample = (
                sample_keyspace(
                    self.client,
                    max_keys=self.sample_keys,
                    memory_samples=self.memory_samples,
                    grouper=self.grouper,
                    batch=min(self.sample_keys, 500),
                    check_ttl=False,
                )
                if self.sample_keys
                else None
            )
        except redis.RedisError:
            families["redis_up"].add_metric([], 0)
            return [families["redis_up"]]
        families["redis_up"].add_metric([], 1)
        for name, field, _ in (*_GAUGES, *_COUNTERS):
            if field in info:
                families[name].add_metric([], float(info[field]))
        for db, stats in sorted(info.items()):
            if db.startswith("db") and db[2:].isdigit() and isinstance(stats, dict):
                families["redis_db_keys"].add_metric([db], float(stats.get("keys", 0)))
        if sample is not None:
            families["redis_namespace_sample_keys"].add_metric([], sample.scanned)
            families["redis_namespace_sample_complete"].add_metric([], 1 if sample.complete else 0)
            for stats in sample.namespaces:
                families["redis_namespace_keys"].add_metric([stats.namespace], stats.keys_estimated)
                families["redis_namespace_memory_bytes"].add_metric([stats.namespace], stats.memory_estimated)
        return [family for family in families.values() if family.samples]

    def _families(self) -> dict[str, Any]:
        families: dict[str, Any] = {
            "redis_up": GaugeMetricFamily("redis_up", "1 if the last scrape could read INFO, else 0."),
        }
        for name, _, documentation in _GAUGES:
            families[name] = GaugeMetricFamily(name, documentation)
        for name, _, documentation in _COUNTERS:
            families[name] = CounterMetricFamily(name, documentation)
        families["redis_db_keys"] = GaugeMetricFamily(
            "redis_db_keys", "Keys per database (INFO keyspace).", labels=["db"]
        )
        families["redis_namespace_keys"] = GaugeMetricFamily(
            "redis_namespace_keys",
            "Keys per namespace prefix, estimated from a bounded SCAN sample.",
            labels=["namespace"],
        )
        families["redis_namespace_memory_bytes"] = GaugeMetricFamily(
            "redis_namespace_memory_bytes",
            "Memory per namespace prefix in bytes, estimated from sampled MEMORY USAGE.",
            labels=["namespace"],
        )
        families["redis_namespace_sample_keys"] = GaugeMetricFamily(
            "redis_namespace_sample_keys", "Keys the last scrape's SCAN sample examined."
        )
        families["redis_namespace_sample_complete"] = GaugeMetricFamily(
            "redis_namespace_sample_complete", "1 if the SCAN sample covered every key, so counts are exact."
        )
        return families

    def namespace_labels(self) -> tuple[str, ...]:
        """Every value the ``namespace`` label can take."""
        return self.grouper.labels()
