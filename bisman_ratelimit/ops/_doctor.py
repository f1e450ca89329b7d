"""``doctor``: a Redis server checked against the operations guardrails.

The guardrails (from the operations review):

- ``maxmemory`` at 65-75% of the container's memory limit;
- an eviction policy that suits the namespaces on the instance:
  ``allkeys-lru`` for ephemeral keys only; never ``allkeys-*`` when
  persistent flags or sessions share it (the fix is two instances);
- memory below the 85% alert;
- persistence in a state the backup runbook can rely on;
- keyspace notifications off outside a hot-key audit;
- a server recent enough for the rate-limit scripts (Redis 6.0, any Valkey).

:func:`evaluate` is pure: facts in, verdicts out. :func:`gather_facts` and
:func:`cgroup_memory_limit` are the I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bisman_ratelimit.core import InvalidArgument
from bisman_ratelimit.ops._cardinality import sample_keyspace
from bisman_ratelimit.ops._grouping import NamespaceGrouper
from bisman_ratelimit.stores import NamespaceRegistry, default_registry

Verdict = Literal["pass", "warn", "fail"]

MAXMEMORY_SHARE = (0.65, 0.75)
"""maxmemory as a share of the container limit: the recommended range."""
MAXMEMORY_FAIL_SHARE = 0.90
"""Above this share a fork for BGSAVE, client buffers and fragmentation leave no headroom."""
MEMORY_ALERT = 0.85
"""used_memory / maxmemory at which the alert fires."""

SESSIONS = "auth:sess"


@dataclass(frozen=True)
class CheckResult:
    """One guardrail's verdict and why."""

    name: str
    verdict: Verdict
    reason: str


@dataclass(frozen=True)
class MemoryLimit:
    """The memory the Redis container may use, and where that figure came from."""

    bytes: int
    source: str


