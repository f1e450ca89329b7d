"""Connections opened by ``warm()`` read with the socket timeout of the URL, not the warm-up's."""

from __future__ import annotations

import os
import signal
import time

import pytest

from bisman_ratelimit import Limiter, StorageUnavailable
from bisman_ratelimit.backends._wire import lender_for
from bisman_ratelimit.testing import RedisServer


@pytest.mark.redis
def test_a_warmed_connection_times_out_after_the_budget() -> None:
    with RedisServer() as server:
        limiter = Limiter.from_url(server.url + "?timeout=200ms&blocked_cache=off")
        limiter.warm(2)
        lender = lender_for(limiter.storage.client)  # type: ignore[attr-defined]
        assert lender is not None
        assert [conn._sock.gettimeout() for conn in lender.idle] == [0.2, 0.2]
        assert server.process is not None
        os.kill(server.process.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(StorageUnavailable, match=f"Timeout reading from 127.0.0.1:{server.port}$"):
                limiter.hit("a", "10/minute")
            # The warm-up allows a second to connect; a read had it too.
            assert time.monotonic() - started < 0.7
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        limiter.close()
