"""Storage backends, chosen by URL scheme.

``memory://`` keeps counters in this process. Redis:

- ``redis://``, ``rediss://``, ``unix://``: one server;
- ``redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db]``:
  the primary of ``service`` as the sentinels name it, found again after a
  failover (``sentinel_username``/``sentinel_password`` query parameters
  authenticate to the sentinels, the user info to the primary);
- ``redis+cluster://[[user]:password@]host:port[,host:port...]``: a Redis
  Cluster, reached through any of the nodes given.

Query parameters of this library, on every Redis URL (the rest go to
redis-py, which must take them: ``socket_timeout``, ``max_connections``,
``client_name``..., the ``ssl_*`` ones on ``rediss://`` only; any other is
refused with :class:`InvalidArgument` naming it):

``timeout``
    the time budget of one call: ``0.05``, ``50ms`` or ``1s`` (default
    50 ms). It sets the socket and connect timeouts and how long retries
    may go on. A call waits in line for a pooled connection for up to 2 s
    apart from it: a busy pool is the app's load, not a Redis fault.
``prefix``
    put before every key, with a ``:`` (default none: a key is stored
    under its own name).
``blocked_cache``
    ``off`` to ask Redis even about keys it has just denied.
``coalesce``
    ``on`` or ``off``: send checks together, in one write per connection
    (per node on a Cluster). The asyncio checks of one turn of the event
    loop go together unless ``off``; the checks that threads make while
    another is in flight, only with ``on`` (the default is ``off`` for
    threads: see docs/resilience.md).
``fallback=memory``
    decide locally while Redis fails, behind a circuit breaker; with
    ``on_outage`` (``fallback``, ``open`` or ``closed``),
    ``on_outage.<namespace>`` for one namespace, ``instances`` (the local
    limit is divided by it), ``breaker_failures``, ``breaker_window``,
    ``breaker_min_calls``, ``breaker_open`` (seconds) and ``breaker_probes``.

The same settings can be given as keyword arguments (``timeout=0.05``,
``fallback=True``, ``on_outage=...`` also an ``OutagePolicy``, ``on_outage_by_prefix``,
``instances``, ``breaker=CircuitBreaker(...)``, ``blocked_cache=False``,
``coalesce=False``).
Third parties add schemes with :func:`register_backend`.

:func:`redis_from_url` is where a Redis URL becomes a client and these
settings, for rate limits and for the stores alike (which take only
``timeout`` of them).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, overload
from urllib.parse import SplitResult, parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from bisman_ratelimit.backends._base import AsyncAdapter, AsyncStorage, Storage
from bisman_ratelimit.backends._memory import MemoryStorage
from bisman_ratelimit.core import InvalidArgument

if TYPE_CHECKING:
    from bisman_ratelimit.backends._loops import Connect

# A factory takes the URL, whether an async backend is wanted, and options.
BackendFactory = Callable[[str, bool, dict[str, Any]], "Storage | AsyncStorage"]

_REDIS_OPTIONS = (
    "prefix",
    "timeout",
    "blocked_cache",
    "coalesce",
    "fallback",
    "on_outage",
    "instances",
    "breaker_failures",
    "breaker_window",
    "breaker_min_calls",
    "breaker_open",
    "breaker_probes",
)
_SENTINEL_OPTIONS = ("sentinel_username", "sentinel_password")
_FALLBACK_OPTIONS = (
    "on_outage",
    "on_outage_by_prefix",
    "instances",
    "breaker",
    "breaker_failures",
    "breaker_window",
    "breaker_min_calls",
    "breaker_open",
    "breaker_probes",
)
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s)?")
# A query parameter holding a secret, and the "=" after it: its value is masked.
_SECRET_PARAMETER = re.compile(r"([?&][^=&#]*password=)[^&#]*", re.IGNORECASE)
_MEMORY_OPTIONS = ("max_keys", "max_bytes")

_FLAGS = {
    "1": True,
    "true": True,
    "yes": True,
    "on": True,
    "0": False,
    "false": False,
    "no": False,
    "off": False,
}


def _split(url: str, what: str = "storage") -> SplitResult:
    """``url`` in parts, or a clear error naming what cannot be read in it."""
    try:
        return urlsplit(url)
    except ValueError as exc:
        problem = f"it cannot be read ({exc})"
        if "IPv6" in str(exc):
            problem += ": an IPv6 address goes in brackets, e.g. redis://[::1]:6380/0"
        raise InvalidArgument(f"bad {what} URL {masked_url(url)!r}: {problem}") from None


def with_query(url: str, pairs: list[tuple[str, str]]) -> str:
    """``url`` with its query string replaced by ``pairs``.

    Unlike ``urlunsplit``, this keeps the empty host of ``unix:///path``
    (which ``urlunsplit`` would write as ``unix:/path``, no URL at all).
    """
    parts = _split(url)
    head = urlunsplit(parts._replace(query="", fragment=""))
    if not parts.netloc and url[len(parts.scheme) + 1 :].startswith("//"):
        head = f"{parts.scheme}://{parts.path}"
    query = urlencode(pairs)
    return head + (f"?{query}" if query else "") + (f"#{parts.fragment}" if parts.fragment else "")


def without_parameters(url: str, *names: str) -> str:
    """``url`` without the query parameters ``names``."""
    pairs = parse_qsl(_split(url).query, keep_blank_values=True)
    return with_query(url, [(name, value) for name, value in pairs if name not in names])


def _split_options(
    url: str, names: tuple[str, ...], prefixes: tuple[str, ...] = ()
) -> tuple[str, dict[str, str]]:
    """Remove this library's own query parameters from ``url``."""
    parts = _split(url)
    ours: dict[str, str] = {}
    rest = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in names or name.startswith(prefixes):
            ours[name] = value
        else:
            rest.append((name, value))
    return with_query(url, rest), ours


