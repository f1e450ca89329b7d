"""django-ratelimit's API on this library's engine: moving over is a change of imports.

::

    from bisman_ratelimit_django.compat import ratelimit          # django_ratelimit.decorators
    from bisman_ratelimit_django.compat import Ratelimited        # django_ratelimit.exceptions
    from bisman_ratelimit_django.compat import get_usage, is_ratelimited  # django_ratelimit.core

    @ratelimit(key="ip", rate="5/m")
    def login(request): ...

It behaves as django-ratelimit 4.x documents: ``group`` defaults to the
view's dotted name; counts run in fixed windows of the rate's period and a
request is limited once the count passes the rate; ``block=True`` raises
:class:`Ratelimited` (a ``PermissionDenied``, so 403), ``block=False`` sets
``request.limited``. Its settings are read with its defaults:
``RATELIMIT_ENABLE``, ``RATELIMIT_VIEW`` (with :class:`RatelimitMiddleware`),
``RATELIMIT_FAIL_OPEN``, ``RATELIMIT_IP_META_KEY``, ``RATELIMIT_IPV4_MASK``,
``RATELIMIT_IPV6_MASK`` and ``RATELIMIT_EXCEPTION_CLASS``.

The counters live in the storage ``BISMAN_RATELIMIT`` names (memory or
Redis, with its fallback and breaker, its metrics); the limits of every
decorator on a view are counted in one storage call. Query and form values
are escaped into the keys (long ones digested); header values, which may be
credentials, are kept as a digest only. See docs/migrating.md.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import math
import re
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypedDict, TypeVar

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, PermissionDenied
from django.core.signals import setting_changed
from django.http import HttpRequest, HttpResponseBase
from django.utils.module_loading import import_string

from bisman_ratelimit import AsyncLimiter, Limiter
from bisman_ratelimit.core import (
    Algorithm,
    InvalidLimit,
    Limit,
    MultiDecision,
    OutagePolicy,
    StorageError,
    adrive,
    drive,
    escape,
    make_key,
)
from bisman_ratelimit.web import covers, outage_reaction

from ._runtime import Runtime, get_runtime

__all__ = [
    "ALL",
    "UNSAFE",
    "RatelimitMiddleware",
    "Ratelimited",
    "Usage",
    "get_usage",
    "is_ratelimited",
    "ratelimit",
]

# django-ratelimit's method groups.
ALL = (None,)
UNSAFE = ("DELETE", "PATCH", "POST", "PUT")

V = TypeVar("V", bound=Callable[..., Any])
RateSource = str | tuple[int, int] | Callable[..., Any] | None
KeyFunction = Callable[[str, HttpRequest], str]


class Ratelimited(PermissionDenied):
    """Raised by ``@ratelimit(block=True)`` for a request over its rate: a 403 unless handled."""


class Usage(TypedDict):
    """What :func:`get_usage` returns."""

    count: int
    limit: int
    should_limit: bool
    time_left: int


# What a request gets when the storage fails and RATELIMIT_FAIL_OPEN is false (django-ratelimit's figures).
_FAILED = Usage(count=0, limit=0, should_limit=True, time_left=-1)
# Values longer than this are digested (as header values always are): a form field can be megabytes.
_LONGEST_VALUE = 128
# django-ratelimit counts in fixed windows of the rate's period.
_FIXED: Algorithm = "fixed_window"
_SECONDS = re.compile(r"\s*\d+\s*")


# -- settings


@dataclass(frozen=True)
class _Settings:
    enable: bool
    fail_open: bool | None
    ip_meta_key: Callable[[HttpRequest], str] | str | None
    ipv4_mask: int
    ipv6_mask: int
    exception: type[Exception]


def _read_settings() -> _Settings:
    fail_open = getattr(settings, "RATELIMIT_FAIL_OPEN", None)
    meta: Any = getattr(settings, "RATELIMIT_IP_META_KEY", None) or None
    if isinstance(meta, str) and "." in meta:
        meta = import_string(meta)
    if meta is not None and not callable(meta) and not isinstance(meta, str):
        raise ImproperlyConfigured(
            f"RATELIMIT_IP_META_KEY must be a request.META key, a callable or its dotted path, got {meta!r}"
        )
    masks = {}
    for name, default, top in (("RATELIMIT_IPV4_MASK", 32, 32), ("RATELIMIT_IPV6_MASK", 64, 128)):
        mask = getattr(settings, name, default)
        if isinstance(mask, bool) or not isinstance(mask, int) or not 0 <= mask <= top:
            raise ImproperlyConfigured(f"{name} must be a whole number from 0 to {top}, got {mask!r}")
        masks[name] = mask
    exception: Any = getattr(settings, "RATELIMIT_EXCEPTION_CLASS", None) or Ratelimited
    if isinstance(exception, str):
        exception = import_string(exception)
    if not (isinstance(exception, type) and issubclass(exception, Exception)):
        raise ImproperlyConfigured(
            f"RATELIMIT_EXCEPTION_CLASS must be an exception class or its dotted path, got {exception!r}"
        )
    return _Settings(
        exception=exception,
        enable=bool(getattr(settings, "RATELIMIT_ENABLE", True)),
        fail_open=None if fail_open is None else bool(fail_open),
        ip_meta_key=meta,
        ipv4_mask=masks["RATELIMIT_IPV4_MASK"],
        ipv6_mask=masks["RATELIMIT_IPV6_MASK"],
    )


class _Engine:
    """The settings and the runtime one configuration counts with, built once."""

    def __init__(self, runtime: Runtime, conf: _Settings) -> None:
        self.runtime = runtime
        self.conf = conf
        self.enabled = conf.enable and runtime.enabled
        # RATELIMIT_FAIL_OPEN when set; else BISMAN_RATELIMIT's ON_OUTAGE; else closed, as django-ratelimit.
        if conf.fail_open is not None:
            self.policy = OutagePolicy.from_fail_open(conf.fail_open)
        elif runtime.settings.on_outage is not None:
            self.policy = runtime.settings.on_outage
        else:
            self.policy = OutagePolicy.from_fail_open(False)
        self.metrics = runtime.settings.metrics


_engine: _Engine | None = None


def _get_engine() -> _Engine:
    global _engine
    runtime = get_runtime()
    engine = _engine
    if engine is None or engine.runtime is not runtime:
        engine = _engine = _Engine(runtime, _read_settings())
    return engine


def _reset(*, setting: str, **kwargs: Any) -> None:
    global _engine
    if setting.startswith("RATELIMIT_") or setting == "BISMAN_RATELIMIT":
        _engine = None


setting_changed.connect(_reset)


# -- rates


def _parse_rate(rate: object) -> tuple[int, float]:
    """``(count, seconds)`` of a rate string or tuple; a count of 0 refuses every request."""
    if isinstance(rate, tuple):
        if (
            len(rate) == 2
            and all(isinstance(n, int) and not isinstance(n, bool) for n in rate)
            and rate[0] >= 0
            and rate[1] > 0
        ):
            return rate[0], float(rate[1])
        raise InvalidLimit(f"a rate tuple must be (count, seconds), e.g. (100, 60), got {rate!r}")
    if not isinstance(rate, str):
        raise InvalidLimit(f"a rate must be a string such as '5/m', a (count, seconds) tuple, got {rate!r}")
    amount, _, period = rate.partition("/")
    if _SECONDS.fullmatch(period):
        period += "s"  # django-ratelimit reads a bare number as seconds: "100/300"
    if amount.strip() == "0":
        return 0, Limit.parse(f"1/{period}").period
    limit = Limit.parse(f"{amount}/{period}")
    return limit.amount, limit.period


@functools.lru_cache(maxsize=1024)
def _stored_limit(count: int, seconds: float) -> Limit:
    # One more than the rate: the request that passes it is counted too, so that
    # should_limit (count > rate) reads as django-ratelimit's, peeks included.
    return Limit(count + 1, seconds)


def _rate_getter(rate: RateSource) -> Callable[[str, HttpRequest], tuple[int, float] | None]:
    if rate is None:
        return lambda group, request: None
    if isinstance(rate, str) and "/" not in rate:
        path = rate

        def imported(group: str, request: HttpRequest) -> tuple[int, float] | None:
            return _called_rate(_imported(path)(group, request))

        return imported
    if callable(rate):
        function = rate
        return lambda group, request: _called_rate(function(group, request))
    parsed = _parse_rate(rate)  # a bad rate fails where it is written
    return lambda group, request: parsed


_rates: dict[object, tuple[int, float]] = {}


def _called_rate(value: object) -> tuple[int, float] | None:
    if value is None:
        return None
    if not isinstance(value, (str, tuple)):
        return _parse_rate(value)
    found = _rates.get(value)
    if found is None:
        found = _parse_rate(value)
        if len(_rates) >= 1024:
            _rates.clear()
        _rates[value] = found
    return found


@functools.lru_cache(maxsize=256)
def _imported(path: str) -> Callable[..., Any]:
    found = import_string(path)
    if not callable(found):
        raise ImproperlyConfigured(f"{path!r} is not a callable")
    return found  # type: ignore[no-any-return]


# -- keys


@functools.lru_cache(maxsize=4096)
def _masked(ip: str, v4: int, v6: int) -> str:
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return ip  # not an address (a header's text, say): counted as it is
    # A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d: each is its own IPv4 client, not
    # a host of the one IPv6 network ::/64 (as TRUSTED_PROXIES and the middleware count them).
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    mask = v6 if address.version == 6 else v4
    return str(ipaddress.ip_network(f"{address}/{mask}", strict=False).network_address)


def _ip(request: HttpRequest) -> str:
    engine = _get_engine()
    conf = engine.conf
    meta = conf.ip_meta_key
    if meta is None:
        peer = request.META.get("REMOTE_ADDR")
        if not peer:
            raise ImproperlyConfigured(
                "IP address in REMOTE_ADDR is empty: set RATELIMIT_IP_META_KEY, or trust your proxies "
                "with BISMAN_RATELIMIT['TRUSTED_PROXIES']"
            )
        client_ip = engine.runtime.client_ip
        if client_ip.reads_headers:
            ip = client_ip.client(peer, request.META.get(engine.runtime.forwarded_meta)) or peer
        else:
            ip = peer
    elif callable(meta):
        ip = meta(request)
    elif meta in request.META:
        ip = request.META[meta]
    else:
        raise ImproperlyConfigured(f"Could not get IP address from {meta!r}")
    return _masked(str(ip), conf.ipv4_mask, conf.ipv6_mask)


def _user(request: HttpRequest) -> str:
    return str(request.user.pk)


def _user_or_ip(request: HttpRequest) -> str:
    if request.user.is_authenticated:
        return str(request.user.pk)
    return _ip(request)


_SIMPLE_KEYS: dict[str, Callable[[HttpRequest], str]] = {"ip": _ip, "user": _user, "user_or_ip": _user_or_ip}


def _key_getter(key: object) -> tuple[KeyFunction, bool, bool]:
    """The function of (group, request) giving a key's value; whether it may touch the database;
    whether its values may be credentials (header values, as the native plugin holds them)."""
    if not key:
        raise ImproperlyConfigured("Ratelimit key must be specified")
    if callable(key):
        return key, True, False
    if not isinstance(key, str):
        raise ImproperlyConfigured(f"a ratelimit key must be a string or a callable, got {key!r}")
    simple = _SIMPLE_KEYS.get(key)
    if simple is not None:
        return (lambda group, request: simple(request)), key != "ip" or _meta_is_callable(), False
    if ":" in key:
        accessor, name = key.split(":", 1)
        if accessor == "header":
            meta = "HTTP_" + name.replace("-", "_").upper()
            return (lambda group, request: request.META.get(meta, "")), False, True
        if accessor == "get":
            return (lambda group, request: request.GET.get(name, "")), False, False
        if accessor == "post":
            return (lambda group, request: request.POST.get(name, "")), False, False
        raise ImproperlyConfigured(f"Unknown ratelimit key: {key} (expected header:, get: or post:)")
    if "." in key:
        return (lambda group, request: _imported(key)(group, request)), True, False
    raise ImproperlyConfigured(
        f"Could not understand ratelimit key: {key} (expected ip, user, user_or_ip, header:<name>, "
        "get:<field>, post:<field>, a callable or its dotted path)"
    )


def _meta_is_callable() -> bool:
    meta = getattr(settings, "RATELIMIT_IP_META_KEY", None)
    return callable(meta) or (isinstance(meta, str) and "." in meta)


def _value_text(value: object, secret: bool) -> str:
    if isinstance(value, bytes):
        value = value.decode("latin-1")  # one character per byte: distinct bytes stay distinct
    if not isinstance(value, str):
        raise ImproperlyConfigured(f"a ratelimit key function must return a string, got {value!r}")
    text = escape(value)
    if secret or len(text) > _LONGEST_VALUE:
        # "#" never appears in an escaped value, so a digest cannot stand for another value.
        return "#" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return text


# -- what to count


def _methods(method: object) -> frozenset[str] | None:
    if method == ALL or method is None:
        return None
    names = [method] if isinstance(method, str) else method
    if not isinstance(names, (list, tuple, set, frozenset)) or not all(
        isinstance(m, str) and m for m in names
    ):
        raise ImproperlyConfigured(
            f"method must be a method name, a list of them, ALL or UNSAFE; got {method!r}"
        )
    return frozenset(m.upper() for m in names)


class _Rule:
    """One ``@ratelimit(...)`` (or one call of :func:`get_usage`), checked once."""

    __slots__ = ("block", "group", "key", "methods", "needs_sync", "rate", "secret", "tag")

    def __init__(
        self, *, group: str | None, key: object, rate: RateSource, method: object, block: bool
    ) -> None:
        if group is not None and (not isinstance(group, str) or not group):
            raise ImproperlyConfigured(f"group must be a non-empty string, got {group!r}")
        self.group = group
        self.block = bool(block)
        self.methods = _methods(method)
        # Each method list counts apart, as in django-ratelimit's cache keys.
        self.tag = "all" if self.methods is None else "+".join(sorted(self.methods))
        self.rate = _rate_getter(rate)
        self.key, needs_sync, self.secret = _key_getter(key)
        self.needs_sync = needs_sync or callable(rate) or (isinstance(rate, str) and "/" not in rate)

    def applies_to(self, method: str | None) -> bool:
        # Unlike django-ratelimit, a GET rule counts HEAD requests: the view answers both alike.
        return covers(self.methods, method or "")


class _Item(NamedTuple):
    """What one rule counts for one request."""

    key: str
    amount: int
    period: float
    block: bool

    @property
    def stored(self) -> Limit:
        return _stored_limit(self.amount, self.period)


def _items(request: HttpRequest, rules: Sequence[tuple[_Rule, str]]) -> list[_Item]:
    """The counters a request touches; rules of other methods and without a rate count nothing."""
    out: list[_Item] = []
    for rule, group in reversed(rules):  # django-ratelimit's order: the outermost decorator first
        if not rule.applies_to(request.method):
            continue
        rate = rule.rate(group, request)
        if rate is None:
            continue
        value = _value_text(rule.key(group, request), rule.secret)
        # rl:dj:{value}:<group>:<methods>: the value (escaped, so brace-free) is
        # the Cluster hash tag, so one client's counters share a slot.
        out.append(_Item(f"rl:dj:{{{value}}}:{make_key(group, rule.tag)}", rate[0], rate[1], rule.block))
    return out


# -- counting, written once for sync and async views

Entries = list[tuple[str, Limit, Algorithm, int]]
# ("hit_many" | "peek_many", entries) or ("refund_many", entries, at)
Op = tuple[Any, ...]


def _count(items: list[_Item], increment: bool) -> Generator[Op, MultiDecision, list[Usage | None]]:
    """Hit (or peek at) the counters of ``items``: one storage call unless a rate is passed.

    ``items`` are in django-ratelimit's order, outermost decorator first: it
    counts each rule on its own, and stops at the first blocking rule over
    its rate, so the rules after that one count nothing (their usage is
    None). ``hit_many`` counts all or nothing: when a counter is over, the
    others it should count are hit again without it, and those it should
    not have counted are given back.
    """
    usages: list[Usage | None] = [None] * len(items)
    for index, item in enumerate(items):
        if item.amount == 0:  # a rate of 0 refuses everything; no counter to keep
            counted = 1 if increment else 0
            usages[index] = Usage(
                count=counted, limit=0, should_limit=counted > 0, time_left=math.ceil(item.period)
            )
    pending = [index for index, item in enumerate(items) if item.amount > 0]
    if not increment:
        if pending:
            multi = yield ("peek_many", _entries(items, pending))
            _read(items, pending, multi, usages, increment=False)
        return usages
    stop = _stop(items, usages)
    pending = [index for index in pending if index < stop]
    while pending:
        multi = yield ("hit_many", _entries(items, pending))
        _read(items, pending, multi, usages, increment=True)
        stop = _stop(items, usages)
        if multi.allowed:
            beyond = [index for index in pending if index > stop]
            if beyond:
                yield ("refund_many", _entries(items, beyond), multi.at)
                for index in beyond:
                    usages[index] = None
            break
        # Nothing was consumed: hit again the counters that had room, up to the stop.
        allowed = [i for i, d in zip(pending, multi.decisions, strict=True) if d.allowed and i < stop]
        for index in pending:
            if index > stop:
                usages[index] = None
        pending = allowed
    return usages


def _entries(items: list[_Item], indexes: list[int]) -> Entries:
    return [(items[i].key, items[i].stored, _FIXED, 1) for i in indexes]


def _read(
    items: list[_Item],
    indexes: list[int],
    multi: MultiDecision,
    usages: list[Usage | None],
    *,
    increment: bool,
) -> None:
    for index, decision in zip(indexes, multi.decisions, strict=True):
        rate = items[index].amount
        # A denied hit is one past the stored rate + 1; a peek reads the count as it is.
        count = rate + 1 - decision.remaining if decision.allowed or not increment else rate + 1
        usages[index] = Usage(
            count=count, limit=rate, should_limit=count > rate, time_left=math.ceil(decision.reset_after)
        )


def _stop(items: list[_Item], usages: list[Usage | None]) -> int:
    """The first blocking rule over its rate (len(items) if none): the rules after it are not counted."""
    for index, (item, usage) in enumerate(zip(items, usages, strict=True)):
        if item.block and usage is not None and usage["should_limit"]:
            return index
    return len(items)


def _perform(limiter: Limiter) -> Callable[[Op], MultiDecision]:
    def perform(op: Op) -> MultiDecision:
        if op[0] == "hit_many":
            return limiter.hit_many(op[1])
        if op[0] == "peek_many":
            return limiter.peek_many(op[1])
        return limiter.refund_many(op[1], op[2])

    return perform


def _aperform(limiter: AsyncLimiter) -> Callable[[Op], Awaitable[MultiDecision]]:
    async def perform(op: Op) -> MultiDecision:
        if op[0] == "hit_many":
            return await limiter.hit_many(op[1])
        if op[0] == "peek_many":
            return await limiter.peek_many(op[1])
        return await limiter.refund_many(op[1], op[2])

    return perform


def _on_outage(engine: _Engine, request: HttpRequest, items: list[_Item], exc: StorageError) -> str:
    keys = [item.key for item in items]
    what = f"{request.method} {request.path}"
    return outage_reaction(engine.policy, keys, exc, what, engine.runtime.outages, engine.metrics)


def _failed(items: list[_Item], reaction: str) -> list[Usage | None]:
    return [None if reaction == "open" else _FAILED for _ in items]


def _usages(engine: _Engine, request: HttpRequest, items: list[_Item], increment: bool) -> list[Usage | None]:
    runtime = engine.runtime
    try:
        found: list[Usage | None] = list(drive(_count(items, increment), _perform(runtime.limiter)))
    except StorageError as exc:
        reaction = _on_outage(engine, request, items, exc)
        if reaction != "fallback":
            return _failed(items, reaction)
        return list(drive(_count(items, increment), _perform(runtime.local()[0])))
    if runtime.outages.down:
        runtime.outages.recovered()
    return found


async def _ausages(
    engine: _Engine, request: HttpRequest, items: list[_Item], increment: bool
) -> list[Usage | None]:
    runtime = engine.runtime
    limiter = runtime.async_limiter_for(request)
    try:
        if limiter is None:  # under WSGI: the sync client, off Django's throwaway loop
            found = await sync_to_async(_usages_or_raise, thread_sensitive=False)(
                runtime.limiter, items, increment
            )
        else:
            found = list(await adrive(_count(items, increment), _aperform(limiter)))
    except StorageError as exc:
        reaction = _on_outage(engine, request, items, exc)
        if reaction != "fallback":
            return _failed(items, reaction)
        return list(await adrive(_count(items, increment), _aperform(runtime.local()[1])))
    if runtime.outages.down:
        runtime.outages.recovered()
    return found


def _usages_or_raise(limiter: Limiter, items: list[_Item], increment: bool) -> list[Usage | None]:
    return list(drive(_count(items, increment), _perform(limiter)))


def _over(items: list[_Item], usages: list[Usage | None]) -> list[_Item]:
    return [
        item for item, usage in zip(items, usages, strict=True) if usage is not None and usage["should_limit"]
    ]


def _record(engine: _Engine, route: str, over: list[_Item]) -> None:
    if not over:
        engine.metrics.record_decision(route=route, allowed=True)
    elif any(item.block for item in over):
        engine.metrics.record_decision(route=route, allowed=False, reason="client")
    else:
        engine.metrics.record_decision(route=route, allowed=True, reason="shadow")


# -- the public surface


def _group_of(fn: Callable[..., Any]) -> str:
    """The dotted name a view's counters are grouped under when no ``group`` is given."""
    if isinstance(fn, functools.partial):
        fn = fn.func  # method_decorator hands over partial(bound method)
    view_class = getattr(fn, "view_class", None)
    if view_class is not None:
        return f"{view_class.__module__}.{view_class.__qualname__}"
    owner = getattr(fn, "__self__", None)
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    if owner is not None and "." not in name:
        name = f"{type(owner).__qualname__}.{name}"
    return f"{getattr(fn, '__module__', None) or 'views'}.{name}"


