"""The seed's short-lived state, on Redis or in memory, sync and async.

- sessions: server-side sessions (``auth:sess``), rolling renewal
  capped by an absolute lifetime, rotation, log out everywhere;
- chat context: the last messages of chat threads (``chat:ctx``);
- presence: call rooms and their participants (``call:room``);
- flags: feature flags (``flags:config``), cached per process.

Each store takes a URL (``redis://...``, ``memory://``), a Redis client or
a :class:`MemoryBackend` (whose clock can be injected), builds every key
with :func:`bisman_ratelimit.core.make_key` and checks every write against the
namespace TTL policy.
"""

from __future__ import annotations

from bisman_ratelimit.stores._backend import Flow, MemoryBackend, backend_from_url
from bisman_ratelimit.stores._chat import AsyncChatContext, ChatContext
from bisman_ratelimit.stores._common import encode_json
from bisman_ratelimit.stores._flags import (
    FLAG_TYPES,
    AsyncFlagAdmin,
    AsyncFlags,
    Flag,
    FlagAdmin,
    FlagChange,
    Flags,
    parse_flag_value,
)
from bisman_ratelimit.stores._namespaces import (
    DEFAULT_NAMESPACES,
    Namespace,
    NamespaceRegistry,
    default_registry,
)
from bisman_ratelimit.stores._presence import AsyncPresence, Participant, Presence, RoomState
from bisman_ratelimit.stores._sessions import (
    AsyncSessionStore,
    Session,
    SessionStore,
    is_session_id,
    new_session_id,
)
from bisman_ratelimit.stores._signing import Secret, Signer

__all__ = [
    "DEFAULT_NAMESPACES",
    "FLAG_TYPES",
    "AsyncChatContext",
    "AsyncFlagAdmin",
    "AsyncFlags",
    "AsyncPresence",
    "AsyncSessionStore",
    "ChatContext",
    "Flag",
    "FlagAdmin",
    "FlagChange",
    "Flags",
    "Flow",
    "MemoryBackend",
    "Namespace",
    "NamespaceRegistry",
    "Participant",
    "Presence",
    "RoomState",
    "Secret",
    "Session",
    "SessionStore",
    "Signer",
    "backend_from_url",
    "default_registry",
    "encode_json",
    "is_session_id",
    "new_session_id",
    "parse_flag_value",
]
