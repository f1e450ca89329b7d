"""Operations: hot-key and cardinality audits, doctor, the runbook's
commands, the Redis INFO collector and the admin panel's engine."""

from __future__ import annotations

from bisman_ratelimit.ops._cardinality import KeyspaceSample, sample_keyspace
from bisman_ratelimit.ops._collector import RedisCollector
from bisman_ratelimit.ops._doctor import (
    MemoryLimit,
    cgroup_memory_limit,
    evaluate,
    exit_code,
    gather_facts,
    parse_size,
)
from bisman_ratelimit.ops._grouping import NamespaceGrouper
from bisman_ratelimit.ops._hotkeys import HotKeyReport, audit_hotkeys
from bisman_ratelimit.ops._panel import (
    ADMIN_KEY,
    PAGES,
    FlagsPage,
    HealthPage,
    LimitedClient,
    LimitsPage,
    NamespaceRow,
    NamespacesPage,
    PageName,
    PanelEngine,
    RouteRow,
    SessionsPage,
)
from bisman_ratelimit.ops._runbook import backup, failover, flush_namespace, inspect_key, namespace_prefix

__all__ = [
    "ADMIN_KEY",
    "PAGES",
    "FlagsPage",
    "HealthPage",
    "HotKeyReport",
    "KeyspaceSample",
    "LimitedClient",
    "LimitsPage",
    "MemoryLimit",
    "NamespaceGrouper",
    "NamespaceRow",
    "NamespacesPage",
    "PageName",
    "PanelEngine",
    "RedisCollector",
    "RouteRow",
    "SessionsPage",
    "audit_hotkeys",
    "backup",
    "cgroup_memory_limit",
    "evaluate",
    "exit_code",
    "failover",
    "flush_namespace",
    "gather_facts",
    "inspect_key",
    "namespace_prefix",
    "parse_size",
    "sample_keyspace",
]