def get_usage(
    request: HttpRequest,
    group: str | None = None,
    fn: Callable[..., Any] | None = None,
    key: object = None,
    rate: RateSource = None,
    method: object = ALL,
    increment: bool = False,
) -> Usage | None:
    """The count, limit, time left and verdict of one rate for ``request``; None when nothing limits it.

    ``increment=True`` counts the request; the default only looks.
    """
    if group is None and fn is None:
        raise ImproperlyConfigured("get_usage must be called with either `group` or `fn` arguments")
    engine = _get_engine()
    if not engine.enabled:
        return None
    rule = _Rule(group=group, key=key, rate=rate, method=method, block=True)
    if not rule.applies_to(request.method):
        return None
    name = group if group is not None else _group_of(fn)  # type: ignore[arg-type]
    items = _items(request, [(rule, name)])
    if not items:
        return None
    return _usages(engine, request, items, increment)[0]


def is_ratelimited(
    request: HttpRequest,
    group: str | None = None,
    fn: Callable[..., Any] | None = None,
    key: object = None,
    rate: RateSource = None,
    method: object = ALL,
    increment: bool = False,
) -> bool:
    """Whether ``request`` is over the rate: :func:`get_usage`'s ``should_limit``."""
    usage = get_usage(request, group, fn, key, rate, method, increment)
    return usage is not None and usage["should_limit"]


