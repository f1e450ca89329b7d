"""The seed's short-lived state, on Redis or in memory, sync and async.

- :mod:`.sessions`: server-side sessions (``auth:sess``), rolling renewal
  capped by an absolute lifetime, rotation, log out everywhere;
- :mod:`.chat`: the last messages of chat threads (``chat:ctx``);
- :mod:`.presence`: call rooms and their participants (``call:room``);
- :mod:`.flags`: feature flags (``flags:config``), cached per process.

Each store takes a URL (``redis://...``, ``memory://``), a Redis client or
a :class:`MemoryBackend` (whose clock can be injected), builds every key
with :mod:`bisman_ratelimit.keys` and checks every write against the
namespace TTL policy.
"""

from __future__ import annotations

from .backend import MemoryBackend
from .chat import AsyncChatContext, ChatContext
from .flags import AsyncFlagAdmin, AsyncFlags, Flag, FlagAdmin, Flags
from .presence import AsyncPresence, Participant, Presence, RoomState
from .sessions import AsyncSessionStore, Session, SessionStore, is_session_id, new_session_id

__all__ = [
    "AsyncChatContext",
    "AsyncFlagAdmin",
    "AsyncFlags",
    "AsyncPresence",
    "AsyncSessionStore",
    "ChatContext",
    "Flag",
    "FlagAdmin",
    "Flags",
    "MemoryBackend",
    "Participant",
    "Presence",
    "RoomState",
    "Session",
    "SessionStore",
    "is_session_id",
    "new_session_id",
]
