"""Small helpers shared by the stores: validation and value encoding."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from bisman_ratelimit.core import InvalidArgument, make_key

_PREFIX = re.compile(r"[A-Za-z0-9_.\-]+(:[A-Za-z0-9_.\-]+)*")


def text(value: Any) -> str:
    """A reply from Redis (bytes) or from the memory backend (str) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def positive_seconds(name: str, value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise InvalidArgument(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


def positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgument(f"{name} must be a whole number >= 1, got {value!r}")
    return value


def tagged(part: object) -> str:
    """``{part}``, escaped: a Redis Cluster hash tag around one identity.

    Escaping turns braces into ``%7B``/``%7D``, so the tag ends where it
    should, and every key built around one identity lands in one slot.
    """
    return "{" + make_key(part) + "}"


def to_ms(seconds: float) -> int:
    """Whole milliseconds, never 0."""
    return max(1, round(seconds * 1000))


def valid_prefix(name: str, prefix: object) -> str:
    if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
        raise InvalidArgument(
            f"{name} must look like 'domain:subdomain' (letters, digits, _ . -), got {prefix!r}"
        )
    return prefix


def encode_json(value: Any, where: str) -> str:
    """``value`` as compact JSON that encodes to UTF-8.

    A lone surrogate (``"\\ud800"``, which ``json.loads`` accepts) cannot be
    written as UTF-8: such a value is written with ``\\u`` escapes instead, and
    reads back the same.
    """
    try:
        encoded = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"{where}: the value cannot be stored as JSON: {exc}") from None
    if not encoded.isascii():
        try:
            encoded.encode()
        except UnicodeEncodeError:
            return json.dumps(value, separators=(",", ":"), allow_nan=False)
    return encoded


def utf8_text(value: str, what: str) -> str:
    """``value`` unchanged if it encodes to UTF-8, else a clear error naming ``what``."""
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError as exc:
            raise InvalidArgument(
                f"{what} must be UTF-8 text, got {value!r} (a lone surrogate at index {exc.start})"
            ) from None
    return value


def decode_json(raw: Any) -> Any:
    return json.loads(text(raw))