@dataclass(frozen=True)
class ServerFacts:
    """What the checks need to know about a server."""

    maxmemory: int
    used_memory: int
    policy: str
    save: str
    appendonly: bool
    rdb_last_bgsave_status: str
    aof_last_write_status: str
    notify_keyspace_events: str
    namespaces: frozenset[str]
    sampled_keys: int
    product: str = "Redis"
    version: str = ""


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_UNITS = {
    "": 1, "b": 1,
    "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
    "kb": 2**10, "mb": 2**20, "gb": 2**30, "tb": 2**40,
    "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}  # fmt: skip


def parse_size(text: str) -> int:
    """Bytes from ``"512Mi"``, ``"2GiB"``, ``"1gb"``, ``"750m"`` or ``"1048576"``.

    As in redis.conf, ``k/m/g`` are powers of 1000 and ``kb/mb/gb`` powers of
    1024; the Kubernetes forms ``Ki/Mi/Gi`` and ``KiB/MiB/GiB`` are powers of 1024.
    """
    match = _SIZE.match(text)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise InvalidArgument(
            f"bad memory size {text!r}: expected e.g. 512Mi, 2GiB, 1gb or a number of bytes"
        )
    value = int(float(match.group(1)) * _UNITS[unit])
    if value <= 0:
        raise InvalidArgument(f"bad memory size {text!r}: must be more than 0 bytes")
    return value


def _human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def cgroup_memory_limit(root: str | Path = "/sys/fs/cgroup") -> MemoryLimit | None:
    """This process's container memory limit from cgroup v2 or v1, or ``None`` if unlimited."""
    base = Path(root)
    for path in (base / "memory.max", base / "memory" / "memory.limit_in_bytes"):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        # v2 writes "max"; v1 writes a page-rounded 2**63 when unlimited.
        if text == "max" or not text.isdigit() or int(text) >= 2**62:
            return None
        return MemoryLimit(int(text), f"cgroup {path}")
    return None


def _maxmemory(facts: ServerFacts, limit: MemoryLimit | None) -> CheckResult:
    low, high = MAXMEMORY_SHARE
    if facts.maxmemory == 0:
        advice = (
            f"; set it to {_human(limit.bytes * low)}-{_human(limit.bytes * high)} ({limit.source})"
            if limit
            else "; set it to 65-75% of the container limit"
        )
        return CheckResult(
            "maxmemory", "fail", "maxmemory is not set: Redis grows until the container is killed" + advice
        )
    if limit is None:
        return CheckResult(
            "maxmemory",
            "warn",
            f"maxmemory is {_human(facts.maxmemory)} but no container limit is known: "
            "run doctor inside the Redis container or give --memory-limit",
        )
    share = facts.maxmemory / limit.bytes
    what = f"maxmemory {_human(facts.maxmemory)} is {share:.0%} of {_human(limit.bytes)} ({limit.source})"
    if share > MAXMEMORY_FAIL_SHARE:
        return CheckResult(
            "maxmemory",
            "fail",
            f"{what}: no room for the BGSAVE fork, client buffers and fragmentation; "
            f"the container will be OOM-killed before eviction starts; aim for {low:.0%}-{high:.0%}",
        )
    if share > high:
        return CheckResult("maxmemory", "warn", f"{what}: above the {low:.0%}-{high:.0%} guardrail")
    if share < low:
        return CheckResult(
            "maxmemory", "warn", f"{what}: below {low:.0%}, memory the container pays for sits idle"
        )
    return CheckResult("maxmemory", "pass", f"{what}: within {low:.0%}-{high:.0%}")


def _eviction(facts: ServerFacts, registry: NamespaceRegistry) -> CheckResult:
    persistent = sorted(n.prefix for n in registry if not n.ephemeral and n.prefix in facts.namespaces)
    sessions = SESSIONS in facts.namespaces
    ephemeral = sorted(
        n.prefix for n in registry if n.ephemeral and n.prefix != SESSIONS and n.prefix in facts.namespaces
    ) + sorted(d for d in facts.namespaces if d in {n.prefix.split(":")[0] for n in registry})
    policy = facts.policy
    keep = persistent + ([SESSIONS] if sessions else [])
    split = (
        "split into two instances: ephemeral counters and caches on one with allkeys-lru, "
        "sessions and flags on one with noeviction or volatile-lru and reserved memory"
    )
    found = f"found {', '.join(sorted(facts.namespaces)) or 'no keys'} in {facts.sampled_keys} sampled keys"
    if policy.startswith("allkeys-") and keep:
        return CheckResult(
            "eviction policy",
            "fail",
            f"{policy} can evict {', '.join(keep)} keys under memory pressure "
            f"(lost flags, forced logouts); {split} ({found})",
        )
    if sessions and ephemeral and policy != "noeviction":
        return CheckResult(
            "eviction policy",
            "warn",
            f"{policy}: sessions compete with {', '.join(ephemeral)} for memory and can be evicted "
            f"(forced logouts); {split} ({found})",
        )
    if policy == "noeviction" and not keep:
        return CheckResult(
            "eviction policy",
            "warn",
            "noeviction on an instance of ephemeral keys: at maxmemory every write fails and rate-limit "
            f"checks error out; allkeys-lru evicts the oldest counters instead ({found})",
        )
    if policy.startswith("volatile-") and not keep and "other" in facts.namespaces:
        return CheckResult(
            "eviction policy",
            "warn",
            f"{policy} only evicts keys with a TTL; keys outside the known namespaces "
            f"may have none ({found})",
        )
    return CheckResult("eviction policy", "pass", f"{policy} suits this instance ({found})")


def _memory(facts: ServerFacts) -> CheckResult:
    if facts.maxmemory == 0:
        return CheckResult(
            "memory", "warn", f"{_human(facts.used_memory)} used; no maxmemory, so the 85% alert cannot fire"
        )
    share = facts.used_memory / facts.maxmemory
    what = f"{_human(facts.used_memory)} used, {share:.0%} of maxmemory {_human(facts.maxmemory)}"
    if share >= MEMORY_ALERT:
        return CheckResult(
            "memory",
            "fail",
            f"{what}: past the {MEMORY_ALERT:.0%} alert; "
            "find what grew with `bisman-ratelimit audit cardinality`",
        )
    if share >= MEMORY_ALERT - 0.10:
        return CheckResult("memory", "warn", f"{what}: within 10 points of the {MEMORY_ALERT:.0%} alert")
    return CheckResult("memory", "pass", f"{what}: below the {MEMORY_ALERT:.0%} alert")


def _persistence(facts: ServerFacts) -> CheckResult:
    if facts.rdb_last_bgsave_status != "ok":
        return CheckResult(
            "persistence",
            "fail",
            f"the last BGSAVE failed (rdb_last_bgsave_status={facts.rdb_last_bgsave_status}): "
            "backups are not being written; check the Redis log and that its dir is mounted and writable",
        )
    if facts.appendonly and facts.aof_last_write_status != "ok":
        return CheckResult(
            "persistence",
            "fail",
            f"the append-only file cannot be written (aof_last_write_status={facts.aof_last_write_status})",
        )
    if not facts.save.strip() and not facts.appendonly:
        return CheckResult(
            "persistence",
            "warn",
            "no RDB snapshots and no AOF: a restart loses every key; `bisman-ratelimit backup` still "
            "writes a snapshot on demand, into a dir that must be mounted",
        )
    modes = [f"RDB save '{facts.save}'"] if facts.save.strip() else []
    if facts.appendonly:
        modes.append("AOF")
    return CheckResult("persistence", "pass", f"{' and '.join(modes)}; last BGSAVE ok")


def _notifications(facts: ServerFacts) -> CheckResult:
    setting = facts.notify_keyspace_events
    if not setting:
        return CheckResult("keyspace notifications", "pass", "off")
    return CheckResult(
        "keyspace notifications",
        "warn",
        f"on ({setting!r}): every write publishes events and costs CPU; only the hot-key audit needs them, "
        "and it restores the old value when done; if nothing else uses them: "
        "CONFIG SET notify-keyspace-events ''",
    )


# The rate-limit scripts write with SET ... KEEPTTL.
MIN_REDIS = (6, 0)


def _version(facts: ServerFacts) -> CheckResult:
    name = f"{facts.product} {facts.version}".rstrip()
    if facts.product != "Redis":  # Valkey forked from Redis 7.2
        return CheckResult("server version", "pass", f"{name}")
    numbers = re.match(r"(\d+)\.(\d+)", facts.version)
    if numbers is None:
        return CheckResult("server version", "warn", f"unknown Redis version {facts.version!r}")
    if (int(numbers[1]), int(numbers[2])) < MIN_REDIS:
        return CheckResult(
            "server version",
            "fail",
            f"{name} is too old: rate limits need Redis {MIN_REDIS[0]}.{MIN_REDIS[1]} or later "
            "(SET ... KEEPTTL); every check would fail with 'ERR syntax error'",
        )
    return CheckResult("server version", "pass", name)


def evaluate(
    facts: ServerFacts, limit: MemoryLimit | None, *, registry: NamespaceRegistry = default_registry
) -> list[CheckResult]:
    """Every guardrail's verdict for a server."""
    return [
        _maxmemory(facts, limit),
        _eviction(facts, registry),
        _memory(facts),
        _persistence(facts),
        _notifications(facts),
        _version(facts),
    ]


def exit_code(results: list[CheckResult]) -> int:
    """1 if any check failed, else 0 (warnings do not fail)."""
    return 1 if any(result.verdict == "fail" for result in results) else 0


def gather_facts(
    client: Any, *, registry: NamespaceRegistry = default_registry, sample_keys: int = 10_000
) -> ServerFacts:
    """Read INFO, CONFIG and a bounded SCAN sample of which namespaces hold keys."""
    info = client.info()
    config = client.config_get("*")

    def setting(name: str) -> str:
        value = config.get(name, "")
        return value.decode() if isinstance(value, bytes) else str(value)

    sample = sample_keyspace(
        client, max_keys=sample_keys, memory_samples=0, grouper=NamespaceGrouper(registry), check_ttl=False
    )
    return ServerFacts(
        maxmemory=int(info.get("maxmemory", setting("maxmemory") or 0)),
        used_memory=int(info["used_memory"]),
        policy=str(info.get("maxmemory_policy", setting("maxmemory-policy"))),
        save=setting("save"),
        appendonly=setting("appendonly") == "yes",
        rdb_last_bgsave_status=str(info.get("rdb_last_bgsave_status", "ok")),
        aof_last_write_status=str(info.get("aof_last_write_status", "ok")),
        notify_keyspace_events=setting("notify-keyspace-events"),
        namespaces=frozenset(stats.namespace for stats in sample.namespaces),
        sampled_keys=sample.scanned,
        product="Valkey" if "valkey_version" in info else "Redis",
        version=str(info.get("valkey_version", info.get("redis_version", ""))),
    )
