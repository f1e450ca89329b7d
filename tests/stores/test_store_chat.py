"""Chat context, on memory and on each Redis kind, sync and async."""

from __future__ import annotations

import pytest
from test_store_conformance import Env, backend_fixture, env_fixture  # noqa: F401 - the env fixture

from bisman_ratelimit import InvalidArgument
from bisman_ratelimit.stores import AsyncChatContext, ChatContext

# The redis_cluster fixture, for env's Cluster backend.
pytest_plugins = ["cluster_fixtures"]


def chat(env: Env, **options: object) -> ChatContext:
    store: ChatContext = env.make(ChatContext, AsyncChatContext, **options)
    return store


def window_lengths(env: Env, thread: str) -> dict[int, int]:
    """Messages held per window, read from the backend itself."""
    out = {}
    for key in env.ttls():
        if key.startswith(f"chat:ctx:thread:{{{thread}}}:w:"):
            window = int(key.rsplit(":", 1)[1])
            if env.memory is not None:
                out[window] = len(env.memory.get(key, env.memory.now_ms()))
            else:
                assert env.redis is not None
                out[window] = int(env.redis.llen(key))
    return out


def test_append_and_read_in_order(env: Env) -> None:
    store = chat(env)
    assert store.last("t") == []
    assert store.append("t", {"role": "user", "text": "hi"}) == 1
    assert store.append("t", {"role": "assistant", "text": "hello"}) == 2
    assert store.append("t", "plain") == 3
    assert store.last("t") == [
        {"role": "user", "text": "hi"},
        {"role": "assistant", "text": "hello"},
        "plain",
    ]
    assert store.last("t", 2) == [{"role": "assistant", "text": "hello"}, "plain"]
    assert store.last("other") == []


def test_trimming_at_the_boundary(env: Env) -> None:
    store = chat(env)  # the seed's default: keep the last 30, one window of 30
    for i in range(1, 31):
        store.append("t", i)
    assert store.last("t") == list(range(1, 31))
    assert window_lengths(env, "t") == {0: 30}
    store.append("t", 31)
    assert store.last("t") == list(range(2, 32))
    assert store.last("t", 100) == list(range(2, 32))
    assert window_lengths(env, "t") == {0: 29, 1: 1}
    assert sum(window_lengths(env, "t").values()) == 30


def test_a_single_window_is_trimmed_by_ltrim(env: Env) -> None:
    store = chat(env, keep=3, window_size=10)
    store.extend("t", [1, 2, 3, 4])
    assert window_lengths(env, "t") == {0: 3}
    assert store.last("t") == [2, 3, 4]


def test_reads_span_windows(env: Env) -> None:
    store = chat(env, keep=7, window_size=3)
    for i in range(1, 12):
        store.append("hot", i)
    # Messages 5..11 are kept: window 1 holds 5-6, window 2 holds 7-9, window 3 holds 10-11.
    assert window_lengths(env, "hot") == {1: 2, 2: 3, 3: 2}
    assert store.last("hot") == [5, 6, 7, 8, 9, 10, 11]
    assert store.last("hot", 4) == [8, 9, 10, 11]
    assert store.last("hot", 2) == [10, 11]
    keys = set(env.ttls())
    assert "chat:ctx:thread:{hot}:w:3" in keys
    assert "chat:ctx:thread:{hot}:w:0" not in keys


def test_batches_larger_than_keep(env: Env) -> None:
    store = chat(env, keep=4, window_size=2)
    assert store.extend("t", list(range(1, 10))) == 9
    assert store.last("t") == [6, 7, 8, 9]
    assert window_lengths(env, "t") == {2: 1, 3: 2, 4: 1}


def test_every_append_renews_all_kept_windows_and_the_thread_expires(env: Env) -> None:
    store = chat(env, keep=4, window_size=2, ttl=0.3)
    store.extend("t", [1, 2, 3])
    env.wait(0.2)
    store.append("t", 4)  # window 0 was written 0.2 s ago; it is renewed too
    env.wait(0.2)
    assert store.last("t") == [1, 2, 3, 4]
    env.wait(0.15)
    assert store.last("t") == []
    assert env.ttls() == {}
    assert store.append("t", "again") == 1


def test_bad_messages_are_refused(env: Env) -> None:
    store = chat(env, max_message_bytes=10)
    with pytest.raises(
        InvalidArgument,
        match=r"chat message for thread 't' is 12 bytes as JSON, more than max_message_bytes=10",
    ):
        store.append("t", "0123456789")
    with pytest.raises(
        InvalidArgument, match="chat message for thread 't': the value cannot be stored as JSON"
    ):
        store.append("t", {1, 2})
    with pytest.raises(InvalidArgument, match="no message to append to thread 't'"):
        store.extend("t", [])
    with pytest.raises(InvalidArgument, match="n must be a whole number >= 1, got 0"):
        store.last("t", 0)
    with pytest.raises(InvalidArgument, match="a key part must be a str or int, got None"):
        store.append(None, "x")
    assert env.ttls() == {}
