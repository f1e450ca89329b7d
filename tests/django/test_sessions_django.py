"""The Django session engine against Django's session contract, sync and async.

Django's own ``SessionTestsMixin`` lives in its source tree's tests, which
the installed package does not ship; the tests below check the same
contract (behaviour of the ``SessionBase`` API, key handling, expiry,
``cycle_key``, no resurrection, no record created on load) on memory and
on each Redis kind, then the engine's own promises: signed keys, one
atomic rotation, log out everywhere and a 503 when the store is down.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import TYPE_CHECKING

import django
import pytest
import redis
from django.contrib.sessions.backends.base import UpdateError
from django.contrib.sessions.exceptions import SessionInterrupted
from django.contrib.sessions.middleware import SessionMiddleware
from django.core.exceptions import ImproperlyConfigured
from django.core.signing import TimestampSigner
from django.http import HttpRequest, HttpResponse
from django.test import AsyncClient, Client, RequestFactory
from django.test.utils import override_settings
from django.utils import timezone
from sessions_settings import SECRET, SESSION_SETTINGS

from bisman_ratelimit.stores import Signer, is_session_id
from bisman_ratelimit.testing import RedisServer
from bisman_ratelimit_django import sessions
from bisman_ratelimit_django.sessions import SessionStore, alogout_everywhere, logout_everywhere

if TYPE_CHECKING:
    from cluster_fixtures import RedisClusterServers

# The redis_cluster fixture.
pytest_plugins = ["cluster_fixtures"]

# Django's async session API (aget, aset, aflush, async requests with
# sessions...) arrived in Django 5.0; on 4.2 only the sync API exists.
needs_async_session_api = pytest.mark.skipif(
    django.VERSION < (5, 0), reason="Django < 5.0 has no async session API"
)

pytestmark = pytest.mark.usefixtures("engine")


@pytest.fixture
def session() -> Iterator[SessionStore]:
    made = SessionStore()
    yield made
    made.delete()


@pytest.fixture
async def closing() -> AsyncIterator[None]:
    yield
    await sessions.aclose_connections()


def test_new_session(session: SessionStore) -> None:
    assert session.modified is False and session.accessed is False


def test_get_store_pop(session: SessionStore) -> None:
    assert session.get("cat") is None
    session["cat"] = "dog"
    assert session.modified is True
    assert session.pop("cat") == "dog"
    assert session.get("cat") is None
    assert session.pop("some key", "default") == "default"
    assert session.pop("some key", default="d") == "d"
    with pytest.raises(KeyError):
        session.pop("some key")


def test_pop_marks_accessed_and_modified(session: SessionStore) -> None:
    session["k"] = "v"
    session.accessed = session.modified = False
    assert session.pop("k") == "v"
    assert session.accessed is True and session.modified is True


def test_pop_of_missing_key_does_not_modify(session: SessionStore) -> None:
    session.pop("missing", None)
    assert session.accessed is True and session.modified is False


def test_setdefault_update_and_views(session: SessionStore) -> None:
    assert session.setdefault("foo", "bar") == "bar"
    assert session.setdefault("foo", "baz") == "bar"
    assert session.accessed is True and session.modified is True
    session.update({"update key": 1})
    assert session.get("update key") == 1
    session.accessed = session.modified = False
    assert "foo" in session and list(session.keys()) == ["foo", "update key"]
    assert list(session.values()) == ["bar", 1]
    assert list(session.items()) == [("foo", "bar"), ("update key", 1)]
    assert session.accessed is True and session.modified is False
    session.clear()
    assert list(session.items()) == [] and session.modified is True


@needs_async_session_api
async def test_async_dict_api(session: SessionStore, closing: None) -> None:
    assert await session.aget("cat") is None
    await session.aset("cat", "dog")
    assert session.modified is True
    assert await session.asetdefault("a", 1) == 1
    await session.aupdate({"b": 2})
    session.accessed = session.modified = False
    assert await session.ahas_key("cat") is True
    assert list(await session.akeys()) == ["cat", "a", "b"]
    assert list(await session.avalues()) == ["dog", 1, 2]
    assert list(await session.aitems()) == [("cat", "dog"), ("a", 1), ("b", 2)]
    assert session.accessed is True and session.modified is False
    assert await session.apop("cat") == "dog"
    assert await session.apop("cat", "gone") == "gone"
    with pytest.raises(KeyError):
        await session.apop("cat")


def test_save_exists_delete(session: SessionStore) -> None:
    session["a"] = "b"
    session.save()
    assert session.exists(session.session_key) is True
    assert session["a"] == "b"  # saving keeps the data
    session.delete(session.session_key)
    assert session.exists(session.session_key) is False


@needs_async_session_api
async def test_save_exists_delete_async(session: SessionStore, closing: None) -> None:
    await session.aset("a", "b")
    await session.asave()
    assert await session.aexists(session.session_key) is True
    assert await session.aget("a") == "b"
    await session.adelete(session.session_key)
    assert await session.aexists(session.session_key) is False


def test_flush(session: SessionStore) -> None:
    session["foo"] = "bar"
    session.save()
    previous = session.session_key
    session.flush()
    assert session.exists(previous) is False
    assert session.session_key is None
    assert session.modified is True and session.accessed is True


@needs_async_session_api
async def test_flush_async(session: SessionStore, closing: None) -> None:
    await session.aset("foo", "bar")
    await session.asave()
    previous = session.session_key
    await session.aflush()
    assert await session.aexists(previous) is False
    assert session.session_key is None


def test_cycle(session: SessionStore) -> None:
    session["a"], session["b"] = "c", "d"
    session.save()
    previous = session.session_key
    data = list(session.items())
    session.cycle_key()
    assert session.exists(previous) is False
    assert session.session_key != previous
    assert list(session.items()) == data
    assert SessionStore(session.session_key).load() == dict(data)


def test_cycle_with_no_session_cache(session: SessionStore) -> None:
    session["a"], session["b"] = "c", "d"
    session.save()
    data = list(session.items())
    fresh = SessionStore(session.session_key)
    assert not hasattr(fresh, "_session_cache")
    fresh.cycle_key()
    assert list(fresh.items()) == data
    fresh.delete()


def test_cycle_of_an_unsaved_session_creates_one(session: SessionStore) -> None:
    session["a"] = 1
    session.cycle_key()
    assert session.session_key is not None and session.exists(session.session_key)
    assert SessionStore(session.session_key).load() == {"a": 1}


@needs_async_session_api
async def test_cycle_async(session: SessionStore, closing: None) -> None:
    await session.aset("a", "c")
    await session.asave()
    previous = session.session_key
    fresh = SessionStore(previous)
    await fresh.acycle_key()
    assert await fresh.aexists(previous) is False
    assert fresh.session_key != previous
    assert list(await fresh.aitems()) == [("a", "c")]
    await fresh.adelete()


def test_invalid_and_unknown_keys_get_a_new_key() -> None:
    for key in ["1", "someunknownkey", "x" * 43]:
        session = SessionStore(key)
        session.save()
        assert session.session_key != key and session.session_key is not None
        assert session.get("cat") is None
        session.delete()


@needs_async_session_api
async def test_invalid_key_async(closing: None) -> None:
    session = SessionStore("1")
    await session.asave()
    assert session.session_key != "1"
    assert await session.aget("cat") is None
    await session.adelete()


def test_session_key_validation() -> None:
    session = SessionStore()
    session._session_key = ""
    assert session.session_key is None
    session._session_key = "1234567"
    assert session.session_key is None
    session._session_key = "12345678"
    assert session.session_key == "12345678"
    with pytest.raises(AttributeError):
        session.session_key = "other"  # type: ignore[misc]


def test_load_does_not_create_a_record() -> None:
    session = SessionStore("someunknownkey")
    assert session.load() == {}
    assert session.session_key is None
    assert session.exists(session.session_key) is False


async def test_aload_does_not_create_a_record(closing: None) -> None:
    session = SessionStore("someunknownkey")
    assert await session.aload() == {}
    assert session.session_key is None
    assert await session.aexists(session.session_key) is False


def test_save_does_not_resurrect_a_session_deleted_elsewhere() -> None:
    first = SessionStore()
    first["test_data"] = "value1"
    first.save(must_create=True)
    SessionStore(first.session_key).delete()
    first["test_data"] = "value2"
    with pytest.raises(UpdateError):
        first.save()
    assert first.load() == {}


@needs_async_session_api
async def test_asave_does_not_resurrect_a_session_deleted_elsewhere(closing: None) -> None:
    first = SessionStore()
    await first.aset("test_data", "value1")
    await first.asave(must_create=True)
    await SessionStore(first.session_key).adelete()
    await first.aset("test_data", "value2")
    with pytest.raises(UpdateError):
        await first.asave()
    assert await first.aload() == {}


def test_expiry_settings(session: SessionStore) -> None:
    assert session.get_expiry_age() == 1800
    session.set_expiry(0)
    assert session.get_expiry_age() == 1800
    assert session.get_expire_at_browser_close() is True
    modification = timezone.now()
    session.set_expiry(10)
    assert session.get_expiry_date(modification=modification) == modification + timedelta(seconds=10)
    assert session.get_expiry_age(modification=modification) == 10
    session.set_expiry(modification + timedelta(seconds=10))
    assert session.get_expiry_age(modification=modification) == 10
    session.set_expiry(None)
    assert session.get_expiry_age() == 1800
    assert session.get_expire_at_browser_close() is False


@needs_async_session_api
async def test_expiry_settings_async(session: SessionStore, closing: None) -> None:
    assert await session.aget_expiry_age() == 1800
    await session.aset_expiry(10)
    assert await session.aget_expiry_age() == 10
    await session.aset_expiry(None)
    assert await session.aget_expiry_age() == 1800


def test_encode_decode_and_corrupted_data(session: SessionStore, caplog: pytest.LogCaptureFixture) -> None:
    data = {"a test key": "a test value"}
    assert session.decode(session.encode(data)) == data
    with caplog.at_level(logging.WARNING, logger="django.security.SuspiciousSession"):
        assert session.decode(base64.b64encode(b"flaskdj:alkdjf").decode("ascii")) == {}
    assert "Session data corrupted" in caplog.text
    assert session.decode(TimestampSigner(salt=session.key_salt).sign(b"invalid data")) == {}


def test_actual_expiry(session: SessionStore) -> None:
    session["foo"] = "bar"
    session.set_expiry(-timedelta(seconds=10))
    session.save()
    assert "foo" not in SessionStore(session.session_key)


@needs_async_session_api
async def test_actual_expiry_async(session: SessionStore, closing: None) -> None:
    await session.aset("foo", "bar")
    await session.aset_expiry(-timedelta(seconds=10))
    await session.asave()
    assert await SessionStore(session.session_key).ahas_key("foo") is False


def test_custom_expiry_becomes_the_idle_ttl(engine: str) -> None:
    session = SessionStore()
    session["a"] = 1
    session.set_expiry(60)
    session.save()
    sid = Signer(SECRET, salt="bisman-ratelimit.django-session").unsign(session.session_key or "")
    assert sid is not None and is_session_id(sid)
    if engine.startswith("redis"):
        with redis.Redis.from_url(engine) as client:
            assert 59_000 < client.pttl(f"auth:sess:{{{sid}}}") <= 60_000


def commands_run(client: redis.Redis) -> dict[str, int]:
    """Calls so far per command on the client's server, leaving out INFO (which asks)."""
    stats = client.info("commandstats")
    return {name: int(stats[name]["calls"]) for name in stats if name != "cmdstat_info"}