# Decorated views carry their rules; the outermost decorator counts them all.
_STACK = "bisman_ratelimit_compat_rules"
# The rules already counted for a request.
_COUNTED = "_bisman_ratelimit_compat_counted"


def _decide(
    engine: _Engine, request: HttpRequest, route: str, items: list[_Item], usages: list[Usage | None]
) -> None:
    """Set ``request.limited``; raise :class:`Ratelimited` when a blocking rule is over its rate."""
    over = _over(items, usages)
    if engine.metrics is not None:
        _record(engine, route, over)
    request.limited = bool(over) or getattr(request, "limited", False)  # type: ignore[attr-defined]
    if any(item.block for item in over):
        raise engine.conf.exception()


def _pending(request: HttpRequest, stack: tuple[tuple[_Rule, str], ...]) -> tuple[tuple[_Rule, str], ...]:
    counted: frozenset[_Rule] = request.__dict__.get(_COUNTED, frozenset())
    pending = tuple(pair for pair in stack if pair[0] not in counted)
    if pending:
        request.__dict__[_COUNTED] = counted | {rule for rule, _ in pending}
    return pending


def ratelimit(
    group: str | None = None,
    key: object = None,
    rate: RateSource = None,
    method: object = ALL,
    block: bool = True,
) -> Callable[[V], V]:
    """django-ratelimit's decorator: ``@ratelimit(key="ip", rate="5/m")``.

    Over the rate, ``block=True`` raises :class:`Ratelimited` (403);
    ``block=False`` lets the view run with ``request.limited`` set.
    """
    rule = _Rule(group=group, key=key, rate=rate, method=method, block=block)

    def decorator(fn: V) -> V:
        name = group or _group_of(fn)
        stack: tuple[tuple[_Rule, str], ...] = (*getattr(fn, _STACK, ()), (rule, name))
        needs_sync = any(r.needs_sync for r, _ in stack)
        wrapper: Callable[..., Any]
        if iscoroutinefunction(fn):

            async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                engine = _get_engine()
                pending = _pending(request, stack) if engine.enabled else ()
                if pending:
                    if needs_sync:  # request.user and key functions may touch the database
                        items = await sync_to_async(_items)(request, pending)
                    else:
                        items = _items(request, pending)
                    usages = await _ausages(engine, request, items, True) if items else []
                    _decide(engine, request, name, items, usages)
                elif not hasattr(request, "limited"):
                    request.limited = False  # type: ignore[attr-defined]
                return await fn(request, *args, **kwargs)

        else:

            def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                engine = _get_engine()
                pending = _pending(request, stack) if engine.enabled else ()
                if pending:
                    items = _items(request, pending)
                    usages = _usages(engine, request, items, True) if items else []
                    _decide(engine, request, name, items, usages)
                elif not hasattr(request, "limited"):
                    request.limited = False  # type: ignore[attr-defined]
                return fn(request, *args, **kwargs)

        functools.update_wrapper(wrapper, fn)
        setattr(wrapper, _STACK, stack)
        return wrapper  # type: ignore[return-value]

    return decorator


ratelimit.ALL = ALL  # type: ignore[attr-defined]
ratelimit.UNSAFE = UNSAFE  # type: ignore[attr-defined]
is_ratelimited.ALL = ALL  # type: ignore[attr-defined]
is_ratelimited.UNSAFE = UNSAFE  # type: ignore[attr-defined]
get_usage.ALL = ALL  # type: ignore[attr-defined]
get_usage.UNSAFE = UNSAFE  # type: ignore[attr-defined]


class RatelimitMiddleware:
    """django-ratelimit's middleware: :class:`Ratelimited` is answered by the view ``RATELIMIT_VIEW`` names.

    The view gets ``(request, exception)``. Put the middleware toward the end of ``MIDDLEWARE``.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        path = getattr(settings, "RATELIMIT_VIEW", None)
        if not path:
            raise ImproperlyConfigured("RatelimitMiddleware needs RATELIMIT_VIEW, the dotted path of a view")
        self.view: Callable[[HttpRequest, Ratelimited], HttpResponseBase] = import_string(path)
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponseBase | None:
        if not isinstance(exception, Ratelimited):
            return None
        return self.view(request, exception)
