"""What the admin panel shows and changes, with no web framework.

:class:`PanelEngine` reads flags, limits, sessions, namespaces and health,
and makes the panel's writes (set or delete a flag, reset a client's
limit, log a user out everywhere). Every write is audited: the flags'
change history records who made it, and each write is logged on the
``bisman_ratelimit.admin`` logger with who and what. The engine blocks on
I/O; the Starlette panel runs it in a worker thread, Django in its views.

Each page is one frozen value (:class:`FlagsPage`, :class:`LimitsPage`,
...), so that a template only lays it out and tests compare it whole.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from bisman_ratelimit._limiter import AsyncLimiter, Limiter
from bisman_ratelimit.backends import (
    AsyncAdapter,
    AsyncFallbackStorage,
    AsyncRedisStorage,
    BlockedKeys,
    FallbackStorage,
    MemoryStorage,
    RedisStorage,
    Spec,
    redis_from_url,
    translate_errors,
)
from bisman_ratelimit.backends._urls import without_parameters
from bisman_ratelimit.core import InvalidArgument, StorageError, StorageUnavailable, escape
from bisman_ratelimit.ops._cardinality import sample_keyspace
from bisman_ratelimit.ops._doctor import CheckResult, cgroup_memory_limit, evaluate, gather_facts
from bisman_ratelimit.ops._grouping import NamespaceGrouper
from bisman_ratelimit.stores import (
    FLAG_TYPES,
    Flag,
    FlagAdmin,
    FlagChange,
    NamespaceRegistry,
    SessionStore,
    backend_from_url,
    default_registry,
    parse_flag_value,
)
from bisman_ratelimit.web import RateLimitConfig, load_config

audit_log = logging.getLogger("bisman_ratelimit.admin")

PANEL_TIMEOUT = 5.0
"""Seconds a Redis call of the panel may take (SCAN samples, INFO)."""

PageName = Literal["flags", "limits", "sessions", "namespaces", "health"]
PAGES: tuple[PageName, ...] = ("flags", "limits", "sessions", "namespaces", "health")


@dataclass(frozen=True)
class FlagsPage:
    flags: tuple[Flag, ...]
    history: tuple[FlagChange, ...]
    types: tuple[str, ...] = FLAG_TYPES


@dataclass(frozen=True)
class RouteRow:
    """One route of the limits file, or its defaults or global limit."""

    path: str
    methods: str
    limits: str
    key: str
    algorithm: str
    shadow: bool
    exemptions: str


@dataclass(frozen=True)
class LimitedClient:
    """A client over (or near) a limit: ``token`` names it in a reset form."""

    key: str
    limit: str
    algorithm: str
    remaining: int
    retry_after: float
    token: str


@dataclass(frozen=True)
class LimitsPage:
    source: str
    routes: tuple[RouteRow, ...]
    clients: tuple[LimitedClient, ...]
    sampled: int
    breaker: str
    fallback_share: float | None


@dataclass(frozen=True)
class SessionsPage:
    users: tuple[tuple[str, int], ...]
    complete: bool


@dataclass(frozen=True)
class NamespaceRow:
    prefix: str
    purpose: str
    policy: str
    keys: int | None
    memory: int | None
    no_ttl: int | None
    above_policy: int | None


@dataclass(frozen=True)
class NamespacesPage:
    rows: tuple[NamespaceRow, ...]
    scanned: int | None


@dataclass(frozen=True)
class HealthPage:
    checks: tuple[CheckResult, ...]
    latency_ms: float | None
    server: str


def _spec_of(limit: Any, algorithm: str) -> Spec:
    # As the limiter stores it: buckets hold their burst, windows their amount.
    capacity = limit.capacity if algorithm in ("token_bucket", "gcra") else limit.amount
    return Spec(algorithm, limit.amount, limit.period_us, capacity)


def _shown_path(source: str) -> str:
    """A file under the working directory by its relative path: shorter, and no host layout shown."""
    if os.path.isabs(source):
        relative = os.path.relpath(source)
        if not relative.startswith(os.pardir):
            return relative
    return source


def _limit_text(spec: Spec) -> str:
    seconds = spec.period_us / 1_000_000
    return f"{spec.amount}/{seconds:g}s"


def _exemptions(policy: Any) -> str:
    exempt = policy.exempt
    parts = [*(str(net) for net in exempt.ips), *(f"user {user}" for user in exempt.users)]
    return ", ".join(parts) or "-"


class PanelEngine:
    """The admin panel's data and writes, over the app's own limiter and stores.

    ``limiter`` is the app's (its blocked-keys cache and breaker are shown,
    and a reset reaches it at once); ``redis`` a synchronous client of the
    same server for the namespaces, health and samples (``None`` on memory).
    ``flags`` and ``sessions`` are the stores to show and change.
    """

    def __init__(
        self,
        *,
        flags: FlagAdmin,
        limiter: Limiter | AsyncLimiter | None = None,
        sessions: SessionStore | None = None,
        config: RateLimitConfig | None = None,
        redis: Any = None,
        registry: NamespaceRegistry = default_registry,
        max_clients: int = 50,
        max_users: int = 100,
        sample_keys: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(flags, FlagAdmin):
            raise InvalidArgument(f"flags must be a FlagAdmin, got {flags!r}")
        for name, value in (
            ("max_clients", max_clients),
            ("max_users", max_users),
            ("sample_keys", sample_keys),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgument(f"{name} must be a whole number >= 1, got {value!r}")
        self.flags = flags
        self.sessions = sessions
        self.config = config
        self.redis = redis
        self.registry = registry
        self.max_clients = max_clients
        self.max_users = max_users
        self.sample_keys = sample_keys
        self.clock = clock
        self.storage, self.fallback = self._sync_storage(limiter, redis)
        blocked = getattr(self.storage, "blocked", None)
        self.blocked: BlockedKeys | None = blocked if isinstance(blocked, BlockedKeys) else None

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        limiter: Limiter | AsyncLimiter | None = None,
        config: RateLimitConfig | str | os.PathLike[str] | None = None,
        **options: Any,
    ) -> PanelEngine:
        """The engine over the stores at ``url`` (``memory://`` or ``redis://...``), for an app's limiter.

        ``config`` is the limits file (its path, or as loaded). On memory the
        stores are this process's: give ``flags=`` and ``sessions=`` built on
        the app's :class:`~bisman_ratelimit.stores.MemoryBackend` to show the app's own.
        """
        if config is not None and not isinstance(config, RateLimitConfig):
            config = load_config(config)
        client: Any = None
        backend: Any
        if url.split("://", 1)[0].lower() == "memory":
            backend = backend_from_url(url, use_async=False)
        else:
            # Not the app's hot-path budget (?timeout=, 50 ms by default): a page may SCAN a while.
            patient = {"timeout": PANEL_TIMEOUT, "socket_connect_timeout": PANEL_TIMEOUT}
            backend = client = redis_from_url(
                without_parameters(url, "timeout"), asyncio=False, options=patient
            ).client
        options.setdefault("flags", FlagAdmin(backend))
        options.setdefault("sessions", SessionStore(backend))
        return cls(limiter=limiter, config=config, redis=client, **options)

    def close(self) -> None:
        """Close the stores and the Redis client."""
        self.flags.close()
        if self.sessions is not None:
            self.sessions.close()
        if self.redis is not None:
            self.redis.close()

    @staticmethod
    def _sync_storage(
        limiter: Limiter | AsyncLimiter | None, client: Any
    ) -> tuple[MemoryStorage | RedisStorage | None, FallbackStorage | AsyncFallbackStorage | None]:
        """A blocking view of the limiter's counters, sharing its blocked-keys cache."""
        if limiter is None:
            return None, None
        storage: Any = limiter.storage
        fallback = storage if isinstance(storage, (FallbackStorage, AsyncFallbackStorage)) else None
        if fallback is not None:
            storage = fallback.primary
        if isinstance(storage, AsyncAdapter):
            storage = storage.sync
        if isinstance(storage, (MemoryStorage, RedisStorage)):
            return storage, fallback
        if isinstance(storage, AsyncRedisStorage):
            if client is None:
                raise InvalidArgument(
                    "an AsyncLimiter on Redis needs redis= (a redis.Redis of the same server)"
                )
            # The same keys and the same cache: a reset here is seen by the app's next request.
            twin = RedisStorage(
                client,
                prefix=storage.prefix,
                # (An empty cache is falsy: it has a length.)
                blocked_cache=False if storage.blocked is None else storage.blocked,
                budget=PANEL_TIMEOUT,
            )
            return twin, fallback
        raise InvalidArgument(f"the admin panel cannot read the counters of {storage!r}")

    # -- flags

    def flags_page(self) -> FlagsPage:
        with translate_errors():
            return FlagsPage(
                flags=tuple(self.flags.all().values()),
                history=tuple(self.flags.history()),
            )

    def set_flag(self, by: str, name: str, raw: str, flag_type: str) -> Flag:
        """Set a flag from the text of a form field, read as ``flag_type``."""
        if flag_type not in FLAG_TYPES:
            raise InvalidArgument(f"unknown flag type {flag_type!r}: expected one of {', '.join(FLAG_TYPES)}")
        value = parse_flag_value(raw, flag_type)
        with translate_errors():
            self.flags.set(name, value, flag_type, by=by)  # type: ignore[arg-type]
        audit_log.info("%s set flag %r to %r (%s)", by, name, value, flag_type)
        return Flag(name, flag_type, value)  # type: ignore[arg-type]

    def delete_flag(self, by: str, name: str) -> bool:
        with translate_errors():
            deleted = self.flags.delete(name, by=by)
        audit_log.info("%s deleted flag %r%s", by, name, "" if deleted else " (there was none)")
        return deleted

    # -- rate limits

    def _routes(self) -> tuple[RouteRow, ...]:
        config = self.config
        if config is None:
            return ()
        rows = []
        if config.global_limit is not None:
            g = config.global_limit
            rows.append(
                RouteRow(
                    "(global)", "*", "; ".join(str(lim) for lim in g.limits), "-", g.algorithm, g.shadow, "-"
                )
            )
        if config.defaults.limits:
            d = config.defaults
            rows.append(
                RouteRow(
                    "(defaults)",
                    "*",
                    "; ".join(str(lim) for lim in d.limits),
                    d.key,
                    d.algorithm,
                    d.shadow,
                    _exemptions(d),
                )
            )
        for route in config.routes:
            p = route.policy
            methods = "*" if route.methods is None else ", ".join(sorted(route.methods))
            limits = "exempt" if p.exempt.all else "; ".join(str(lim) for lim in p.limits)
            rows.append(
                RouteRow(
                    route.path,
                    methods,
                    limits,
                    p.key,
                    p.algorithm,
                    p.shadow,
                    "all" if p.exempt.all else _exemptions(p),
                )
            )
        return tuple(rows)

    def _resolver(self) -> Callable[[str, str, int], Spec | None]:
        """Names the limit of a stored counter from the limits file.

        Stored keys carry the algorithm and window but not the amount, which
        the file knows: a counter whose algorithm and window match one limit
        of the file is that limit's; where several match, the route scope in
        the key (``...:api:<scope>``) decides. Counters of other limits
        (written in code) are passed over; the blocked-keys cache still
        lists those limited now.
        """
        by_window: dict[tuple[str, int], set[Spec]] = {}
        by_scope: dict[tuple[str, str, int], Spec] = {}
        config = self.config
        if config is not None:
            policies: list[tuple[str, Any]] = [("default", config.defaults)]
            if config.global_limit is not None:
                policies.append(("global", config.global_limit))
            policies += [(route.path, route.policy) for route in config.routes]
            for scope, policy in policies:
                for limit in policy.limits:
                    spec = _spec_of(limit, policy.algorithm)
                    by_window.setdefault((spec.algorithm, spec.period_us), set()).add(spec)
                    by_scope[escape(scope), spec.algorithm, spec.period_us] = spec

        def resolve(key: str, algorithm: str, window_us: int) -> Spec | None:
            found = by_window.get((algorithm, window_us), set())
            if len(found) == 1:
                return next(iter(found))
            _, api, scope = key.rpartition(":api:")
            return by_scope.get((scope, algorithm, window_us)) if api else None

        return resolve

    def _token(self, key: str, spec: Spec) -> str:
        return "|".join((str(spec.algorithm), str(spec.amount), str(spec.period_us), str(spec.capacity), key))

    @staticmethod
    def _parse_token(token: str) -> tuple[str, Spec]:
        parts = token.split("|", 4)
        if len(parts) != 5 or not all(part.isdigit() for part in parts[1:4]) or not parts[4]:
            raise InvalidArgument(f"not a client of the rate-limit page: {token!r}")
        return parts[4], Spec(parts[0], int(parts[1]), int(parts[2]), int(parts[3]))

    def _client(self, key: str, spec: Spec, remaining: int, retry_after: float) -> LimitedClient:
        return LimitedClient(
            key, _limit_text(spec), spec.algorithm, remaining, retry_after, self._token(key, spec)
        )

    def limits_page(self) -> LimitsPage:
        clients: dict[tuple[str, Spec], LimitedClient] = {}
        sampled = 0
        storage = self.storage
        if self.blocked is not None:
            for key, spec, denial in self.blocked.blocked(self.max_clients):
                clients[key, spec] = self._client(key, spec, denial.remaining, denial.retry_after)
        if storage is not None:
            try:
                pairs = storage.sample(self.sample_keys, self._resolver())
            except StorageError:
                pairs = []  # the blocked-keys cache still shows who is limited
            sampled = len(pairs)
            for key, spec in pairs:
                if len(clients) >= self.max_clients:
                    break
                if (key, spec) in clients or key.startswith(ADMIN_KEY):
                    continue
                decision = storage.check(key, spec, 1, False)
                if not decision.allowed:
                    clients[key, spec] = self._client(key, spec, decision.remaining, decision.retry_after)
        breaker = "none"
        share: float | None = None
        if self.fallback is not None:
            stats = self.fallback.breaker.stats()
            breaker = stats.state
            local = self.fallback.answered_locally
            share = local / (local + stats.successes) if local + stats.successes else 0.0
        rows = sorted(clients.values(), key=lambda c: (-c.retry_after, c.key))
        return LimitsPage(
            source="-" if self.config is None else _shown_path(self.config.source),
            routes=self._routes(),
            clients=tuple(rows),
            sampled=sampled,
            breaker=breaker,
            fallback_share=share,
        )

    def client(self, token: str) -> LimitedClient:
        """The client a reset form names, as it stands now (for the confirmation step)."""
        key, spec = self._parse_token(token)
        if self.storage is None:
            raise InvalidArgument("the admin panel was given no limiter")
        with translate_errors():
            decision = self.storage.check(key, spec, 1, False)
        return self._client(key, spec, decision.remaining, decision.retry_after)

    def reset_client(self, by: str, token: str) -> LimitedClient:
        """Forget what was counted for one client under one limit."""
        key, spec = self._parse_token(token)
        if self.storage is None:
            raise InvalidArgument("the admin panel was given no limiter")
        with translate_errors():
            self.storage.reset(key, spec)
        audit_log.info("%s reset the limit %s (%s) of %r", by, _limit_text(spec), spec.algorithm, key)
        return self._client(key, spec, spec.capacity, 0.0)

    # -- sessions

    def sessions_page(self) -> SessionsPage:
        if self.sessions is None:
            return SessionsPage((), True)
        with translate_errors():
            names, complete = self.sessions.users(self.max_users)
            counts = [(name, len(self.sessions.user_sessions(name))) for name in names]
        return SessionsPage(tuple((name, count) for name, count in counts if count), complete)

    def logout_everywhere(self, by: str, user_id: str) -> int:
        if self.sessions is None:
            raise InvalidArgument("the admin panel was given no session store")
        with translate_errors():
            ended = self.sessions.delete_user_sessions(user_id)
        audit_log.info("%s logged %r out everywhere (%d sessions)", by, user_id, len(ended))
        return len(ended)

    # -- namespaces and health

    def namespaces_page(self) -> NamespacesPage:
        sample = None
        if self.redis is not None:
            with translate_errors():
                sample = sample_keyspace(
                    self.redis,
                    max_keys=self.sample_keys * 10,
                    memory_samples=20,
                    grouper=NamespaceGrouper(self.registry),
                )
        rows = []
        for namespace in self.registry:
            if not namespace.ephemeral:
                policy = "persistent"
            elif namespace.ttl is None:
                policy = "TTL given by each write"
            else:
                policy = f"TTL {namespace.ttl:g} s"
            stats = None if sample is None else sample.namespace(namespace.prefix)
            rows.append(
                NamespaceRow(
                    prefix=namespace.prefix,
                    purpose=namespace.purpose,
                    policy=policy,
                    keys=None if sample is None else (0 if stats is None else stats.keys_estimated),
                    memory=None if sample is None else (0 if stats is None else stats.memory_estimated),
                    no_ttl=None if sample is None else (0 if stats is None else stats.no_ttl),
                    above_policy=None if sample is None else (0 if stats is None else stats.above_policy),
                )
            )
        return NamespacesPage(tuple(rows), None if sample is None else sample.scanned)

    def health_page(self) -> HealthPage:
        if self.redis is None:
            return HealthPage((), None, "memory (no Redis to check)")
        try:
            with translate_errors():
                started = self.clock()
                self.redis.ping()
                latency = (self.clock() - started) * 1000
                facts = gather_facts(self.redis, registry=self.registry, sample_keys=self.sample_keys)
        except StorageError as exc:
            return HealthPage((CheckResult("reachable", "fail", str(exc)),), None, "unreachable")
        checks = evaluate(facts, cgroup_memory_limit(), registry=self.registry)
        return HealthPage(tuple(checks), latency, f"{facts.product} {facts.version}")

    def page(self, name: PageName) -> Any:
        """The data of one page, by name."""
        return getattr(self, f"{name}_page")()

    @staticmethod
    def failure_message(exc: StorageError) -> str:
        """What a page says when the storage failed under it (the panels answer 503 with it).

        Our errors name the server's address and the reason, never the URL
        or its password.
        """
        reason = str(exc).rstrip(".")
        if isinstance(exc, StorageUnavailable):
            return f"The storage is unavailable ({reason}): this page works again once it answers."
        return f"The storage failed ({reason})."


ADMIN_KEY = "admin:panel:"
"""The panel's own requests are counted under this key prefix, and left out of its client list."""