def test_clear_expired_is_a_no_op(engine: str, session: SessionStore) -> None:
    # The store expires sessions itself, so clearing expired ones has
    # nothing to do: no command reaches the server, and live sessions stay.
    session["a"] = 1
    session.save()
    if engine.startswith("redis"):
        with redis.Redis.from_url(engine) as client:
            before = commands_run(client)
            assert SessionStore.clear_expired() is None
            assert commands_run(client) == before
    else:
        assert SessionStore.clear_expired() is None
    assert SessionStore(session.session_key).load() == {"a": 1}


# The engine's own promises.


def test_keys_are_signed_ids_and_forged_keys_are_refused(session: SessionStore) -> None:
    session["a"] = 1
    session.save()
    key = session.session_key
    assert key is not None
    sid, _, signature = key.rpartition(".")
    assert is_session_id(sid) and len(signature) == 43
    assert SessionStore(key).load() == {"a": 1}
    for forged in [
        sid,
        f"{sid}.{'A' * 43}",
        Signer("z" * 32, salt="bisman-ratelimit.django-session").sign(sid),
    ]:
        assert SessionStore(forged).load() == {}
        assert SessionStore(forged).exists(forged) is False


def test_old_secret_keys_still_verify() -> None:
    old = SessionStore()
    old["a"] = 1
    old.save()
    with override_settings(SECRET_KEY="n" * 50, SECRET_KEY_FALLBACKS=[SECRET]):
        assert SessionStore(old.session_key).load() == {"a": 1}
    with override_settings(SECRET_KEY="n" * 50):
        assert SessionStore(old.session_key).load() == {}


