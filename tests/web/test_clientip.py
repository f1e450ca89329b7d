"""Client address extraction: trusted proxies only, read from the right; IPv6 masking."""

from __future__ import annotations

import pytest

from bisman_ratelimit import InvalidArgument
from bisman_ratelimit.web._clientip import ClientIP, mask_ip, parse_forwarded_for


def test_without_trusted_proxies_headers_are_ignored() -> None:
    ips = ClientIP()
    assert not ips.reads_headers
    assert ips.client("203.0.113.9", "1.2.3.4") == "203.0.113.9"
    assert ips.client(None) is None
    assert ips.client("not-an-ip") is None


def test_hop_count_reads_from_the_right() -> None:
    ips = ClientIP(trusted_proxies=1)
    # One proxy (10.0.0.2) appended the address it saw.
    assert ips.client("10.0.0.2", "198.51.100.7") == "198.51.100.7"
    # A forged leftmost entry is never reached.
    assert ips.client("10.0.0.2", "6.6.6.6, 198.51.100.7") == "198.51.100.7"
    two = ClientIP(trusted_proxies=2)
    assert two.client("10.0.0.3", "6.6.6.6,198.51.100.7, 10.0.0.2") == "198.51.100.7"


def test_hop_count_with_too_few_entries_falls_back_to_the_peer() -> None:
    ips = ClientIP(trusted_proxies=2)
    assert ips.client("203.0.113.9", "6.6.6.6") == "203.0.113.9"
    assert ips.client("203.0.113.9", None) == "203.0.113.9"
    assert ips.client("203.0.113.9", "") == "203.0.113.9"


def test_hop_count_with_garbage_at_the_client_position_falls_back_to_the_peer() -> None:
    ips = ClientIP(trusted_proxies=1)
    assert ips.client("10.0.0.2", "1.2.3.4, unknown") == "10.0.0.2"


def test_cidrs_skip_trusted_hops_from_the_right() -> None:
    ips = ClientIP(trusted_proxies=["10.0.0.0/8", "192.168.1.1"])
    assert ips.client("10.0.0.2", "198.51.100.7, 192.168.1.1") == "198.51.100.7"
    # The forged entry sits left of the first untrusted address: never reached.
    assert ips.client("10.0.0.2", "6.6.6.6, 198.51.100.7, 10.1.1.1") == "198.51.100.7"


def test_cidrs_ignore_headers_from_an_untrusted_peer() -> None:
    ips = ClientIP(trusted_proxies=["10.0.0.0/8"])
    assert ips.client("203.0.113.9", "6.6.6.6") == "203.0.113.9"


def test_cidrs_stop_at_garbage_and_keep_the_last_trusted_hop() -> None:
    ips = ClientIP(trusted_proxies=["10.0.0.0/8"])
    assert ips.client("10.0.0.2", "1.2.3.4, bogus, 10.0.0.5") == "10.0.0.5"


def test_cidrs_all_trusted_gives_the_leftmost() -> None:
    ips = ClientIP(trusted_proxies="10.0.0.0/8")
    assert ips.client("10.0.0.2", "10.9.9.9, 10.0.0.5") == "10.9.9.9"


def test_forwarded_header_rfc7239() -> None:
    ips = ClientIP(trusted_proxies=["10.0.0.0/8"], header="forwarded")
    value = 'for=6.6.6.6, for="[2001:db8:cafe::17]:4711";proto=https, for=10.0.0.7;by=10.0.0.1'
    assert ips.client("10.0.0.2", value) == "2001:db8:cafe::17"
    assert parse_forwarded_for('for=192.0.2.43, proto=http, for="_hidden"') == ["192.0.2.43", "", "_hidden"]
    assert parse_forwarded_for('for="a,b";by=x') == ["a,b"]


def test_forwarded_header_with_hop_count() -> None:
    ips = ClientIP(trusted_proxies=1, header="forwarded")
    assert ips.client("10.0.0.2", "for=6.6.6.6, for=198.51.100.7") == "198.51.100.7"


def test_addresses_with_ports_zones_and_mapped_ipv4() -> None:
    ips = ClientIP(trusted_proxies=1)
    assert ips.client("10.0.0.2", "198.51.100.7:5555") == "198.51.100.7"
    assert ips.client("10.0.0.2", "[2001:db8::1]:80") == "2001:db8::1"
    assert ips.client("::ffff:198.51.100.7") == "198.51.100.7"
    assert ips.client("fe80::1%eth0") == "fe80::1"


def test_ipv6_masked_to_64_by_default() -> None:
    ips = ClientIP()
    assert ips.key("2001:db8:1:2:aaaa:bbbb:cccc:dddd") == "2001:db8:1:2::/64"
    assert ips.key("2001:db8:1:2::1") == ips.key("2001:db8:1:2:ffff::9")
    assert ips.key("2001:db8:1:3::1") != ips.key("2001:db8:1:2::1")
    assert ips.key("198.51.100.7") == "198.51.100.7"


def test_prefixes_are_configurable() -> None:
    ips = ClientIP(ipv6_prefix=48, ipv4_prefix=24)
    assert ips.key("2001:db8:1:2::1") == "2001:db8:1::/48"
    assert ips.key("198.51.100.7") == "198.51.100.0/24"
    assert ClientIP(ipv6_prefix=128).key("2001:db8::1") == "2001:db8::1"
    assert mask_ip("not an address") == "not an address"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"trusted_proxies": -1}, "hop count must be >= 0, got -1"),
        ({"trusted_proxies": True}, "must be a hop count or a list of CIDRs, got True"),
        ({"trusted_proxies": ["10.0.0.0/8", "nope"]}, r"trusted_proxies\[1\]: 'nope' is not an IP address"),
        ({"trusted_proxies": [10]}, r"trusted_proxies\[0\] must be an address or a CIDR string, got 10"),
        ({"ipv6_prefix": 129}, "ipv6_prefix must be a whole number from 0 to 128, got 129"),
        ({"ipv4_prefix": -1}, "ipv4_prefix must be a whole number from 0 to 32, got -1"),
        ({"header": "x-real-ip"}, "header must be 'x-forwarded-for' or 'forwarded', got 'x-real-ip'"),
    ],
)
def test_bad_configuration_is_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        ClientIP(**kwargs)  # type: ignore[arg-type]
