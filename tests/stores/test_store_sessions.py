"""The session store, on memory and on each Redis kind, sync and async."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable

import pytest
from support import ManualClock
from test_store_conformance import STORE_BACKENDS, Env, backend_fixture, env_fixture  # noqa: F401 - the env fixture

from bisman_ratelimit import InvalidArgument
from bisman_ratelimit.stores import (
    AsyncSessionStore,
    Flow,
    MemoryBackend,
    SessionStore,
    is_session_id,
    new_session_id,
)
from bisman_ratelimit.stores._backend import Call
from bisman_ratelimit.stores._sessions import INDEX_GRACE_MS, SessionCore

# The redis_cluster fixture, for env's Cluster backend.
pytest_plugins = ["cluster_fixtures"]


def sessions(env: Env, **options: object) -> SessionStore:
    store: SessionStore = env.make(SessionStore, AsyncSessionStore, **options)
    return store


def test_ids_are_256_random_bits() -> None:
    ids = {new_session_id() for _ in range(1000)}
    assert len(ids) == 1000
    for session_id in ids:
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", session_id)
        assert is_session_id(session_id)
    # 43 base64 characters carry 258 bits; token_urlsafe(32) fills 256 of them from secrets.
    assert not is_session_id("a" * 42) and not is_session_id("a" * 44) and not is_session_id(None)


def test_create_load_and_partial_reads(env: Env) -> None:
    store = sessions(env)
    created = store.create({"cart": [1, 2], "name": "Zoë", "n": None})
    assert is_session_id(created.id)
    assert created.ttl == 1800.0
    assert created.absolute_expires_at - created.created_at == 12 * 3600

    loaded = store.load(created.id)
    assert loaded is not None
    assert loaded.data == {"cart": [1, 2], "name": "Zoë", "n": None}
    assert (loaded.id, loaded.user_id, loaded.created_at) == (created.id, None, created.created_at)
    assert store.get_fields(created.id, ["name", "missing", "n"]) == {"name": "Zoë", "n": None}
    assert store.load(new_session_id()) is None
    assert store.get_fields(new_session_id(), ["name"]) is None


def test_field_updates_are_atomic_and_never_resurrect(env: Env) -> None:
    store = sessions(env)
    session = store.create({"a": 1, "b": 2})
    assert store.set_fields(session.id, {"c": {"deep": True}})
    assert store.delete_fields(session.id, ["a"])
    assert store.update(session.id, values={"b": 3}, remove=["c"])
    loaded = store.load(session.id)
    assert loaded is not None and loaded.data == {"b": 3}
    assert store.replace(session.id, {"z": 0})
    loaded = store.load(session.id)
    assert loaded is not None and loaded.data == {"z": 0}

    assert store.delete(session.id)
    assert not store.delete(session.id)
    assert not store.set_fields(session.id, {"a": 1})
    assert not store.replace(session.id, {"a": 1})
    assert store.load(session.id) is None
    assert env.ttls() == {}


def test_bad_values_are_refused_before_any_write(env: Env) -> None:
    store = sessions(env)
    with pytest.raises(InvalidArgument, match=r"session field 'when': the value cannot be stored as JSON"):
        store.create({"ok": 1, "when": object()})
    with pytest.raises(InvalidArgument, match="session field names must be str, got 1"):
        store.create({1: "x"})  # type: ignore[dict-item]
    with pytest.raises(InvalidArgument, match="a field cannot be both written and removed"):
        store.update(new_session_id(), values={"a": 1}, remove=["a"])
    with pytest.raises(InvalidArgument, match="user_id must be a non-empty str or an int, got ''"):
        store.create({}, user_id="")
    assert env.ttls() == {}


def test_malformed_ids_are_unknown_sessions(env: Env) -> None:
    store = sessions(env)
    for bad in ["", "short", "x" * 43 + "*", "../" * 15, "a" * 44]:
        assert store.load(bad) is None
        assert not store.set_fields(bad, {"a": 1})
        assert store.rotate(bad) is None
        assert not store.delete(bad)


def test_rolling_renewal_and_absolute_expiry(env: Env) -> None:
    store = sessions(env, idle_ttl=0.3, absolute_lifetime=0.65)
    session = store.create({"a": 1})
    for _ in range(3):
        # Each access renews the idle TTL: 0.2 s apart, the session lives on past 0.3 s.
        env.wait(0.2)
        loaded = store.load(session.id)
        assert loaded is not None and loaded.data == {"a": 1}
    # 0.6 s in: renewal is capped by the absolute deadline at 0.65 s.
    assert loaded.ttl <= 0.05
    env.wait(0.1)
    assert store.load(session.id) is None
    assert env.ttls() == {}


def test_idle_expiry_without_access(env: Env) -> None:
    store = sessions(env, idle_ttl=0.2)
    session = store.create({"a": 1})
    env.wait(0.1)
    assert store.get_fields(session.id, ["a"]) == {"a": 1}
    env.wait(0.25)
    assert store.load(session.id) is None


def test_exact_boundaries_on_the_manual_clock(clock: ManualClock) -> None:
    store = SessionStore(MemoryBackend(clock=clock), idle_ttl=10, absolute_lifetime=25)
    session = store.create()
    clock.advance(9.999)
    assert store.load(session.id) is not None  # renewed to t=19.999
    clock.advance(9.999)
    loaded = store.load(session.id)  # t=19.998: capped at t=25
    assert loaded is not None and loaded.ttl == pytest.approx(5.002)
    clock.advance(5.001)
    assert store.load(session.id) is not None
    clock.advance(0.001)
    assert store.load(session.id) is None


def test_per_session_idle_ttl(env: Env) -> None:
    store = sessions(env, idle_ttl=0.2)
    short = store.create({"a": 1})
    long = store.create({"a": 1}, idle_ttl=0.6)
    env.wait(0.35)
    assert store.load(short.id) is None
    loaded = store.load(long.id)
    assert loaded is not None and loaded.ttl == pytest.approx(0.6)


def test_rotation_keeps_data_and_kills_the_old_id(env: Env) -> None:
    store = sessions(env)
    session = store.create({"cart": [3]})
    new_id = store.rotate(session.id, user_id=42)
    assert new_id is not None and new_id != session.id and is_session_id(new_id)
    assert store.load(session.id) is None
    loaded = store.load(new_id)
    assert loaded is not None
    assert (loaded.data, loaded.user_id) == ({"cart": [3]}, "42")
    assert store.user_sessions(42) == [new_id]
    # The old id cannot be rotated or written to any more.
    assert store.rotate(session.id) is None
    assert not store.set_fields(session.id, {"x": 1})
    # Rotating again (a privilege change) keeps the user.
    newer = store.rotate(new_id)
    assert newer is not None and store.user_sessions("42") == [newer]


def test_login_restarts_the_absolute_lifetime_plain_rotation_does_not(env: Env) -> None:
    store = sessions(env, idle_ttl=0.5, absolute_lifetime=0.5)
    session = store.create({"a": 1})
    env.wait(0.3)
    rotated = store.rotate(session.id)
    assert rotated is not None
    loaded = store.load(rotated)
    assert loaded is not None and loaded.ttl <= 0.2
    logged_in = store.rotate(rotated, user_id="u")
    assert logged_in is not None
    loaded = store.load(logged_in)
    assert loaded is not None and loaded.ttl > 0.4


def test_log_out_everywhere(env: Env) -> None:
    store = sessions(env)
    laptop = store.create({"d": "laptop"}, user_id="alice")
    phone = store.create({"d": "phone"}, user_id="alice")
    other = store.create({"d": "x"}, user_id="bob")
    anonymous = store.create({})
    assert store.user_sessions("alice") == sorted([laptop.id, phone.id])
    store.delete(phone.id)
    assert store.user_sessions("alice") == [laptop.id]

    assert store.delete_user_sessions("alice") == [laptop.id]
    assert store.load(laptop.id) is None
    assert store.user_sessions("alice") == []
    assert store.load(other.id) is not None and store.load(anonymous.id) is not None
    assert store.delete_user_sessions("nobody") == []


def test_binding_a_session_to_another_user_moves_it_between_indexes(env: Env) -> None:
    store = sessions(env)
    session = store.create({}, user_id="a")
    assert store.update(session.id, values={"k": 1}, user_id="b")
    assert store.user_sessions("a") == []
    assert store.user_sessions("b") == [session.id]
    loaded = store.load(session.id)
    assert loaded is not None and loaded.user_id == "b"


def test_expired_sessions_leave_the_index(env: Env) -> None:
    store = sessions(env, idle_ttl=0.4)
    gone = store.create({}, user_id="u")
    env.wait(0.2)
    kept = store.create({}, user_id="u")
    # Listing checks each session with a call of its own: kept has 0.15 s to spare for them.
    env.wait(0.25)
    assert store.user_sessions("u") == [kept.id]
    assert store.delete_user_sessions("u") == [kept.id]
    assert f"auth:sess:{{{gone.id}}}" not in env.ttls()


def test_core_builds_keys_with_the_key_builder() -> None:
    core = SessionCore()
    session_id = new_session_id()
    assert core.session_key(session_id) == f"auth:sess:{{{session_id}}}"
    assert core.user_key("a:b c") == "auth:sess:user:{a%3Ab%20c}"
    assert core.user_key("{x}") == "auth:sess:user:{%7Bx%7D}"


async def test_async_store_directly(redis_url: str) -> None:
    async with AsyncSessionStore(redis_url) as store:
        session = await store.create({"a": 1}, user_id="u")
        assert (await store.load(session.id)) is not None
        new_id = await store.rotate(session.id)
        assert new_id is not None
        assert await store.get_fields(new_id, ["a"]) == {"a": 1}
        assert await store.delete_user_sessions("u") == [new_id]


def index_size(env: Env, index: str) -> int:
    if env.memory is not None:
        return len(env.memory.get(index, env.memory.now_ms()) or ())
    assert env.redis is not None
    return int(env.redis.zcard(index))


def age_index_entries(env: Env, index: str, seconds: float) -> None:
    """Make every entry of a user's index ``seconds`` older, as time passing would."""
    if env.memory is not None:
        env.clock.advance(seconds)
        return
    assert env.redis is not None
    entries = env.redis.zrange(index, 0, -1, withscores=True)
    env.redis.zadd(index, {member: score - seconds * 1000 for member, score in entries})


