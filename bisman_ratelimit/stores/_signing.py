"""Signed values for cookies: HMAC-SHA256, with key rotation.

A signed value is ``<value>.<signature>``, the signature being the
URL-safe base64 of HMAC-SHA256 over the value, keyed by a key derived from
the secret and a ``salt`` naming the use (so a signature made for one use
is worthless for another). The first secret signs; every secret verifies,
so a new secret can be put first and the old one dropped once the values
it signed have expired. Signatures are compared in constant time, and the
secrets never show in a ``repr``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence

from bisman_ratelimit.core import InvalidArgument

MIN_SECRET_BYTES = 32


class Secret:
    """A secret string that hides itself from ``repr`` and ``str``."""

    __slots__ = ("_value",)

    def __init__(self, value: str | bytes | Secret) -> None:
        if isinstance(value, Secret):
            value = value.reveal()
        if isinstance(value, str):
            value = value.encode()
        if not isinstance(value, bytes):
            raise InvalidArgument(f"a secret must be str or bytes, got {type(value).__name__}")
        if len(value) < MIN_SECRET_BYTES:
            raise InvalidArgument(
                f"a signing secret must be at least {MIN_SECRET_BYTES} bytes long, got {len(value)}: "
                "use secrets.token_urlsafe(32)"
            )
        self._value = value

    def reveal(self) -> bytes:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__


class Signer:
    """Signs and verifies values with HMAC-SHA256.

    ``secrets`` is one secret or a list, newest first: the first signs,
    all verify.
    """

    def __init__(self, secrets: str | bytes | Secret | Sequence[str | bytes | Secret], *, salt: str) -> None:
        if isinstance(secrets, (str, bytes, Secret)):
            secrets = [secrets]
        if not secrets:
            raise InvalidArgument("a Signer needs at least one secret")
        if not isinstance(salt, str) or not salt:
            raise InvalidArgument(f"salt must be a non-empty str naming the use, got {salt!r}")
        self.salt = salt
        self._keys = [self._derive(Secret(secret)) for secret in secrets]

    def _derive(self, secret: Secret) -> bytes:
        return hmac.new(
            secret.reveal(), b"bisman-ratelimit.signing:" + self.salt.encode(), hashlib.sha256
        ).digest()

    @staticmethod
    def _signature(key: bytes, value: str) -> bytes:
        digest = hmac.new(key, value.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=")

    def sign(self, value: str) -> str:
        """``value`` with its signature appended."""
        if not isinstance(value, str):
            raise InvalidArgument(f"only str values are signed, got {type(value).__name__}")
        return f"{value}.{self._signature(self._keys[0], value).decode()}"

    def unsign(self, signed: str) -> str | None:
        """The value if the signature is valid under any secret, else ``None``."""
        if not isinstance(signed, str):
            return None
        value, dot, signature = signed.rpartition(".")
        if not dot:
            return None
        given = signature.encode()
        # Every key is tried, so the time taken does not tell which one matched.
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(given, self._signature(key, value))
        return value if matched else None

    def __repr__(self) -> str:
        return f"Signer(secrets=[{', '.join('Secret(**********)' for _ in self._keys)}], salt={self.salt!r})"