def memory_options(url: str, *, what: str = "storage") -> dict[str, Any]:
    """The settings of a ``memory://`` URL (``?max_keys=N&max_bytes=N``), for either in-memory twin."""
    _, ours = _split_options(url, _MEMORY_OPTIONS)
    parts = _split(url, what)
    if parts.netloc or parts.path not in ("", "/"):
        raise InvalidArgument(
            f"bad {what} URL {url!r}: memory:// takes no host or path, only ?max_keys=N and ?max_bytes=N"
        )
    options: dict[str, Any] = {}
    for name, text in ours.items():
        try:
            options[name] = int(text)
        except ValueError:
            raise InvalidArgument(f"bad {what} URL {url!r}: {name} must be a whole number") from None
    return options


def _memory(url: str, asyncio: bool, options: dict[str, Any]) -> Any:
    storage = MemoryStorage(**{**memory_options(url), **options})
    return AsyncAdapter(storage) if asyncio else storage


def _bad(url: str, problem: str) -> InvalidArgument:
    return InvalidArgument(f"bad storage URL {masked_url(url)!r}: {problem}")


def masked_url(url: str) -> str:
    """``url`` with its passwords replaced by ``***``, for anything printed or raised.

    The password of the user info is masked up to its last ``@`` (an
    unencoded ``@`` in a password is the password's, as redis-py reads it),
    and so are the values of query parameters named ``...password``
    (``?sentinel_password=``, ``?password=``).
    """
    scheme, sep, rest = url.partition("://")
    if sep:
        # The user info ends at the last "@" that is not in a query parameter's value.
        ends = [at for at, char in enumerate(rest) if char == "@" and "=" not in rest[:at].partition("?")[2]]
        if ends:
            user, colon, _ = rest[: ends[-1]].partition(":")
            if colon:
                rest = f"{user}:***{rest[ends[-1] :]}"
        url = f"{scheme}://{rest}"
    return _SECRET_PARAMETER.sub(r"\1***", url)