def test_requests_login_and_log_out_everywhere() -> None:
    laptop, phone = Client(), Client()
    assert laptop.get("/show").json() == {}
    laptop.post("/put", data=json.dumps({"cart": [1]}), content_type="application/json")
    before = laptop.cookies["sessionid"].value
    assert laptop.get("/show").json() == {"cart": [1]}
    laptop.get("/login?user=7")
    after = laptop.cookies["sessionid"].value
    assert after != before
    assert laptop.get("/show").json() == {"cart": [1], "_auth_user_id": "7"}
    assert SessionStore(before).load() == {}
    phone.get("/login?user=7")
    assert len(logout_everywhere(7)) == 2
    assert laptop.get("/show").json() == {} and phone.get("/show").json() == {}


def test_concurrent_requests_changing_different_keys_keep_every_change() -> None:
    import threading

    import sessions_urls

    first = Client()
    first.post("/put", data=json.dumps({"base": 0}), content_type="application/json")
    cookie = first.cookies["sessionid"].value
    sessions_urls.BARRIER[:] = [threading.Barrier(8)]

    def change(n: int) -> None:
        client = Client()
        client.cookies["sessionid"] = cookie
        response = client.post(
            "/put-together", data=json.dumps({f"k{n}": n}), content_type="application/json"
        )
        assert response.status_code == 200

    try:
        threads = [threading.Thread(target=change, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
    finally:
        sessions_urls.BARRIER.clear()
    # All eight loaded the session before any saved: each wrote its key alone.
    assert first.get("/show").json() == {"base": 0, **{f"k{n}": n for n in range(8)}}


def test_a_save_writes_what_differs_from_what_was_loaded(session: SessionStore) -> None:
    session["cart"] = [1]
    session["gone"] = True
    session["kept"] = "as is"
    session.save()
    again = SessionStore(session.session_key)
    again["cart"].append(2)  # in place: stored, as a whole-session save would
    again["n"] = 2
    del again["gone"]
    again.save()
    assert SessionStore(session.session_key).load() == {"cart": [1, 2], "n": 2, "kept": "as is"}
    third = SessionStore(session.session_key)
    third.pop("cart")
    third.setdefault("new", "x")
    third.save()
    assert SessionStore(session.session_key).load() == {"n": 2, "kept": "as is", "new": "x"}
    fourth = SessionStore(session.session_key)
    fourth.clear()
    fourth["only"] = 1
    fourth.save()
    assert SessionStore(session.session_key).load() == {"only": 1}


@needs_async_session_api
async def test_an_async_save_writes_what_differs_from_what_was_loaded(closing: None) -> None:
    session = SessionStore()
    await session.aset_test_cookie()
    await session.aset("a", 1)
    await session.asave()
    again = SessionStore(session.session_key)
    await again.adelete_test_cookie()  # Django deletes it from the dict directly
    await again.aset("b", 2)
    await again.asave()
    assert await SessionStore(session.session_key).aload() == {"a": 1, "b": 2}


@needs_async_session_api
async def test_async_requests_and_log_out_everywhere(closing: None) -> None:
    client = AsyncClient()
    assert (await client.get("/ashow")).json() == {}
    assert "sessionid" not in client.cookies  # nothing stored, no cookie
    await client.post("/aput", data=json.dumps({"a": 1}), content_type="application/json")
    assert (await client.get("/ashow")).json() == {"a": 1}
    await client.get("/alogin?user=9")
    assert (await client.get("/ashow")).json() == {"a": 1, "_auth_user_id": "9"}
    assert len(await alogout_everywhere(9)) == 1
    assert (await client.get("/ashow")).json() == {}


def test_requests_login_and_log_out_everywhere_on_a_cluster(redis_cluster: RedisClusterServers) -> None:
    url = redis_cluster.url + "?timeout=1"
    with override_settings(**SESSION_SETTINGS, BISMAN_SESSIONS={"URL": url}):
        try:
            devices = [Client() for _ in range(12)]
            for n, device in enumerate(devices):
                device.post("/put", data=json.dumps({"n": n}), content_type="application/json")
                device.get("/login?user=7")
                assert device.get("/show").json() == {"n": n, "_auth_user_id": "7"}
            client = redis_cluster.client()
            sids = [
                Signer(SECRET, salt="bisman-ratelimit.django-session").unsign(d.cookies["sessionid"].value)
                for d in devices
            ]
            # The user's sessions are spread over the primaries (all 12 on one: odds of 1 in 177 147).
            assert len({client.get_node_from_key(f"auth:sess:{{{sid}}}").port for sid in sids}) > 1
            assert sorted(logout_everywhere(7)) == sorted(sids)
            assert [d.get("/show").json() for d in devices] == [{}] * 12
            assert client.exists(*(f"auth:sess:{{{sid}}}" for sid in sids), "auth:sess:user:{7}") == 0
            client.close()
        finally:
            sessions.close_connections()


@needs_async_session_api
async def test_async_requests_on_a_cluster(redis_cluster: RedisClusterServers) -> None:
    with override_settings(**SESSION_SETTINGS, BISMAN_SESSIONS={"URL": redis_cluster.url + "?timeout=1"}):
        try:
            client = AsyncClient()
            await client.post("/aput", data=json.dumps({"a": 1}), content_type="application/json")
            await client.get("/alogin?user=9")
            assert (await client.get("/ashow")).json() == {"a": 1, "_auth_user_id": "9"}
            assert len(await alogout_everywhere(9)) == 1
            assert (await client.get("/ashow")).json() == {}
        finally:
            await sessions.aclose_connections()


def test_logout_flushes(engine: str) -> None:
    client = Client()
    client.post("/put", data=json.dumps({"a": 1}), content_type="application/json")
    key = client.cookies["sessionid"].value
    client.get("/logout")
    assert SessionStore(key).load() == {}


def test_missing_or_bad_settings_are_reported() -> None:
    with (
        override_settings(BISMAN_SESSIONS={}),
        pytest.raises(
            ImproperlyConfigured, match=r"needs settings.BISMAN_SESSIONS = \{'URL': 'redis://host:port/0'\}"
        ),
    ):
        SessionStore().load()
    with (
        override_settings(BISMAN_SESSIONS={"URL": "memory://", "TTL": 3}),
        pytest.raises(
            ImproperlyConfigured, match="settings.BISMAN_SESSIONS: unknown key\\(s\\) TTL; expected URL"
        ),
    ):
        SessionStore().load()
    with (
        override_settings(SECRET_KEY="short-secret"),
        pytest.raises(
            ImproperlyConfigured,
            match="SECRET_KEY signs the session cookies: a signing secret must be at least 32 bytes",
        ),
    ):
        SessionStore("abcdefgh").load()
    with (
        override_settings(BISMAN_SESSIONS={"URL": "memory://", "ABSOLUTE_LIFETIME": 0}),
        pytest.raises(
            ImproperlyConfigured, match="absolute_lifetime must be a positive number of seconds, got 0"
        ),
    ):
        SessionStore().load()


@pytest.mark.redis
class TestUnreachableStore:
    """A killed server: the request is answered 503, never with an empty session."""

    @pytest.fixture
    def server(self) -> Iterator[RedisServer]:
        with RedisServer() as server:
            url = f"{server.url}?socket_timeout=0.5"
            with override_settings(**SESSION_SETTINGS, BISMAN_SESSIONS={"URL": url}):
                yield server
                sessions.close_connections()

    def test_sync_request(self, server: RedisServer) -> None:
        client = Client(raise_request_exception=False)
        client.post("/put", data=json.dumps({"cart": [1]}), content_type="application/json")
        server.kill()
        response = client.get("/show")
        assert response.status_code == 503
        assert response.content.decode() == sessions.UNAVAILABLE_TEXT
        assert "sessionid" not in response.cookies

    def test_save_failure(self, server: RedisServer) -> None:
        client = Client(raise_request_exception=False)
        server.kill()
        response = client.post("/put", data=json.dumps({"cart": [1]}), content_type="application/json")
        assert response.status_code == 503
        assert "sessionid" not in response.cookies

    @needs_async_session_api
    async def test_async_request(self, server: RedisServer) -> None:
        client = AsyncClient(raise_request_exception=False)
        await client.post("/aput", data=json.dumps({"cart": [1]}), content_type="application/json")
        server.kill()
        response = await client.get("/ashow")
        assert (response.status_code, response.content.decode()) == (503, sessions.UNAVAILABLE_TEXT)
        await sessions.aclose_connections()

    def test_store_errors_propagate_from_the_engine(self, server: RedisServer) -> None:
        from bisman_ratelimit import StorageUnavailable

        session = SessionStore()
        session["a"] = 1
        session.save()
        server.kill()
        loaded = SessionStore(session.session_key)
        with pytest.raises(StorageUnavailable, match="^Redis is unavailable"):
            loaded.load()
        assert loaded.unavailable is not None


def test_a_new_session_saved_with_must_create_is_modified() -> None:
    made = SessionStore()
    made.save(must_create=True)
    assert made.modified is True and made.session_key is not None
    made.delete()


@needs_async_session_api
async def test_a_new_session_asaved_with_must_create_is_modified(closing: None) -> None:
    made = SessionStore()
    await made.asave(must_create=True)
    assert made.modified is True and made.session_key is not None
    await made.adelete()


def test_a_session_deleted_before_the_response_interrupts_it() -> None:
    """Django's own test_session_update_error_redirect, on this engine."""

    def view(request: HttpRequest) -> HttpResponse:
        request.session = SessionStore()
        request.session.save(must_create=True)
        request.session.delete()
        return HttpResponse()

    middleware = SessionMiddleware(view)
    with pytest.raises(
        SessionInterrupted, match="The request's session was deleted before the request completed"
    ):
        middleware(RequestFactory().get("/foo/"))


def test_a_synchronous_stack_opens_the_stores_connections_when_loaded(redis_url: str) -> None:
    from django.core.handlers.wsgi import WSGIHandler

    url = f"{redis_url}?client_name=django-session-warm"
    with override_settings(**SESSION_SETTINGS, BISMAN_SESSIONS={"URL": url}):
        try:
            WSGIHandler()  # loads the middleware, as a WSGI server does when it starts
            with redis.Redis.from_url(redis_url) as admin:
                named = [c for c in admin.client_list() if c["name"] == "django-session-warm"]
            assert len(named) == 8
        finally:
            sessions.close_connections()


def test_a_store_out_of_reach_when_loaded_is_said_once_and_requests_get_503(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from django.core.handlers.wsgi import WSGIHandler

    from bisman_ratelimit.testing import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    with override_settings(**SESSION_SETTINGS, BISMAN_SESSIONS={"URL": url}):
        try:
            caplog.set_level(logging.WARNING, "bisman_ratelimit.django")
            WSGIHandler()
            warnings = [r.getMessage() for r in caplog.records]
            assert len(warnings) == 1
            assert warnings[0].startswith("could not open connections to the session store in advance: ")
            client = Client(raise_request_exception=False)
            put = client.post("/put", data=json.dumps({"a": 1}), content_type="application/json")
            assert put.status_code == 503
        finally:
            sessions.close_connections()