def test_a_crash_between_index_and_session_leaves_an_entry_that_readers_drop(env: Env) -> None:
    store = sessions(env, idle_ttl=600, absolute_lifetime=600)
    kept = store.create({}, user_id="u")
    # A login that stops after its first call: the id is in the index, the session never written.
    flow = store.core.create_with_id(new_session_id(), {}, user_id="u")
    first = next(flow)
    assert first.keys == ("auth:sess:user:{u}",)
    store.run(_one_call(first))
    index = "auth:sess:user:{u}"
    assert store.user_sessions("u") == [kept.id]
    # Younger than the grace: it may name a session still being written, so it stays.
    assert index_size(env, index) == 2
    age_index_entries(env, index, INDEX_GRACE_MS / 1000)
    assert store.user_sessions("u") == [kept.id]
    assert index_size(env, index) == 1


def test_an_id_bound_to_another_user_is_not_listed_or_logged_out_by_the_old_one(env: Env) -> None:
    store = sessions(env)
    session = store.create({}, user_id="a")
    # The entry in a's index outlives the binding, as a crash after the session write would leave it.
    flow = store.core.update(session.id, values={"k": 1}, user_id="b")
    store.run(_calls(flow, stop_before="auth:sess:user:{a}"))
    assert store.user_sessions("b") == [session.id]
    assert store.user_sessions("a") == []
    assert store.delete_user_sessions("a") == []
    loaded = store.load(session.id)
    assert loaded is not None and loaded.user_id == "b"