def _seconds(url: str, name: str, text: str) -> float:
    match = _DURATION.fullmatch(text.strip())
    value = float(match.group(1)) / (1000 if match.group(2) == "ms" else 1) if match else 0.0
    if value <= 0:
        raise _bad(url, f"{name} must be a positive duration such as 0.05, 50ms or 1s, got {text!r}")
    return value


def _whole(url: str, name: str, text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise _bad(url, f"{name} must be a whole number >= 1, got {text!r}")
    return int(text)


def _flag(url: str, name: str, text: str) -> bool:
    try:
        return _FLAGS[text.lower()]
    except KeyError:
        raise _bad(url, f"{name} must be on or off, got {text!r}") from None


class _Settings:
    """This library's Redis settings, from the URL and the keyword arguments."""

    def __init__(self, url: str, ours: dict[str, str], options: dict[str, Any]) -> None:
        from bisman_ratelimit.backends._redis import DEFAULT_BUDGET

        self.prefix: str = ours.get("prefix", options.pop("prefix", ""))
        self.budget: float = (
            _seconds(url, "timeout", ours["timeout"])
            if "timeout" in ours
            else options.pop("timeout", DEFAULT_BUDGET)
        )
        options.pop("timeout", None)
        self.blocked_cache: Any = (
            _flag(url, "blocked_cache", ours["blocked_cache"])
            if "blocked_cache" in ours
            else options.pop("blocked_cache", True)
        )
        options.pop("blocked_cache", None)
        # None: each storage's own default (on for asyncio, off for threads).
        self.coalesce: bool | None = (
            _flag(url, "coalesce", ours["coalesce"]) if "coalesce" in ours else options.pop("coalesce", None)
        )
        options.pop("coalesce", None)
        fallback = ours.get("fallback", options.pop("fallback", None))
        if fallback in ("memory", True) or isinstance(fallback, MemoryStorage):
            self.fallback: Any = fallback
        elif fallback in (None, False, "off", "none"):
            self.fallback = None
        else:
            raise _bad(url, f"fallback must be 'memory' or absent, got {fallback!r}")
        fallback_options = {name: options.pop(name) for name in _FALLBACK_OPTIONS if name in options}
        if "on_outage" in ours:
            fallback_options["on_outage"] = ours["on_outage"]
        by_prefix = {
            name[len("on_outage.") :]: value for name, value in ours.items() if name.startswith("on_outage.")
        }
        if by_prefix:
            fallback_options["on_outage_by_prefix"] = {
                **fallback_options.get("on_outage_by_prefix", {}),
                **by_prefix,
            }
        if "instances" in ours:
            fallback_options["instances"] = _whole(url, "instances", ours["instances"])
        breaker = {
            "failure_threshold": ("breaker_failures", _whole),
            "failure_window": ("breaker_window", _seconds),
            "min_calls": ("breaker_min_calls", _whole),
            "open_for": ("breaker_open", _seconds),
            "probes": ("breaker_probes", _whole),
        }
        breaker_options: dict[str, Any] = {}
        for argument, (name, parse) in breaker.items():
            if name in ours:
                breaker_options[argument] = parse(url, name, ours[name])
            elif name in fallback_options:
                breaker_options[argument] = fallback_options.pop(name)
        if breaker_options:
            if "breaker" in fallback_options:
                raise _bad(url, "give breaker=CircuitBreaker(...) or breaker_* settings, not both")
            from bisman_ratelimit.core import CircuitBreaker

            fallback_options["breaker"] = CircuitBreaker(**breaker_options)
        if fallback_options and self.fallback is None:
            raise _bad(url, f"{', '.join(sorted(fallback_options))} only apply with fallback=memory")
        self.fallback_options = fallback_options

    def wrap(self, storage: Any, asyncio: bool) -> Any:
        """``storage`` behind the fallback, if one is configured."""
        if self.fallback is None:
            return storage
        from bisman_ratelimit.backends._fallback import AsyncFallbackStorage, FallbackStorage

        options = dict(self.fallback_options)
        if isinstance(self.fallback, MemoryStorage):
            options["local"] = self.fallback
        if asyncio:
            return AsyncFallbackStorage(storage, **options)
        return FallbackStorage(storage, **options)


def _client_options(settings: _Settings, options: dict[str, Any], asyncio: bool) -> dict[str, Any]:
    """redis-py settings that keep one call within the budget; the caller's win."""
    if asyncio:
        from redis.asyncio.retry import Retry
    else:
        from redis.retry import Retry  # type: ignore[assignment]
    from redis.backoff import NoBackoff

    # Retries are ours, inside the budget; redis-py's own would stack
    # backoff sleeps on top of it.
    return {
        "socket_timeout": settings.budget,
        "socket_connect_timeout": settings.budget,
        "retry": Retry(NoBackoff(), 0),
        **options,
    }


@dataclass(frozen=True)
class RedisConnection:
    """A Redis client built from a URL, with this library's settings from it.

    ``closing`` are clients to close with ``client``: those of the
    sentinels, for a ``redis+sentinel://`` URL.
    """

    client: Any
    settings: _Settings
    closing: tuple[Any, ...] = ()

    @property
    def budget(self) -> float:
        """The time budget of one call, in seconds."""
        return self.settings.budget

    def warm(self, connections: int | None = None) -> None:
        """Open ``connections`` of the client's pool now (default: a bounded pool's size, at most 64).

        They wait, idle in the pool, for the first commands: a burst of
        them then opens none under the budget's connect timeout. Each is
        opened as a rate limiter's ``warm()`` opens its own, with up to 1 s
        to connect. A client whose commands a rate limiter would send through
        ``execute_command`` (a Cluster client, RESP3...) opens none.
        """
        from bisman_ratelimit.backends._redis import _warm_count
        from bisman_ratelimit.backends._wire import lender_for

        lender = lender_for(self.client)
        if lender is None:
            return
        try:
            lender.warm(_warm_count(lender.pool, connections))
        finally:
            lender.close()  # the connections are the pool's: the client's commands take them from there

    async def awarm(self, connections: int | None = None) -> None:
        """:meth:`warm` for an asyncio client, in the event loop the client belongs to."""
        from bisman_ratelimit.backends._redis import _warm_count
        from bisman_ratelimit.backends._wire import async_lender_for

        lender = async_lender_for(self.client)
        if lender is None:
            return
        try:
            await lender.warm(_warm_count(lender.pool, connections))
        finally:
            await lender.aclose()


def redis_from_url(
    url: str,
    *,
    asyncio: bool,
    options: dict[str, Any] | None = None,
    store: str | None = None,
) -> RedisConnection:
    """The Redis client (sync or async) and the settings that a Redis URL names.

    Limits and stores both build their clients here, so both get the time
    budget, Sentinel, Cluster, TLS and the pool options alike. ``options``
    are keyword settings (taken out as they are read; the rest go to
    redis-py). ``store`` names a store building the client: the settings
    of rate limits are refused for it.
    """
    options = {} if options is None else options
    scheme = url.split("://", 1)[0].lower() if isinstance(url, str) and "://" in url else ""
    connect = _CONNECTORS.get(scheme)
    if connect is None:
        schemes = ", ".join(f"{name}://" for name in _CONNECTORS)
        raise InvalidArgument(
            f"bad {'store' if store else 'storage'} URL {masked_url(str(url))!r}: expected one of {schemes}"
        )
    names = (*_REDIS_OPTIONS, *(_SENTINEL_OPTIONS if scheme == "redis+sentinel" else ()))
    client_url, ours = _split_options(url, names, ("on_outage.",))
    _check_parameters(url, scheme, client_url, names)
    if store is not None:
        foreign = sorted(name for name in ours if name not in ("timeout", *_SENTINEL_OPTIONS))
        if foreign:
            verb = "is a setting" if len(foreign) == 1 else "are settings"
            raise _bad(url, f"{', '.join(foreign)} {verb} of rate limit storage, not of {store}")
    return connect(url, client_url, ours, options, asyncio)


# Connection settings redis-py takes as text from a URL's query, besides those
# it types itself (redis.connection.URL_QUERY_ARGUMENT_PARSERS).
_CLIENT_TEXT = ("client_name", "username", "password")
_TLS_TEXT = (
    "ssl_cert_reqs",
    "ssl_ca_certs",
    "ssl_ca_path",
    "ssl_ca_data",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_password",
    "ssl_ciphers",
)


def _client_parameters(scheme: str) -> tuple[frozenset[str], frozenset[str]]:
    """The redis-py settings a URL of ``scheme`` may carry, and the TLS ones it may not."""
    import redis.connection

    typed = frozenset(getattr(redis.connection, "URL_QUERY_ARGUMENT_PARSERS", ()))
    tls = frozenset(name for name in typed if name.startswith("ssl_")) | frozenset(_TLS_TEXT)
    plain = (typed - tls) | frozenset(_CLIENT_TEXT)
    if scheme == "rediss":
        return plain | tls, frozenset()
    if scheme in ("redis+sentinel", "redis+cluster"):
        # These take TLS from ?ssl=true (there is no rediss:// form of them).
        return plain | tls | {"ssl"}, frozenset()
    return plain, tls


def _check_parameters(url: str, scheme: str, client_url: str, ours: tuple[str, ...]) -> None:
    """Refuse a query parameter nothing reads: redis-py would fail on it only at the first command."""
    accepted, tls = _client_parameters(scheme)
    for name, _ in parse_qsl(_split(client_url).query, keep_blank_values=True):
        if name in accepted:
            continue
        if name in tls:
            raise _bad(url, f"{name} is a TLS setting: it applies to rediss:// URLs only")
        known = sorted({*ours, *accepted, "on_outage.<namespace>"})
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise _bad(url, f"unknown query parameter {name!r}{hint}; accepted: {', '.join(known)}")


def _storage(connection: RedisConnection, asyncio: bool, connect: Connect | None = None) -> Any:
    """The backend on ``connection``; ``connect`` makes an asyncio backend's clients for other event loops."""
    from bisman_ratelimit.backends._redis import AsyncRedisStorage, RedisStorage

    settings = connection.settings
    _wait_in_line(connection)
    common: dict[str, Any] = {
        "prefix": settings.prefix,
        "budget": settings.budget,
        "blocked_cache": settings.blocked_cache,
        "closing": connection.closing,
    }
    if settings.coalesce is not None:
        common["coalesce"] = settings.coalesce
    if asyncio:
        storage: Any = AsyncRedisStorage(connection.client, connect=connect, **common)
    else:
        storage = RedisStorage(connection.client, **common)
    return settings.wrap(storage, asyncio)


def _wait_in_line(connection: RedisConnection) -> None:
    from bisman_ratelimit.backends._redis import POOL_WAIT

    pool: Any = getattr(connection.client, "connection_pool", None)
    if _is_blocking_pool(pool) and pool.timeout == connection.settings.budget:
        # A check waits in line for a connection beyond its budget: a busy
        # pool is the app's load, not Redis failing. After POOL_WAIT it is
        # decided without Redis (StorageBusy), which no breaker counts.
        pool.timeout = max(POOL_WAIT, connection.settings.budget)


def _another_client(url: str, options: dict[str, Any]) -> tuple[Any, tuple[Any, ...]]:
    """A new asyncio client from ``url`` and ``options``, as the backend's first was made."""
    connection = redis_from_url(url, asyncio=True, options=dict(options))
    _wait_in_line(connection)
    return connection.client, connection.closing


def _is_blocking_pool(pool: object) -> bool:
    import redis
    import redis.asyncio

    return isinstance(pool, (redis.BlockingConnectionPool, redis.asyncio.BlockingConnectionPool))


def _redis_storage(url: str, asyncio: bool, options: dict[str, Any]) -> Any:
    # The options as given: reading them takes them out.
    connect: Connect | None = partial(_another_client, url, dict(options)) if asyncio else None
    return _storage(redis_from_url(url, asyncio=asyncio, options=options), asyncio, connect)


def _plain(
    url: str, client_url: str, ours: dict[str, str], options: dict[str, Any], asyncio: bool
) -> RedisConnection:
    import redis
    import redis.asyncio

    parts = urlsplit(client_url)
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise _bad(url, "the port must be a number") from None
    if parts.scheme != "unix" and parts.path.strip("/") and not parts.path.strip("/").isdigit():
        raise _bad(url, "the path must be a database number, e.g. /0")
    settings = _Settings(url, ours, options)
    module: Any = redis.asyncio if asyncio else redis
    # A bounded pool: a burst waits at most the budget for a connection
    # instead of opening connections without end (rate limits wait longer,
    # see _storage).
    pool_options = {
        "max_connections": 64,
        "timeout": settings.budget,
        **_client_options(settings, options, asyncio),
    }
    try:
        pool = module.BlockingConnectionPool.from_url(client_url, **pool_options)
    except ValueError as exc:
        raise _bad(url, str(exc)) from None
    return RedisConnection(client=module.Redis.from_pool(pool), settings=settings)


def _hosts(url: str, netloc: str, default_port: int) -> tuple[dict[str, str], list[tuple[str, int]]]:
    """User info and ``host:port`` pairs of a comma-separated netloc."""
    auth: dict[str, str] = {}
    if "@" in netloc:
        userinfo, netloc = netloc.rsplit("@", 1)
        user, _, password = userinfo.partition(":")
        if user:
            auth["username"] = unquote(user)
        if password:
            auth["password"] = unquote(password)
    hosts = []
    for item in netloc.split(","):
        host, _, port = item.strip().rpartition(":") if ":" in item else (item.strip(), "", "")
        if not host or (port and not port.isdigit()):
            raise _bad(url, f"expected host:port[,host:port...], got {item!r}")
        hosts.append((host.strip("[]"), int(port) if port else default_port))
    return auth, hosts


def _query_options(url: str, query: str) -> dict[str, Any]:
    """redis-py connection settings from a query string, typed as redis-py types them."""
    import redis.connection

    # Untyped in redis-py.
    parse_url: Any = redis.connection.parse_url
    try:
        options = dict(parse_url("redis://localhost/?" + query)) if query else {}
    except ValueError as exc:
        raise _bad(url, str(exc)) from None
    if "ssl" in options:
        options["ssl"] = _flag(url, "ssl", options["ssl"])
    return options


def _sentinel(
    url: str, client_url: str, ours: dict[str, str], options: dict[str, Any], asyncio: bool
) -> RedisConnection:
    settings = _Settings(url, ours, options)
    parts = urlsplit(client_url)
    auth, hosts = _hosts(url, parts.netloc, 26379)
    path = [unquote(p) for p in parts.path.split("/") if p]
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise _bad(url, "expected redis+sentinel://host:port[,host:port...]/<service name>[/<db>]")
    sentinel_options: dict[str, Any] = {
        key: value
        for key, value in _client_options(settings, {}, asyncio).items()
        if key in ("socket_timeout", "socket_connect_timeout", "retry")
    }
    for name in ("username", "password"):
        if f"sentinel_{name}" in ours:
            sentinel_options[name] = ours[f"sentinel_{name}"]
    client_options = {
        **auth,
        **({"db": int(path[1])} if len(path) == 2 else {}),
        **_query_options(url, parts.query),
        **options,
    }
    if asyncio:
        import redis.asyncio
        import redis.asyncio.sentinel

        sentinel_class: Any = redis.asyncio.sentinel.Sentinel
        redis_class: Any = redis.asyncio.Redis
    else:
        import redis
        import redis.sentinel

        sentinel_class = redis.sentinel.Sentinel
        redis_class = redis.Redis
    sentinel = sentinel_class(hosts, sentinel_kwargs=sentinel_options)
    client = sentinel.master_for(
        path[0], redis_class=redis_class, **_client_options(settings, client_options, asyncio)
    )
    # The clients of the sentinels themselves: closed with the primary's.
    return RedisConnection(client=client, settings=settings, closing=tuple(sentinel.sentinels))


def _cluster(
    url: str, client_url: str, ours: dict[str, str], options: dict[str, Any], asyncio: bool
) -> RedisConnection:
    from redis.exceptions import RedisClusterException, RedisError

    from bisman_ratelimit.core import StorageUnavailable

    settings = _Settings(url, ours, options)
    parts = urlsplit(client_url)
    auth, hosts = _hosts(url, parts.netloc, 6379)
    if parts.path.strip("/") not in ("", "0"):
        raise _bad(url, "Redis Cluster has only database 0")
    client_options = _client_options(
        settings, {**auth, **_query_options(url, parts.query), **options}, asyncio
    )
    client_options.pop("db", None)
    try:
        if asyncio:
            import redis.asyncio.cluster

            cluster: Any = redis.asyncio.cluster
        else:
            import redis.cluster

            cluster = redis.cluster
        nodes = [cluster.ClusterNode(host, port) for host, port in hosts]
        client = cluster.RedisCluster(startup_nodes=nodes, **client_options)
    except (RedisError, RedisClusterException) as exc:
        # The synchronous client reads the slot map when made.
        raise StorageUnavailable(f"Redis Cluster at {masked_url(url)!r} is unavailable: {exc}") from exc
    return RedisConnection(client=client, settings=settings)


# Schemes whose URLs name a Redis client (the stores take these too).
REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "redis+cluster")
Connector = Callable[[str, str, dict[str, str], dict[str, Any], bool], RedisConnection]
_CONNECTORS: dict[str, Connector] = {
    "redis": _plain,
    "rediss": _plain,
    "unix": _plain,
    "redis+sentinel": _sentinel,
    "redis+cluster": _cluster,
}


