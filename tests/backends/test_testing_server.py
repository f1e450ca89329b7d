"""``bisman_ratelimit.testing.RedisServer``: a throwaway server, also one that needs a password."""

from __future__ import annotations

import pytest
import redis

from bisman_ratelimit.testing import RedisServer


@pytest.mark.redis
def test_a_server_with_a_password_starts() -> None:
    with RedisServer(args=("--requirepass", "s3cret")) as server:
        with redis.Redis(port=server.port, password="s3cret") as client:
            assert client.ping() is True
        with redis.Redis(port=server.port) as client, pytest.raises(redis.AuthenticationError):
            client.ping()


@pytest.mark.redis
def test_a_server_whose_default_user_is_off_starts() -> None:
    args = ("--user", "default", "off", "--user", "ops", "on", ">opspw", "~*", "+@all")
    with (
        RedisServer(args=args) as server,
        redis.Redis(port=server.port, username="ops", password="opspw") as c,
    ):
        assert c.ping() is True
