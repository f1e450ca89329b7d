"""Forwarding headers written partly by a hostile client and partly by trusted proxies.

A client controls the left end of ``X-Forwarded-For`` and ``Forwarded``; the
proxies it passes append to the right. Whatever the client wrote, the
address the first trusted proxy appended is the client.
"""

from __future__ import annotations

import ipaddress

from hypothesis import example, given
from hypothesis import strategies as st

from bisman_ratelimit.web import ClientIP
from bisman_ratelimit.web._clientip import parse_forwarded_for

PROXY = "10.0.0.2"


def forwarded_node(address: str) -> str:
    """How a proxy writes ``address`` as a ``for=`` value (RFC 7239 section 6)."""
    if ":" in address:
        return f'"[{address}]"'
    return address


def test_an_unterminated_quote_does_not_swallow_the_proxy_element() -> None:
    header = 'for="x, for=203.0.113.7'
    assert parse_forwarded_for(header)[-1] == "203.0.113.7"
    assert ClientIP(trusted_proxies=1, header="forwarded").client(PROXY, header) == "203.0.113.7"
    cidrs = ClientIP(trusted_proxies=["10.0.0.0/8"], header="forwarded")
    assert cidrs.client(PROXY, header) == "203.0.113.7"


def test_an_escaped_quote_at_the_left_end_is_left_to_the_client() -> None:
    header = 'for="\\", for="[2001:db8::1]:4711";proto=https'
    assert parse_forwarded_for(header)[-1] == "[2001:db8::1]:4711"
    assert ClientIP(trusted_proxies=1, header="forwarded").client(PROXY, header) == "2001:db8::1"


def test_well_formed_elements_still_parse_left_to_right() -> None:
    header = 'for=192.0.2.60;proto=http;by=203.0.113.43, for="[2001:db8:cafe::17]:4711", by=x'
    assert parse_forwarded_for(header) == ["192.0.2.60", "[2001:db8:cafe::17]:4711", ""]


def test_with_two_hops_garbage_at_the_client_position_keys_on_the_last_vouched_address() -> None:
    ips = ClientIP(trusted_proxies=2)
    assert ips.client(PROXY, "garbage, 10.0.0.9") == "10.0.0.9"


addresses = st.one_of(
    st.ip_addresses(v=4).filter(lambda a: not a.is_private),
    st.ip_addresses(v=6).filter(lambda a: a.ipv4_mapped is None and not a.is_private),
).map(str)


@given(prefix=st.text(max_size=60), client=addresses, separator=st.sampled_from([", ", ","]))
@example(prefix='for="x', client="203.0.113.7", separator=", ")
@example(prefix='for="\\', client="203.0.113.7", separator=",")
@example(prefix='"', client="2001:db8::1", separator=", ")
def test_nothing_a_client_writes_moves_the_address_its_proxy_appended(
    prefix: str, client: str, separator: str
) -> None:
    expected = str(ipaddress.ip_address(client))
    forwarded = f"{prefix}{separator}for={forwarded_node(client)}"
    xff = f"{prefix}{separator}{client}"
    for header, value in (("forwarded", forwarded), ("x-forwarded-for", xff)):
        by_hops = ClientIP(trusted_proxies=1, header=header)  # type: ignore[arg-type]
        by_cidrs = ClientIP(trusted_proxies=["10.0.0.0/8"], header=header)  # type: ignore[arg-type]
        assert by_hops.client(PROXY, value) == expected
        assert by_cidrs.client(PROXY, value) == expected


@given(prefix=st.text(max_size=60), client=addresses, hops=st.integers(min_value=2, max_value=4))
def test_behind_several_proxies_the_first_ones_address_is_the_client(
    prefix: str, client: str, hops: int
) -> None:
    chain = [f"for={forwarded_node(client)}"] + [f"for=10.0.0.{n}" for n in range(1, hops)]
    header = prefix + ", " + ", ".join(chain)
    assert ClientIP(trusted_proxies=hops, header="forwarded").client(PROXY, header) == str(
        ipaddress.ip_address(client)
    )


@given(st.text(max_size=200))
def test_any_header_gives_an_address_or_the_peer(header: str) -> None:
    for ips in (
        ClientIP(trusted_proxies=1, header="forwarded"),
        ClientIP(trusted_proxies=["10.0.0.0/8"], header="forwarded"),
    ):
        found = ips.client(PROXY, header)
        assert found is not None
        ipaddress.ip_address(found)
