"""What the middleware and the decorators share: limiters and route plans, built once from settings.

A memory backend is one store served to sync and async code alike, so a
sync view and an async view count against the same counters. A Redis
asyncio client belongs to the event loop it first ran on, so URL-built
async limiters are kept per loop. Under WSGI, Django runs each async view in
a throwaway loop: there the check goes to the synchronous client in a worker
thread, never on the loop and never through a client left on a dead loop.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any, cast

from asgiref.sync import sync_to_async
from django.core.handlers.wsgi import WSGIRequest
from django.core.signals import setting_changed
from django.http import HttpRequest

from bisman_ratelimit import Algorithm, AsyncLimiter, Decision, Limit, Limiter, StorageError
from bisman_ratelimit.backends import MemoryStorage, storage_from_url
from bisman_ratelimit.web import (
    Evaluation,
    OutageLog,
    Planner,
    RateLimitConfig,
    ShadowLog,
    Verdict,
    adecide,
    decide,
    load_config,
    note_memory_default,
    template_forms,
)

from ._conf import SETTING, RateLimitSettings, get_settings

_log = logging.getLogger("bisman_ratelimit.django")
# A sync app serves as many requests at once as it has threads: a few.
_WARM_CONNECTIONS = 8


class Runtime:
    """Settings, limiters and the planner of one configuration."""

    def __init__(self, settings: RateLimitSettings) -> None:
        self.settings = settings
        self.client_ip = settings.client_ip
        self.forwarded_meta = (
            "HTTP_FORWARDED" if settings.client_ip.header == "forwarded" else "HTTP_X_FORWARDED_FOR"
        )
        self.config: RateLimitConfig | None = load_config(settings.config) if settings.config else None
        if self.config is not None:
            self.planner = Planner(config=self.config, header_style=settings.headers)
        else:
            self.planner = Planner(
                default_limits=settings.default_limits or None,
                key=settings.default_key,
                algorithm=settings.default_algorithm,
                global_limits=settings.global_limits or None,
                header_style=settings.headers,
            )
        self._paths = frozenset(route.path for route in self.config.routes) if self.config else frozenset()
        self._templates: dict[str, str] = {}
        self._url = settings.storage_url
        self._per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncLimiter] = (
            weakref.WeakKeyDictionary()
        )
        self._last_loop: asyncio.AbstractEventLoop | None = None
        self._last_async: AsyncLimiter | None = None
        self._local: tuple[Limiter, AsyncLimiter] | None = None
        # One log of storage failures for the middleware and every decorator.
        self.outages = OutageLog(logging.getLogger("bisman_ratelimit.django"))
        # What shadow limits would refuse, at WARNING so that default logging shows it; not per request.
        self.shadows = ShadowLog(logging.getLogger("bisman_ratelimit.django"))
        self._warmed = False
        self.async_limiter: AsyncLimiter | None
        if settings.limiter is not None and settings.async_limiter is not None:
            self.limiter = settings.limiter
            self.async_limiter = settings.async_limiter
        else:
            url = settings.storage_url
            if not settings.storage_configured:
                note_memory_default(logging.getLogger("bisman_ratelimit.django"))
            if url.split("://", 1)[0].lower() == "memory":
                # A memory:// URL builds a MemoryStorage, which sync and async code can share.
                storage = cast(MemoryStorage, storage_from_url(url))
                self.limiter = Limiter(storage)
                self.async_limiter = AsyncLimiter(storage)
            else:
                self.limiter = Limiter.from_url(url)
                self.async_limiter = None

    @property
    def enabled(self) -> bool:
        """False when the settings or the environment switch limiting off."""
        return self.settings.enabled

    def async_limiter_for(self, request: HttpRequest) -> AsyncLimiter | None:
        """The async limiter for the running loop; None under WSGI, where the sync one must be
        used in a worker thread (the loop is Django's throwaway one)."""
        limiter = self.async_limiter
        if limiter is None:
            if isinstance(request, WSGIRequest):
                return None
            limiter = self._loop_limiter()
        return limiter

    def warm(self) -> None:
        """Open a few connections to the storage now, once: the first requests then find them open."""
        if self._warmed or not self.enabled:
            return
        self._warmed = True
        try:
            self.limiter.warm(_WARM_CONNECTIONS)
        except StorageError as exc:
            _log.warning("could not open connections to the rate-limit storage in advance: %s", exc)

    def template(self, route: str) -> str:
        """The name the planner knows ``route`` by: the form the limits file uses, if any."""
        found = self._templates.get(route)
        if found is None:
            found = next((form for form in template_forms(route) if form in self._paths), route)
            if len(self._templates) >= 4096:
                self._templates.clear()
            self._templates[route] = found
        return found

    def decide(self, evaluation: Evaluation) -> Verdict:
        return decide(self.limiter, evaluation)

    async def adecide(self, request: HttpRequest, evaluation: Evaluation) -> Verdict:
        limiter = self.async_limiter_for(request)
        if limiter is None:
            return await sync_to_async(decide, thread_sensitive=False)(self.limiter, evaluation)
        return await adecide(limiter, evaluation)

    def local(self) -> tuple[Limiter, AsyncLimiter]:
        """Counters of this process, for requests the outage policy sends to the fallback.

        One memory store for sync and async code, built on first use.
        """
        if self._local is None:
            storage = MemoryStorage()
            self._local = (Limiter(storage), AsyncLimiter(storage))
        return self._local

    async def ahit(
        self, request: HttpRequest, key: str, limit: Limit, algorithm: Algorithm, cost: int
    ) -> Decision:
        limiter = self.async_limiter_for(request)
        if limiter is None:
            return await sync_to_async(self.limiter.hit, thread_sensitive=False)(key, limit, algorithm, cost)
        return await limiter.hit(key, limit, algorithm, cost)

    def _loop_limiter(self) -> AsyncLimiter:
        loop = asyncio.get_running_loop()
        if loop is self._last_loop and self._last_async is not None:
            return self._last_async
        limiter = self._per_loop.get(loop)
        if limiter is None:
            limiter = AsyncLimiter.from_url(self._url)
            self._per_loop[loop] = limiter
        self._last_loop, self._last_async = loop, limiter
        return limiter

    async def aclose(self) -> None:
        """Close the async client of the running loop, if one was built for it."""
        loop = asyncio.get_running_loop()
        limiter = self._per_loop.pop(loop, None)
        if self._last_loop is loop:
            self._last_loop = self._last_async = None
        if limiter is not None:
            await limiter.aclose()

    def close(self) -> None:
        """Close the clients built from ``STORAGE_URL`` (handed-over limiters are left open)."""
        if self.settings.limiter is None:
            self.limiter.close()


_runtime: Runtime | None = None


def get_runtime() -> Runtime:
    """The runtime of the current settings, built on first use."""
    global _runtime
    if _runtime is None:
        _runtime = Runtime(get_settings())
    return _runtime


def _reset(*, setting: str, **kwargs: Any) -> None:
    global _runtime
    if setting == SETTING:
        _runtime = None


setting_changed.connect(_reset)
