"""Storage backends, chosen by URL scheme.

``memory://`` keeps counters in this process; ``redis://``, ``rediss://``
and ``unix://`` use Redis. Third parties add schemes with
:func:`register_backend`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..errors import InvalidArgument
from .base import AsyncAdapter, AsyncStorage, Check, Spec, Storage
from .memory import MemoryStorage

__all__ = [
    "AsyncAdapter",
    "AsyncStorage",
    "Check",
    "MemoryStorage",
    "Spec",
    "Storage",
    "register_backend",
    "storage_from_url",
]

# A factory takes the URL, whether an async backend is wanted, and options.
BackendFactory = Callable[[str, bool, dict[str, Any]], Any]


def _split_options(url: str, names: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """Remove this library's own query parameters from ``url``."""
    parts = urlsplit(url)
    ours: dict[str, str] = {}
    rest = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in names:
            ours[name] = value
        else:
            rest.append((name, value))
    return urlunsplit(parts._replace(query=urlencode(rest))), ours


def _memory(url: str, asyncio: bool, options: dict[str, Any]) -> Any:
    _, ours = _split_options(url, ("max_keys",))
    parts = urlsplit(url)
    if parts.netloc or parts.path not in ("", "/"):
        raise InvalidArgument(f"bad storage URL {url!r}: memory:// takes no host or path, only ?max_keys=N")
    if "max_keys" in ours:
        try:
            options.setdefault("max_keys", int(ours["max_keys"]))
        except ValueError:
            raise InvalidArgument(f"bad storage URL {url!r}: max_keys must be a whole number") from None
    storage = MemoryStorage(**options)
    return AsyncAdapter(storage) if asyncio else storage


def _redis(url: str, asyncio: bool, options: dict[str, Any]) -> Any:
    import redis
    import redis.asyncio

    from .redis import AsyncRedisStorage, RedisStorage

    client_url, ours = _split_options(url, ("prefix",))
    parts = urlsplit(client_url)
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise InvalidArgument(f"bad storage URL {url!r}: the port must be a number") from None
    if parts.scheme != "unix" and parts.path.strip("/") and not parts.path.strip("/").isdigit():
        raise InvalidArgument(f"bad storage URL {url!r}: the path must be a database number, e.g. /0")
    prefix = ours.get("prefix", options.pop("prefix", "rl"))
    client_class = redis.asyncio.Redis if asyncio else redis.Redis
    try:
        client = client_class.from_url(client_url, **options)
    except ValueError as exc:
        raise InvalidArgument(f"bad storage URL {url!r}: {exc}") from None
    storage_class = AsyncRedisStorage if asyncio else RedisStorage
    return storage_class(client, prefix=prefix)


_BACKENDS: dict[str, BackendFactory] = {
    "memory": _memory,
    "redis": _redis,
    "rediss": _redis,
    "unix": _redis,
}


def register_backend(scheme: str, factory: BackendFactory) -> None:
    """Make ``scheme://`` URLs build storage with ``factory(url, asyncio, options)``."""
    if not scheme.isidentifier() and not scheme.replace("+", "").replace("-", "").isalnum():
        raise InvalidArgument(f"bad URL scheme {scheme!r}")
    _BACKENDS[scheme.lower()] = factory


def storage_from_url(url: str, *, asyncio: bool = False, **options: Any) -> Any:
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
            f"unsupported storage URL scheme {scheme + '://'!r} in {url!r}: "
            f"expected one of {', '.join(s + '://' for s in sorted(_BACKENDS))}"
        )
    return factory(url, asyncio, dict(options))
