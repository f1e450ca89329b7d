"""The example's chat context, call presence, flags and metrics, built once per process.

On ``memory://`` the three stores share one backend, so that the flags cache
hears a change made in this process; on Redis every process shares them.
Sessions go through Django's ``SESSION_ENGINE`` (``bisman_ratelimit_django.sessions``).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from bisman_ratelimit.metrics import RateLimitMetrics
from bisman_ratelimit.stores import ChatContext, Flags, MemoryBackend, Presence
from bisman_ratelimit.web import storage_url_from_env

# The one name every plugin, example and the command line read; a near miss warns.
STORAGE_URL = storage_url_from_env("memory://")
CHAT_KEEP = 30  # the seed keeps the last 30 messages of a thread (chat:ctx)

_backend: object = MemoryBackend() if STORAGE_URL.startswith("memory://") else STORAGE_URL
chat = ChatContext(_backend, keep=CHAT_KEEP)
presence = Presence(_backend)
flags = Flags(_backend, max_age=5.0)

registry = CollectorRegistry()
metrics = RateLimitMetrics(registry=registry)
