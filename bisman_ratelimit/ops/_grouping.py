"""Which namespace a key belongs to, for the keyspace audits."""

from __future__ import annotations

import math
import re
from collections.abc import Callable

from bisman_ratelimit.core import InvalidArgument
from bisman_ratelimit.stores import Namespace, NamespaceRegistry, default_registry

OTHER_NAMESPACE = "other"

Progress = Callable[[float, float], None]
"""Called with (done, total) as long work advances."""


def above_policy(ttl: float | None, policy_ttl: float | None) -> bool:
    """Whether a key that expires in ``ttl`` seconds outlives its namespace's TTL."""
    return ttl is not None and policy_ttl is not None and ttl > policy_ttl


def above_policy_reason(namespace: Namespace) -> str:
    """Why a key of ``namespace`` may outlive the namespace's TTL, and which of the two wins."""
    if namespace.prefix == "rl" or namespace.prefix.startswith("rl:"):
        return (
            "a rate limit's key lives as long as its window needs, and the window wins over the namespace TTL"
        )
    if namespace.prefix == "auth:sess:user":
        return (
            "a user's index of sessions lives as long as its longest session may: "
            "the store's absolute_lifetime is longer than the namespace TTL"
        )
    return "its writer gave a TTL longer than the namespace's"


def whole_seconds(ttl: float) -> int:
    """A TTL read in milliseconds, in the whole seconds a writer gave (4507.2 s left of 4508 -> 4508)."""
    return math.ceil(ttl)


def as_text(key: bytes | str) -> str:
    """A key name as Redis returned it, as text; bytes that are not UTF-8 are kept (as surrogates).

    :func:`key_bytes` gives the key back, so it can be read again, and
    :func:`show_key` prints them as ``\\xHH``.
    """
    return key if isinstance(key, str) else key.decode("utf-8", "surrogateescape")


def key_bytes(key: str) -> bytes:
    """The key named by text from :func:`as_text` (or from ``argv``, which Python decodes the same way)."""
    return key.encode("utf-8", "surrogateescape")


_SHOWN_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_READ_ESCAPES = {"\\": b"\\", "n": b"\n", "r": b"\r", "t": b"\t"}
_ESCAPE = re.compile(r"\\(?:([\\nrt])|x([0-9a-fA-F]{2})|u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8}))")
# Longer key names are cut in tables and lists, with a marker.
SHOWN_KEY_CHARS = 120


def _shown_char(char: str) -> str:
    if char in _SHOWN_ESCAPES:
        return _SHOWN_ESCAPES[char]
    if char.isprintable():
        return char
    point = ord(char)
    if 0xDC80 <= point <= 0xDCFF:  # a byte that is not UTF-8, from as_text()
        return f"\\x{point - 0xDC00:02x}"
    if point < 0x80:
        return f"\\x{point:02x}"
    return f"\\u{point:04x}" if point <= 0xFFFF else f"\\U{point:08x}"


def show_key(key: str | bytes, *, limit: int | None = None) -> str:
    """A key name as every report prints it: one line, and text that :func:`read_key` takes back.

    Control and invisible characters are escaped (``\\n``, ``\\x00``,
    ``\\u202e``), bytes that are not UTF-8 are ``\\xHH``, a backslash is
    ``\\\\``. With ``limit``, a longer name is cut there and ends with a
    marker saying how many characters were left out.
    """
    text = key if isinstance(key, str) else as_text(key)
    shown = "".join(_shown_char(char) for char in text)
    if limit is not None and len(shown) > limit:
        return f"{shown[:limit]}...[{len(shown) - limit} more]"
    return shown


def read_key(text: str) -> bytes:
    """The key that :func:`show_key` printed as ``text``; a backslash not starting an escape stays one."""
    out = bytearray()
    at = 0
    for match in _ESCAPE.finditer(text):
        out += key_bytes(text[at : match.start()])
        single, byte, short, long = match.groups()
        if single:
            out += _READ_ESCAPES[single]
        elif byte:
            out.append(int(byte, 16))
        else:
            point = int(short or long, 16)
            if point > 0x10FFFF or 0xD800 <= point <= 0xDFFF:
                raise InvalidArgument(f"bad key {text!r}: {match.group()} names no character")
            out += chr(point).encode()
        at = match.end()
    out += key_bytes(text[at:])
    return bytes(out)


class NamespaceGrouper:
    """Which namespace a key belongs to, out of a bounded set.

    A key goes to its registered namespace (longest prefix), else to the
    domain (first segment) of a registered namespace, such as the web
    plugins' ``rl:ip:{<address>}:...`` keys going to ``rl``. Other keys go to ``other``,
    or with ``open_domains`` to their own first segment (for audits, where a
    person reads the table; metrics keep the bounded form).
    """

    def __init__(self, registry: NamespaceRegistry = default_registry, *, open_domains: bool = False) -> None:
        self.registry = registry
        self.domains = frozenset(namespace.prefix.split(":", 1)[0] for namespace in registry)
        self.open_domains = open_domains

    def group(self, key: str) -> str:
        namespace = self.registry.find(key)
        if namespace is not None:
            return namespace.prefix
        domain, colon, _ = key.partition(":")
        if colon and (domain in self.domains or (self.open_domains and domain)):
            return domain
        return OTHER_NAMESPACE

    def labels(self) -> tuple[str, ...]:
        """Every group a key can fall into when ``open_domains`` is off."""
        return (
            *sorted(namespace.prefix for namespace in self.registry),
            *sorted(self.domains),
            OTHER_NAMESPACE,
        )

    def policy_ttl(self, key: str) -> float | None:
        """The TTL (seconds) that ``key``'s namespace sets, or ``None`` when it sets none."""
        namespace = self.registry.find(key)
        return None if namespace is None else namespace.ttl

    def is_ephemeral(self, group: str) -> bool:
        for namespace in self.registry:
            if namespace.prefix == group:
                return namespace.ephemeral
        return False


# --- cardinality ----------------------------------------------------------------------------------------