def _one_call(call: Call) -> Flow[None]:
    yield call


def _calls(flow: Flow[object], *, stop_before: str) -> Flow[None]:
    """Run ``flow`` until it would touch ``stop_before``: a process that died there."""
    reply = None
    while True:
        try:
            call = flow.send(reply)
        except StopIteration:
            return
        if stop_before in call.keys:
            return
        reply = yield call


def test_concurrent_logins_stay_listed_while_readers_repair_the_index(
    backend: tuple[str, str | None],
) -> None:
    """4 threads log in 25 sessions each while a fifth lists (and repairs) the index all along."""
    env = Env(backend[0], "sync", backend[1], ManualClock())
    store = sessions(env)
    done = threading.Event()
    made: list[str] = []
    listings = 0

    def log_in() -> None:
        for _ in range(25):
            made.append(store.create({}, user_id="alice").id)

    def read() -> None:
        nonlocal listings
        while not done.is_set():
            store.user_sessions("alice")
            listings += 1

    reader = threading.Thread(target=read)
    reader.start()
    writers = [threading.Thread(target=log_in) for _ in range(4)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    done.set()
    reader.join()
    try:
        assert listings > 0 and len(made) == 100
        assert store.user_sessions("alice") == sorted(made)
        assert store.delete_user_sessions("alice") == sorted(made)
        assert [store.load(sid) for sid in made] == [None] * 100
    finally:
        env.close()


def test_a_taken_id_never_joins_another_users_index(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    store = sessions(env)
    bob = store.create({"who": "bob"}, user_id="bob")
    # The id enters alice's index before the create finds it taken: it must leave it again.
    assert store.run(store.core.create_with_id(bob.id, {"who": "alice"}, user_id="alice")) is None
    assert index_size(env, "auth:sess:user:{alice}") == 0
    alice = store.create({"who": "alice"}, user_id="alice")
    fresh = new_session_id()
    ids = iter([bob.id, fresh])
    monkeypatch.setattr("bisman_ratelimit.stores._sessions.new_session_id", lambda: next(ids))
    assert store.rotate(alice.id, user_id="alice") == fresh
    assert index_size(env, "auth:sess:user:{alice}") == 1
    assert store.delete_user_sessions("alice") == [fresh]
    loaded = store.load(bob.id)
    assert loaded is not None and loaded.data == {"who": "bob"} and loaded.user_id == "bob"
    assert store.user_sessions("bob") == [bob.id]


def test_sessions_of_many_fields_on_every_backend(env: Env) -> None:
    """Past Lua's unpack() limit (about 8,000 values in one call): every operation still succeeds."""
    store = sessions(env)
    many = {f"f{i}": i for i in range(5000)}
    created = store.create(many, user_id="u")
    loaded = store.load(created.id)
    assert loaded is not None and loaded.data == many
    assert store.get_fields(created.id, [f"f{i}" for i in range(4500)]) == {f"f{i}": i for i in range(4500)}

    other = {f"g{i}": -i for i in range(5000)}
    assert store.replace(created.id, other) is True
    assert store.update(created.id, values={"a": 1}, remove=[f"g{i}" for i in range(4000)]) is True
    expected = {**{f"g{i}": -i for i in range(4000, 5000)}, "a": 1}
    loaded = store.load(created.id)
    assert loaded is not None and loaded.data == expected and loaded.ttl == 1800.0

    assert store.set_fields(created.id, {f"h{i}": i for i in range(4500)}) is True
    expected.update({f"h{i}": i for i in range(4500)})
    new_id = store.rotate(created.id, user_id="u")
    assert new_id is not None and store.load(created.id) is None
    loaded = store.load(new_id)
    assert loaded is not None and loaded.data == expected and loaded.user_id == "u"
    assert env.ttls()[f"auth:sess:{{{new_id}}}"] > 1_799_000
    assert store.user_sessions("u") == [new_id]


def _run_calls(store: SessionStore, flow: Flow[object], count: int) -> tuple[Call, Callable[[], object]]:
    """Run ``count`` calls of ``flow``; returns the next call and a function that finishes the flow."""
    reply: object = None
    for _ in range(count):
        reply = store.run(_one_call_reply(flow.send(reply)))
    pending = flow.send(reply)

    def finish() -> object:
        call = pending
        while True:
            try:
                call = flow.send(store.run(_one_call_reply(call)))
            except StopIteration as stop:
                return stop.value

    return pending, finish


def _one_call_reply(call: Call) -> Flow[object]:
    reply = yield call
    return reply


@pytest.mark.parametrize("user", [None, "alice"])
@pytest.mark.parametrize("step", range(1, 5))
def test_log_out_everywhere_in_the_middle_of_a_rotation_ends_both_ids(
    env: Env, step: int, user: str | None
) -> None:
    """Log out everywhere lands after each step of a rotation: no session of the user survives."""
    store = sessions(env)
    session = store.create({"role": "admin"}, user_id="alice")
    other = store.create({}, user_id="alice")
    # Calls of a rotation: copy, add the new id to the index, put, retire, leave the old index.
    _, finish = _run_calls(store, store.core.rotate(session.id, user_id=user), step)
    assert store.delete_user_sessions("alice")
    rotated = finish()
    assert store.user_sessions("alice") == []
    for session_id in (session.id, other.id, rotated):
        assert session_id is None or store.load(str(session_id)) is None


def test_a_write_made_while_a_rotation_copies_is_kept(env: Env) -> None:
    store = sessions(env)
    session = store.create({"a": 1})
    pending, finish = _run_calls(store, store.core.rotate(session.id), 2)
    assert pending.op.script.name == "session_retire.lua"
    assert store.set_fields(session.id, {"b": 2}) is True
    new_id = finish()
    assert isinstance(new_id, str)
    loaded = store.load(new_id)
    assert loaded is not None and loaded.data == {"a": 1, "b": 2}
    assert store.load(session.id) is None


def test_a_rotated_id_is_told_from_an_ended_one(env: Env) -> None:
    store = sessions(env)
    session = store.create({"a": 1}, user_id="u")
    new_id = store.rotate(session.id)
    assert new_id is not None
    assert store.run(store.core.lookup(session.id)) == "rotated"
    assert store.run(store.core.write(session.id, values={"x": 1})) == "rotated"
    assert store.run(store.core.lookup(new_session_id())) is None
    assert store.run(store.core.write(new_session_id(), values={"x": 1})) == "gone"
    # The old id still works for nothing: no read, write, rotation, delete or new session.
    assert store.load(session.id) is None and store.get_fields(session.id, ["a"]) is None
    assert store.set_fields(session.id, {"x": 1}) is False
    assert store.rotate(session.id) is None and store.delete(session.id) is False
    assert store.run(store.core.create_with_id(session.id, {})) is None
    loaded = store.load(new_id)
    assert loaded is not None and loaded.data == {"a": 1}
    assert env.ttls()[f"auth:sess:{{{session.id}}}"] <= 60_000


@pytest.mark.redis
@pytest.mark.parametrize("backend", [kind for kind in STORE_BACKENDS if kind != "memory"], indirect=True)
def test_log_out_everywhere_while_threads_rotate(backend: tuple[str, str | None]) -> None:
    """A thread rotates a session over and over while log out everywhere runs: it ends the session."""
    env = Env(backend[0], "sync", backend[1], ManualClock())
    store = sessions(env)
    try:
        survived = 0
        for _ in range(20):
            current = [store.create({"role": "admin"}, user_id="bob").id]
            started = threading.Event()
            done = threading.Event()

            def rotate_on(
                current: list[str] = current, started: threading.Event = started, done: threading.Event = done
            ) -> None:
                while not done.is_set():
                    new_id = store.rotate(current[0])
                    started.set()
                    if new_id is None:
                        return
                    current[0] = new_id

            rotator = threading.Thread(target=rotate_on)
            rotator.start()
            started.wait()
            store.delete_user_sessions("bob")
            done.set()
            rotator.join()
            done.clear()
            if store.load(current[0]) is not None:
                survived += 1
                store.delete(current[0])
        assert survived == 0
    finally:
        env.close()
