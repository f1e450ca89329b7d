"""Key namespaces and their TTL policy (the seed's namespace table).

An *ephemeral* namespace refuses a write without a TTL; a namespace with a
default TTL supplies it. A *persistent* namespace (feature flags) takes no
TTL. The registry finds a key's namespace by its longest matching prefix.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from bisman_ratelimit.core import InvalidArgument, TTLPolicyError


@dataclass(frozen=True)
class Namespace:
    """A key prefix such as ``auth:sess`` and its TTL policy.

    Its keys are the key named by the prefix itself (``flags:config`` is
    one hash) and every key under ``prefix:``. ``ttl`` is the default TTL
    in seconds (``None``: the writer must give one if the namespace is
    ephemeral).
    """

    prefix: str
    ttl: float | None
    ephemeral: bool = True
    purpose: str = ""

    def __post_init__(self) -> None:
        if not self.prefix or self.prefix.endswith(":") or any(c in self.prefix for c in "*?[]{} "):
            raise InvalidArgument(f"bad namespace prefix {self.prefix!r}: use 'domain:subdomain'")
        if self.ttl is not None and not self.ttl > 0:
            raise InvalidArgument(f"namespace {self.prefix!r}: ttl must be > 0 or None, got {self.ttl!r}")
        if not self.ephemeral and self.ttl is not None:
            raise InvalidArgument(f"namespace {self.prefix!r} is persistent and cannot have a ttl")

    def owns(self, key: str) -> bool:
        return key == self.prefix or key.startswith(self.prefix + ":")


# SessionStore's default absolute lifetime: a user's index of sessions lives
# as long as the longest session in it may.
SESSION_INDEX_TTL = 43_200

DEFAULT_NAMESPACES: tuple[Namespace, ...] = (
    Namespace("auth:sess", 1800, purpose="Session metadata; rolling renewal on access"),
    Namespace(
        "auth:sess:user",
        SESSION_INDEX_TTL,
        purpose="A user's index of sessions; lives for the sessions' absolute lifetime",
    ),
    Namespace("rl:global", 60, purpose="Global request counter; short-circuits overload"),
    Namespace("rl:user", 300, purpose="Per-user route limits"),
    # The web plugins' other counters (rl:<kind>:{<identity>}:...): the
    # limiter sets each one's TTL from its window.
    Namespace("rl:ip", None, purpose="Per-client-address route limits; TTL from the window"),
    Namespace("rl:api_key", None, purpose="Per-API-key route limits; TTL from the window"),
    Namespace("rl:header", None, purpose="Route limits by a request header; TTL from the window"),
    Namespace("rl:custom", None, purpose="Route limits by a key function; TTL from the window"),
    Namespace("chat:ctx", 120, purpose="Recent chat messages slice"),
    Namespace("call:room", None, purpose="Live call participants; expire on inactivity"),
    Namespace("flags:config", None, ephemeral=False, purpose="Feature flags; admin changes only"),
)


class NamespaceRegistry:
    """Namespaces by prefix, with TTL enforcement for writes."""

    def __init__(self, namespaces: Iterable[Namespace] = DEFAULT_NAMESPACES) -> None:
        self._by_prefix: dict[str, Namespace] = {}
        for namespace in namespaces:
            self.register(namespace)

    def register(self, namespace: Namespace) -> None:
        if namespace.prefix in self._by_prefix:
            raise InvalidArgument(f"namespace {namespace.prefix!r} is already registered")
        self._by_prefix[namespace.prefix] = namespace

    def __iter__(self) -> Iterator[Namespace]:
        return iter(sorted(self._by_prefix.values(), key=lambda n: n.prefix))

    def __len__(self) -> int:
        return len(self._by_prefix)

    def get(self, prefix: str) -> Namespace:
        try:
            return self._by_prefix[prefix]
        except KeyError:
            raise InvalidArgument(f"unknown namespace {prefix!r}") from None

    def find(self, key: str) -> Namespace | None:
        """The namespace owning ``key`` (longest prefix), or ``None``."""
        parts = key.split(":")
        for end in range(len(parts), 0, -1):
            namespace = self._by_prefix.get(":".join(parts[:end]))
            if namespace is not None:
                return namespace
        return None

    def persistent_within(self, prefix: str) -> list[Namespace]:
        """The persistent namespaces with keys in ``prefix`` (``"flags"``, ``"flags:config:"``...).

        Emptying ``prefix`` would delete keys of these, which nothing writes back.
        """
        head = prefix.rstrip(":")
        return [n for n in self if not n.ephemeral and (n.owns(head) or n.prefix.startswith(head + ":"))]

    def ttl_for(self, key: str, ttl: float | None = None) -> float | None:
        """The TTL to write ``key`` with, or raise :class:`TTLPolicyError`."""
        if ttl is not None and not ttl > 0:
            raise TTLPolicyError(f"write to {key!r}: ttl must be > 0 seconds, got {ttl!r}")
        namespace = self.find(key)
        if namespace is None:
            return ttl
        if not namespace.ephemeral:
            if ttl is not None:
                raise TTLPolicyError(
                    f"write to {key!r}: namespace {namespace.prefix!r} is persistent and takes no TTL"
                )
            return None
        if ttl is None:
            ttl = namespace.ttl
        if ttl is None:
            raise TTLPolicyError(
                f"write to {key!r} without a TTL: namespace {namespace.prefix!r} is ephemeral, "
                "every write must give ttl="
            )
        return ttl


default_registry = NamespaceRegistry()
