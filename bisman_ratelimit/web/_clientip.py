"""The client address of a request, proxies taken into account only when trusted.

Without configuration the client is the peer of the socket: headers are
ignored, because any client can send ``X-Forwarded-For: 1.2.3.4``.

Behind proxies, say which ones to believe with ``trusted_proxies``:

- a hop count ``n``: exactly ``n`` proxies append to the header, so the
  client is the ``n``-th address from the right (the peer being the last
  proxy). Whatever a client wrote at the left end is never reached.
- CIDRs (``["10.0.0.0/8", "::1"]``): walking from the peer leftwards through
  the header, addresses inside those networks are proxies and are skipped;
  the first one outside is the client. A peer outside them is the client,
  whatever the headers say.

The header read is ``X-Forwarded-For`` or, with ``header="forwarded"``, the
``for=`` parameters of RFC 7239 ``Forwarded``. Headers are read from the
right, the end trusted proxies write: whatever a client put at the left end,
an unterminated quote included, cannot move or swallow what they appended.
Where a trusted hop vouched for something that is not an address (RFC 7239's
``unknown``, an obfuscated node, garbage), the client is the last address a
trusted hop did vouch for.

For counting, IPv6 addresses are masked to a prefix (``/64`` by default):
one host usually owns a whole /64, and could otherwise rotate addresses to
get a fresh quota each time. IPv4 addresses are kept whole unless
``ipv4_prefix`` says otherwise. IPv4-mapped IPv6 addresses count as IPv4.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from functools import lru_cache
from typing import Literal

from bisman_ratelimit.core import InvalidArgument

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
HeaderName = Literal["x-forwarded-for", "forwarded"]
TrustedProxies = int | str | Sequence[str] | None


def _parse_address(text: str) -> IPAddress | None:
    """An address from a header or a socket, or None when it is not one."""
    text = text.strip()
    if not text:
        return None
    if text.startswith("["):
        # "[2001:db8::1]:4711" or "[2001:db8::1]"
        end = text.find("]")
        if end < 0:
            return None
        text = text[1:end]
    elif text.count(":") == 1:
        # "192.0.2.1:4711"
        text = text.split(":", 1)[0]
    text = text.split("%", 1)[0]  # an IPv6 zone id names a local interface only
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_forwarded_for(value: str) -> list[str]:
    """The ``for=`` values of an RFC 7239 ``Forwarded`` field, left to right.

    An element without ``for=`` gives ``""`` so that hop counting stays right.
    Quotes are matched from the right, so the elements trusted proxies
    appended come out whole whatever a client wrote before them.
    """
    out: list[str] = []
    for element in _split_outside_quotes(value, ","):
        found = ""
        for pair in _split_outside_quotes(element, ";"):
            name, sep, raw = pair.partition("=")
            if sep and name.strip().lower() == "for":
                raw = raw.strip()
                if len(raw) >= 2 and raw[0] == raw[-1] == '"':
                    raw = raw[1:-1].replace('\\"', '"').replace("\\\\", "\\")
                found = raw
        out.append(found)
    return out


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    """``text`` split at ``sep`` outside quoted strings, matching quotes from the right."""
    parts: list[str] = []
    end = len(text)
    quoted = False
    index = len(text) - 1
    while index >= 0:
        char = text[index]
        if char == '"':
            backslashes = 0
            while index - backslashes - 1 >= 0 and text[index - backslashes - 1] == "\\":
                backslashes += 1
            if not (quoted and backslashes % 2):
                quoted = not quoted
        elif char == sep and not quoted:
            parts.append(text[index + 1 : end])
            end = index
        index -= 1
    parts.append(text[:end])
    parts.reverse()
    return parts


@lru_cache(maxsize=4096)
def mask_ip(address: str, ipv6_prefix: int = 64, ipv4_prefix: int = 32) -> str:
    """The text a rate-limit key uses for ``address``.

    A full-length prefix gives the address itself; a shorter one gives the
    network, e.g. ``2001:db8:1:2::/64``. Text that is not an address is
    returned as it is.
    """
    parsed = _parse_address(address)
    if parsed is None:
        return address
    prefix = ipv4_prefix if parsed.version == 4 else ipv6_prefix
    if prefix == parsed.max_prefixlen:
        return str(parsed)
    network = ipaddress.ip_network(f"{parsed}/{prefix}", strict=False)
    return str(network)


def _trusted(value: TrustedProxies) -> tuple[int, tuple[IPNetwork, ...]]:
    if value is None:
        return 0, ()
    if isinstance(value, bool):
        raise InvalidArgument(f"trusted_proxies must be a hop count or a list of CIDRs, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise InvalidArgument(f"trusted_proxies hop count must be >= 0, got {value}")
        return value, ()
    items = [value] if isinstance(value, str) else list(value)
    networks: list[IPNetwork] = []
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise InvalidArgument(
                f"trusted_proxies[{index}] must be an address or a CIDR string, got {item!r}"
            )
        try:
            networks.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError:
            raise InvalidArgument(
                f"trusted_proxies[{index}]: {item!r} is not an IP address or a CIDR "
                "such as '10.0.0.0/8' or 'fd00::/8'"
            ) from None
    return 0, tuple(networks)


def _check_prefix(name: str, value: int, top: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
        raise InvalidArgument(f"{name} must be a whole number from 0 to {top}, got {value!r}")
    return value


class ClientIP:
    """Finds and masks the client address of requests; configured once, used per request."""

    def __init__(
        self,
        *,
        trusted_proxies: TrustedProxies = None,
        header: HeaderName = "x-forwarded-for",
        ipv6_prefix: int = 64,
        ipv4_prefix: int = 32,
    ) -> None:
        if header not in ("x-forwarded-for", "forwarded"):
            raise InvalidArgument(f"header must be 'x-forwarded-for' or 'forwarded', got {header!r}")
        self.hops, self.networks = _trusted(trusted_proxies)
        self.header: HeaderName = header
        self.ipv6_prefix = _check_prefix("ipv6_prefix", ipv6_prefix, 128)
        self.ipv4_prefix = _check_prefix("ipv4_prefix", ipv4_prefix, 32)
        #: Whether forwarding headers are read at all; when False, callers may skip fetching them.
        self.reads_headers = bool(self.hops or self.networks)

    def client(self, peer: str | None, forwarded: str | None = None) -> str | None:
        """The client address, unmasked, or None when nothing usable is known.

        ``peer`` is the socket's remote address; ``forwarded`` the value of the
        configured header (several field lines joined with ``,``).
        """
        if not self.reads_headers or not forwarded:
            return self._clean(peer)
        hops = parse_forwarded_for(forwarded) if self.header == "forwarded" else forwarded.split(",")
        if self.hops:
            # The peer is the last proxy; the n-th header entry from the right was written by the first.
            if len(hops) < self.hops:
                return self._clean(peer)
            vouched = self._clean(peer)
            for entry in reversed(hops[-self.hops :]):
                address = _parse_address(entry)
                if address is None:
                    break
                vouched = str(address)
            return vouched
        peer_address = _parse_address(peer) if peer else None
        if peer_address is None or not self._is_proxy(peer_address):
            return self._clean(peer)
        client = peer_address
        for entry in reversed(hops):
            address = _parse_address(entry)
            if address is None:
                # Not written by a proxy we trust: stop at the last trusted hop.
                break
            client = address
            if not self._is_proxy(address):
                break
        return str(client)

    def key(self, address: str) -> str:
        """The masked form of a client address, for rate-limit keys."""
        if ":" not in address and self.ipv4_prefix == 32:
            return address
        return mask_ip(address, self.ipv6_prefix, self.ipv4_prefix)

    def _is_proxy(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks)

    @staticmethod
    def _clean(peer: str | None) -> str | None:
        if not peer:
            return None
        if ":" not in peer and peer.count(".") == 3 and peer.replace(".", "").isdigit():
            return peer  # the usual dotted IPv4 of a socket: skip parsing
        address = _parse_address(peer)
        return None if address is None else str(address)
