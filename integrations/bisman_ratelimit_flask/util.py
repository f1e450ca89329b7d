"""Key functions, under the names Flask-Limiter gives them."""

from __future__ import annotations

from flask import request

__all__ = ["get_remote_address"]


def get_remote_address() -> str:
    """The client's address as the server saw it (``127.0.0.1`` when there is none).

    Given as a limit's key function, it is read as the key ``"ip"``: the
    limiter's trusted proxies and IPv6 prefix decide the client, and the
    request takes the fast path.
    """
    return request.remote_addr or "127.0.0.1"
