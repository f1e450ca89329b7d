"""Structured Redis keys: ``<domain>:<subdomain>:<id>:<field>``.

Parts that may come from user input are escaped, so that an id can neither
collide with another key nor widen a ``SCAN MATCH`` pattern built from a
prefix: ``:``, ``%``, glob characters (``* ? [ ] \\``), hash-tag braces,
whitespace and non-ASCII text are percent-encoded (UTF-8). Escaping is
injective: two different parts never give the same text.
"""

from __future__ import annotations

import re
import time
from urllib.parse import quote, unquote

from bisman_ratelimit.core._errors import InvalidArgument

# Characters left as they are; everything else is percent-encoded. Letters,
# digits and "_.-~" are always kept by quote().
_SAFE_EXTRA = "/@+=,!$&'()"
_PLAIN = re.compile(r"[A-Za-z0-9_.\-~/@+=,!$&'()]*")


def _utf8(text: str) -> bytes:
    # Lone surrogates (from a decoded header or path, say) cannot be UTF-8:
    # "surrogatepass" encodes them anyway, still one way only, so they are
    # escaped like any other character instead of failing deep in quote().
    return text.encode("utf-8", "surrogatepass")


def escape(part: object) -> str:
    """Escape one key part. ``int`` parts are written as they are."""
    if isinstance(part, bool) or not isinstance(part, (str, int)):
        raise InvalidArgument(f"a key part must be a str or int, got {part!r}")
    text = str(part)
    if _PLAIN.fullmatch(text):
        return text
    return quote(_utf8(text), safe=_SAFE_EXTRA)


_PLAIN_TAG = re.compile(r"[A-Za-z0-9_.\-~/@+=,!$&'():]*")


def hash_tag(identity: str) -> str:
    """``{identity}``, escaped like :func:`escape` but keeping ``:``.

    Braces are escaped, so the tag ends where it should and keys built from
    one identity share a Redis Cluster hash slot.
    """
    if _PLAIN_TAG.fullmatch(identity):
        return "{" + identity + "}"
    return "{" + quote(_utf8(identity), safe=_SAFE_EXTRA + ":") + "}"


def has_hash_tag(key: str) -> bool:
    """Whether Redis Cluster hashes ``key`` by a tag: a ``{`` then a ``}``, not empty between."""
    start = key.find("{")
    return start >= 0 and key.find("}", start + 1) > start + 1


_UNITS = ((86_400_000_000, "d"), (3_600_000_000, "h"), (60_000_000, "m"), (1_000_000, "s"), (1000, "ms"))
_ALGORITHM_LETTERS = {
    "fixed_window": "f",
    "sliding_window": "s",
    "sliding_log": "l",
    "token_bucket": "t",
    "gcra": "g",
}


def limit_tag(algorithm: str, period_us: int) -> str:
    """What tells one key's limits apart in storage: the algorithm's letter and the window.

    ``("sliding_window", 60_000_000)`` gives ``"s1m"``; the window is written
    in the largest unit that divides it (``d h m s ms us``). The amount is
    not part of it, so raising a limit keeps its counter.
    """
    try:
        letter = _ALGORITHM_LETTERS[algorithm]
    except KeyError:
        raise InvalidArgument(f"unknown algorithm {algorithm!r}") from None
    for size, unit in _UNITS:
        if period_us % size == 0:
            return f"{letter}{period_us // size}{unit}"
    return f"{letter}{period_us}us"


_TAG = re.compile(r"([a-z])([1-9][0-9]*)(d|h|m|s|ms|us)")
_UNIT_US = {unit: size for size, unit in _UNITS} | {"us": 1}


def parse_limit_tag(tag: str) -> tuple[str, int] | None:
    """The (algorithm, window in µs) :func:`limit_tag` wrote as ``tag``; ``None`` for other text."""
    match = _TAG.fullmatch(tag)
    if match is None:
        return None
    letter, count, unit = match.groups()
    for algorithm, known in _ALGORITHM_LETTERS.items():
        if known == letter:
            return algorithm, int(count) * _UNIT_US[unit]
    return None


def unescape(part: str) -> str:
    """Undo :func:`escape`."""
    return unquote(part, errors="surrogatepass")


def make_key(*parts: object) -> str:
    """Join escaped parts with ``:``. Every part must be non-empty."""
    if not parts:
        raise InvalidArgument("make_key() needs at least one part")
    out = []
    for index, part in enumerate(parts):
        text = escape(part)
        if not text:
            raise InvalidArgument(f"key part {index} is empty in {parts!r}")
        out.append(text)
    return ":".join(out)


def scan_pattern(prefix: str) -> str:
    """A ``SCAN MATCH`` pattern for every key under ``prefix``.

    Glob characters in ``prefix`` are backslash-escaped so they match only
    themselves; keys built by :func:`make_key` never contain them anyway.
    """
    return re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "*"


class _RedisKeys:
    """The seed's key builders, with escaping."""

    @staticmethod
    def auth_session(user_id: object) -> str:
        # The user's index of sessions, as SessionStore keeps it; the hash
        # tag is the user, so the index sits in one Redis Cluster slot.
        return f"auth:sess:user:{{{make_key(user_id)}}}"

    @staticmethod
    def rate_limit_user_route(user_id: object, route: str) -> str:
        # The key the web plugins count a per-user route limit under: the
        # hash tag keeps one user's keys in one Redis Cluster slot.
        identity = user_id if isinstance(user_id, str) else escape(user_id)
        return f"rl:user:{hash_tag(identity)}:api:{escape(route)}"

    @staticmethod
    def rate_limit_global_minute(now: float | None = None) -> str:
        minute = int((time.time() if now is None else now) // 60)
        return make_key("rl", "global", "minute", minute)

    @staticmethod
    def chat_thread_window(thread_id: object, window: int) -> str:
        # As ChatContext keeps it: a thread's keys share the thread's slot.
        return f"chat:ctx:thread:{{{make_key(thread_id)}}}:w:{make_key(window)}"

    @staticmethod
    def call_room_participants(room: object) -> str:
        return make_key("call", "room", room, "participants")


redis_keys = _RedisKeys()
