"""A real Sentinel setup on free ports: a primary, a replica and three sentinels, with passwords.

Use the ``sentinel_setup`` fixture (one setup per module; the primary may
change between tests, ask :meth:`SentinelSetup.primary_port`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest
import redis

from bisman_ratelimit.testing import RedisServer, find_server_binary, free_port

SERVICE = "mymaster"
PASSWORD = "primary-s3cret"
SENTINEL_PASSWORD = "sentinel-s3cret"


def _wait(what: str, check: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.02)
    raise RuntimeError(f"timed out waiting for {what}")


class SentinelProcess:
    """``redis-server <config> --sentinel``, with a config file of its own (sentinels rewrite it)."""

    def __init__(self, binary: str, primary_port: int, quorum: int) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="bisman-sentinel-")
        self.config = os.path.join(self.dir, "sentinel.conf")
        with open(self.config, "w") as file:
            file.write(
                f"port {self.port}\nbind 127.0.0.1\nprotected-mode no\ndir {self.dir}\n"
                f"requirepass {SENTINEL_PASSWORD}\n"
                f"sentinel sentinel-pass {SENTINEL_PASSWORD}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} {quorum}\n"
                f"sentinel auth-pass {SERVICE} {PASSWORD}\n"
                f"sentinel down-after-milliseconds {SERVICE} 5000\n"
                f"sentinel failover-timeout {SERVICE} 10000\n"
            )
        self.process = subprocess.Popen(
            [binary, self.config, "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait(f"sentinel on port {self.port}", lambda: self.client().ping())

    def client(self) -> redis.Redis:
        return redis.Redis(
            port=self.port, password=SENTINEL_PASSWORD, socket_timeout=5, decode_responses=True
        )

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class SentinelSetup:
    """A primary and a replica (both password-protected) watched by ``sentinels`` sentinels."""

    service = SERVICE
    password = PASSWORD
    sentinel_password = SENTINEL_PASSWORD

    def __init__(self, sentinels: int = 3, quorum: int = 2) -> None:
        binary = find_server_binary("any")
        if binary is None:
            raise RuntimeError("a Sentinel setup needs redis-server or valkey-server")
        self.binary = binary
        self.count = sentinels
        self.quorum = quorum
        self.servers: list[RedisServer] = []
        self.sentinels: list[SentinelProcess] = []

    def start(self) -> SentinelSetup:
        try:
            # A full sync starts at once, not after the default 5 s wait for more replicas.
            quick = ("--repl-diskless-sync-delay", "0")
            primary = RedisServer(self.binary, args=quick).start()
            self.servers.append(primary)
            replica = RedisServer(
                self.binary,
                args=(*quick, "--replicaof", "127.0.0.1", str(primary.port), "--masterauth", PASSWORD),
            ).start()
            self.servers.append(replica)
            # Passwords are set once the servers answer: RedisServer checks
            # that they are up with a PING that would need one.
            for server in self.servers:
                with redis.Redis(port=server.port) as client:
                    client.config_set("masterauth", PASSWORD)
                    client.config_set("requirepass", PASSWORD)
            _wait("the replica to sync", lambda: self.server_info(replica.port)["master_link_status"] == "up")
            self.sentinels = [
                SentinelProcess(self.binary, primary.port, self.quorum) for _ in range(self.count)
            ]
            for sentinel in self.sentinels:
                _wait("the sentinels to know the replica", lambda s=sentinel: self._knows_replica(s))
        except BaseException:
            self.stop()
            raise
        return self

    def _knows_replica(self, sentinel: SentinelProcess) -> bool:
        # Each sentinel asks the primary at once; finding the other
        # sentinels takes their hello messages (every 2 s), which a forced
        # failover does not need.
        with sentinel.client() as client:
            replicas = client.execute_command("SENTINEL", "REPLICAS", SERVICE)
        return (
            len(replicas) == 1
            and _fields(replicas[0])["flags"] == "slave"
            and _fields(replicas[0])["master-link-status"] == "ok"
        )

    def server_info(self, port: int) -> dict[str, str]:
        with redis.Redis(port=port, password=PASSWORD, decode_responses=True) as client:
            return {k: str(v) for k, v in client.info("replication").items()}

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://:{PASSWORD}@{hosts}/{SERVICE}/0?sentinel_password={SENTINEL_PASSWORD}"

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", s.port) for s in self.sentinels]

    def primary_port(self) -> int:
        """The primary's port as the first sentinel reports it to clients (``SENTINEL MASTER``)."""
        with self.sentinels[0].client() as client:
            state = _fields(client.execute_command("SENTINEL", "MASTER", SERVICE))
        return int(state["port"])

    def _failover_done(self, new: int) -> bool:
        with self.sentinels[0].client() as client:
            state = _fields(client.execute_command("SENTINEL", "MASTER", SERVICE))
        return (
            int(state["port"]) == new
            and state["flags"] == "master"
            and self.server_info(new)["role"] == "master"
        )

    def client_for(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, password=PASSWORD)

    def failover(self) -> tuple[int, int]:
        """``SENTINEL FAILOVER``, then wait until the replica is the primary. Returns (old, new) ports."""
        old = self.primary_port()
        (new,) = [s.port for s in self.servers if s.port != old]
        with self.sentinels[0].client() as client:
            client.execute_command("SENTINEL", "FAILOVER", SERVICE)
        _wait(
            "the promotion", lambda: self.primary_port() == new and self.server_info(new)["role"] == "master"
        )
        return old, new

    def flush(self) -> None:
        with self.client_for(self.primary_port()) as client:
            client.flushall()

    def stop(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        for server in self.servers:
            server.__exit__(None, None, None)


def _fields(flat: object) -> dict[str, str]:
    """``SENTINEL REPLICAS`` rows come as flat lists or as dicts, by client version."""
    if isinstance(flat, dict):
        return {str(k): str(v) for k, v in flat.items()}
    items = list(flat)  # type: ignore[call-overload]
    return {str(items[i]): str(items[i + 1]) for i in range(0, len(items), 2)}


@pytest.fixture(scope="module")
def sentinel_setup() -> Iterator[SentinelSetup]:
    setup = SentinelSetup().start()
    yield setup
    setup.stop()
