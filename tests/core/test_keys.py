"""Structured keys, escaping and the namespace TTL policy."""

from __future__ import annotations

import fnmatch

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from bisman_ratelimit import InvalidArgument, TTLPolicyError
from bisman_ratelimit.core._keys import escape, hash_tag, make_key, redis_keys, scan_pattern, unescape
from bisman_ratelimit.stores import Namespace, NamespaceRegistry, default_registry


def test_plain_parts_are_kept() -> None:
    assert make_key("auth", "sess", "user", 123) == "auth:sess:user:123"
    assert make_key("rl", "user", "123", "api", "/calls") == "rl:user:123:api:/calls"


@pytest.mark.parametrize(
    ("part", "escaped"),
    [
        ("a:b", "a%3Ab"),
        ("a*", "a%2A"),
        ("a?", "a%3F"),
        ("[x]", "%5Bx%5D"),
        ("{tag}", "%7Btag%7D"),
        ("a b", "a%20b"),
        ("tab\t", "tab%09"),
        ("é", "%C3%A9"),
        ("100%", "100%25"),
        ("back\\slash", "back%5Cslash"),
    ],
)
def test_dangerous_characters_are_escaped(part: str, escaped: str) -> None:
    assert escape(part) == escaped
    assert unescape(escaped) == part


@given(st.text(), st.text())
def test_escaping_is_injective_and_reversible(a: str, b: str) -> None:
    assert unescape(escape(a)) == a
    if a != b:
        assert escape(a) != escape(b)


@given(
    st.lists(st.text(min_size=1), min_size=1, max_size=4),
    st.lists(st.text(min_size=1), min_size=1, max_size=4),
)
def test_keys_from_different_parts_never_collide(a: list[str], b: list[str]) -> None:
    if a != b:
        assert make_key(*a) != make_key(*b)


@given(st.text(min_size=1), st.text(min_size=1))
def test_an_id_cannot_widen_a_scan_pattern(user: str, other: str) -> None:
    pattern = scan_pattern(make_key("rl", "user", user) + ":")
    if user != other:
        assert not fnmatch.fnmatchcase(make_key("rl", "user", other, "api", "x"), pattern.replace("\\", ""))


def test_scan_pattern_on_a_real_server(redis_client: redis.Redis) -> None:
    for user in ["*", "a*", "a", "ab", "[a]", "?"]:
        redis_client.set(make_key("rl", "user", user, "api", "x"), 1)
    for user in ["*", "a*", "a", "[a]", "?"]:
        found = list(redis_client.scan_iter(match=scan_pattern(make_key("rl", "user", user) + ":")))
        assert found == [make_key("rl", "user", user, "api", "x").encode()], user


def test_hash_tag_keeps_colons_and_escapes_braces() -> None:
    assert hash_tag("user:1") == "{user:1}"
    assert hash_tag("a}b{") == "{a%7Db%7B}"


def test_bad_parts_are_named() -> None:
    with pytest.raises(InvalidArgument, match=r"key part 1 is empty in \('a', ''\)"):
        make_key("a", "")
    with pytest.raises(InvalidArgument, match="a key part must be a str or int, got 1.5"):
        make_key("a", 1.5)
    with pytest.raises(InvalidArgument, match="make_key\\(\\) needs at least one part"):
        make_key()


def test_seed_key_builders() -> None:
    assert redis_keys.auth_session("123") == "auth:sess:user:{123}"
    assert redis_keys.auth_session("a:{b}") == "auth:sess:user:{a%3A%7Bb%7D}"
    assert redis_keys.rate_limit_user_route("123", "/calls") == "rl:user:{123}:api:/calls"
    assert redis_keys.rate_limit_user_route(7, "/calls/{id}") == "rl:user:{7}:api:/calls/%7Bid%7D"
    assert redis_keys.rate_limit_global_minute(now=120.5) == "rl:global:minute:2"
    assert redis_keys.chat_thread_window("987", 3) == "chat:ctx:thread:{987}:w:3"
    assert redis_keys.call_room_participants("abc123") == "call:room:abc123:participants"
    assert redis_keys.call_room_participants("a:b") == "call:room:a%3Ab:participants"


def test_seed_namespaces_and_ttls() -> None:
    table = {ns.prefix: (ns.ttl, ns.ephemeral) for ns in default_registry}
    assert table == {
        "auth:sess": (1800, True),
        "auth:sess:user": (43200, True),
        "rl:global": (60, True),
        "rl:user": (300, True),
        "rl:ip": (None, True),
        "rl:api_key": (None, True),
        "rl:header": (None, True),
        "rl:custom": (None, True),
        "chat:ctx": (120, True),
        "call:room": (None, True),
        "flags:config": (None, False),
    }


def test_ttl_policy() -> None:
    assert default_registry.ttl_for("auth:sess:{s1}") == 1800
    assert default_registry.ttl_for("auth:sess:{s1}", 60) == 60
    # A user's index of sessions lives as long as a session may.
    assert default_registry.ttl_for("auth:sess:user:{u1}") == 43200
    assert default_registry.ttl_for("call:room:abc:participants", 30) == 30
    assert default_registry.ttl_for("flags:config:darkMode") is None
    assert default_registry.ttl_for("elsewhere:1") is None
    with pytest.raises(
        TTLPolicyError,
        match=("write to 'call:room:abc:participants' without a TTL: namespace 'call:room' is ephemeral"),
    ):
        default_registry.ttl_for("call:room:abc:participants")
    with pytest.raises(TTLPolicyError, match="namespace 'flags:config' is persistent and takes no TTL"):
        default_registry.ttl_for("flags:config:darkMode", 10)
    with pytest.raises(TTLPolicyError, match="ttl must be > 0 seconds, got 0"):
        default_registry.ttl_for("auth:sess:{s1}", 0)


def test_longest_prefix_wins() -> None:
    registry = NamespaceRegistry([Namespace("rl", 10), Namespace("rl:user", 300)])
    assert registry.ttl_for("rl:user:1") == 300
    assert registry.ttl_for("rl:other") == 10
    with pytest.raises(InvalidArgument, match="namespace 'rl' is already registered"):
        registry.register(Namespace("rl", 5))
    with pytest.raises(InvalidArgument, match="bad namespace prefix 'rl:\\*'"):
        Namespace("rl:*", 5)
