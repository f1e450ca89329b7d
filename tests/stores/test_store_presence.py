"""Call presence, on memory and on each Redis kind, sync and async."""

from __future__ import annotations

import pytest
from support import ManualClock
from test_store_conformance import Env, backend_fixture, env_fixture  # noqa: F401 - the env fixture

from bisman_ratelimit import InvalidArgument
from bisman_ratelimit.stores import AsyncPresence, MemoryBackend, Presence, RoomState

# The redis_cluster fixture, for env's Cluster backend.
pytest_plugins = ["cluster_fixtures"]


def presence(env: Env, **options: object) -> Presence:
    store: Presence = env.make(Presence, AsyncPresence, **options)
    return store


def test_join_leave_list_count(env: Env) -> None:
    store = presence(env)
    assert store.join("r", "alice") == RoomState(present=True, participants=1)
    assert store.join("r", "bob") == RoomState(present=True, participants=2)
    assert store.join("r", "alice") == RoomState(present=True, participants=2)
    assert store.count("r") == 2
    assert sorted(p.id for p in store.participants("r")) == ["alice", "bob"]
    assert store.leave("r", "alice") == RoomState(present=False, participants=1)
    assert [p.id for p in store.participants("r")] == ["bob"]
    assert store.leave("r", "bob") == RoomState(present=False, participants=0)
    assert store.count("r") == 0 and store.participants("r") == []
    assert env.ttls() == {}


def test_heartbeat_does_not_bring_back_who_left(env: Env) -> None:
    store = presence(env)
    store.join("r", "alice")
    assert store.heartbeat("r", "alice") == RoomState(present=True, participants=1)
    assert store.heartbeat("r", "carol") == RoomState(present=False, participants=1)
    assert store.count("r") == 1


def test_silent_participants_are_dropped(env: Env) -> None:
    store = presence(env, room_ttl=5, heartbeat_timeout=0.3)
    store.join("r", "alice")
    store.join("r", "bob")
    for _ in range(2):
        env.wait(0.2)
        assert store.heartbeat("r", "alice").present
    # bob has been silent for 0.4 s.
    assert [p.id for p in store.participants("r")] == ["alice"]
    assert store.count("r") == 1
    assert store.heartbeat("r", "bob") == RoomState(present=False, participants=1)
    assert store.join("r", "bob") == RoomState(present=True, participants=2)


def test_a_room_without_activity_expires(env: Env) -> None:
    store = presence(env, room_ttl=0.3, heartbeat_timeout=10)
    store.join("r", "alice")
    env.wait(0.2)
    store.join("r", "bob")  # renews the room
    env.wait(0.2)
    assert store.count("r") == 2
    env.wait(0.15)
    assert store.count("r") == 0
    assert env.ttls() == {}


def test_reads_do_not_renew_the_room(env: Env) -> None:
    store = presence(env, room_ttl=0.3, heartbeat_timeout=10)
    store.join("r", "alice")
    env.wait(0.2)
    assert store.count("r") == 1
    env.wait(0.15)
    assert store.participants("r") == []


def test_exact_heartbeat_boundary_on_the_manual_clock(clock: ManualClock) -> None:
    store = Presence(MemoryBackend(clock=clock), heartbeat_timeout=30)
    store.join("r", "alice")
    clock.advance(29.999)
    assert store.count("r") == 1
    [alice] = store.participants("r")
    assert alice.last_seen == pytest.approx(clock.now - 29.999)
    clock.advance(0.001)
    assert store.count("r") == 0


def test_bad_participants_are_refused(env: Env) -> None:
    store = presence(env)
    with pytest.raises(InvalidArgument, match="a participant id must be a non-empty str, got ''"):
        store.join("r", "")
    with pytest.raises(InvalidArgument, match="a participant id must be a non-empty str, got 7"):
        store.join("r", 7)  # type: ignore[arg-type]
    assert env.ttls() == {}