_BACKENDS: dict[str, BackendFactory] = {
    "memory": _memory,
    **{scheme: _redis_storage for scheme in _CONNECTORS},
}


def register_backend(scheme: str, factory: BackendFactory) -> None:
    """Make ``scheme://`` URLs build storage with ``factory(url, asyncio, options)``."""
    if not scheme.isidentifier() and not scheme.replace("+", "").replace("-", "").isalnum():
        raise InvalidArgument(f"bad URL scheme {scheme!r}")
    _BACKENDS[scheme.lower()] = factory


def backend_schemes() -> frozenset[str]:
    """The URL schemes storage can be built from: the built-in ones and those registered."""
    return frozenset(_BACKENDS)


@overload
def storage_from_url(url: str, *, asyncio: Literal[False] = False, **options: Any) -> Storage: ...
@overload
def storage_from_url(url: str, *, asyncio: Literal[True], **options: Any) -> AsyncStorage: ...
@overload
def storage_from_url(url: str, *, asyncio: bool, **options: Any) -> Storage | AsyncStorage: ...


def storage_from_url(url: str, *, asyncio: bool = False, **options: Any) -> Storage | AsyncStorage:
    """Build a backend from a URL such as ``memory://`` or ``redis://localhost:6380/0``."""
    if not isinstance(url, str) or "://" not in url:
        raise InvalidArgument(
            f"bad storage URL {url!r}: expected 'memory://' or 'redis://host:port/db' "
            f"(schemes: {', '.join(sorted(_BACKENDS))})"
        )
    scheme = url.split("://", 1)[0].lower()
    factory = _BACKENDS.get(scheme)
    if factory is None:
        raise InvalidArgument(
            f"unsupported storage URL scheme {scheme + '://'!r} in {masked_url(url)!r}: "
            f"expected one of {', '.join(s + '://' for s in sorted(_BACKENDS))}"
        )
    return factory(url, asyncio, dict(options))
