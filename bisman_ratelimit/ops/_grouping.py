"""Which namespace a key belongs to, for the keyspace audits."""

from __future__ import annotations

import math
from collections.abc import Callable

from bisman_ratelimit.stores import NamespaceRegistry, default_registry

OTHER_NAMESPACE = "other"

Progress = Callable[[float, float], None]
"""Called with (done, total) as long work advances."""


def above_policy(ttl: float | None, policy_ttl: float | None) -> bool:
    """Whether a key that expires in ``ttl`` seconds outlives its namespace's TTL."""
    return ttl is not None and policy_ttl is not None and ttl > policy_ttl


def whole_seconds(ttl: float) -> int:
    """A TTL read in milliseconds, in the whole seconds a writer gave (4507.2 s left of 4508 -> 4508)."""
    return math.ceil(ttl)


def as_text(key: bytes | str) -> str:
    return key if isinstance(key, str) else key.decode("utf-8", "backslashreplace")


class NamespaceGrouper:
    """Which namespace a key belongs to, out of a bounded set.

    A key goes to its registered namespace (longest prefix), else to the
    domain (first segment) of a registered namespace, such as the web
    plugins' ``rl:ip:{<address>}:...`` keys going to ``rl``. Other keys go to ``other``,
    or with ``open_domains`` to their own first segment (for audits, where a
    person reads the table; metrics keep the bounded form).
    """

    def __init__(self, registry: NamespaceRegistry = default_registry, *, open_domains: bool = False) -> None:
        self.registry = registry
        self.domains = frozenset(namespace.prefix.split(":", 1)[0] for namespace in registry)
        self.open_domains = open_domains

    def group(self, key: str) -> str:
        namespace = self.registry.find(key)
        if namespace is not None:
            return namespace.prefix
        domain, colon, _ = key.partition(":")
        if colon and (domain in self.domains or (self.open_domains and domain)):
            return domain
        return OTHER_NAMESPACE

    def labels(self) -> tuple[str, ...]:
        """Every group a key can fall into when ``open_domains`` is off."""
        return (
            *sorted(namespace.prefix for namespace in self.registry),
            *sorted(self.domains),
            OTHER_NAMESPACE,
        )

    def policy_ttl(self, key: str) -> float | None:
        """The TTL (seconds) that ``key``'s namespace sets, or ``None`` when it sets none."""
        namespace = self.registry.find(key)
        return None if namespace is None else namespace.ttl

    def is_ephemeral(self, group: str) -> bool:
        for namespace in self.registry:
            if namespace.prefix == group:
                return namespace.ephemeral
        return False


# --- cardinality ----------------------------------------------------------------------------------------
