"""A real three-primary Redis Cluster on free ports, for any test module.

Load it as a plugin (``pytest_plugins = ["cluster_fixtures"]`` in a test
module, or ``from cluster_fixtures import redis_cluster,
redis_cluster_servers, make_cluster_limiter`` in the top conftest), then use
the ``redis_cluster`` fixture (one cluster per test session, flushed per
test) or ``make_cluster_limiter(mode, clock)``, which gives the conformance
suite's kind of limiter on it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio.cluster
import redis.cluster
import redis.crc

from bisman_ratelimit import AsyncLimiter, Limiter
from bisman_ratelimit.backends import AsyncRedisStorage, RedisStorage
from bisman_ratelimit.testing import RedisServer, find_server_binary, free_port

SLOTS = 16384


class RedisClusterServers:
    """``masters`` servers in cluster mode, slots split evenly, joined with ``CLUSTER MEET``;
    ``replicas`` more servers replicate the masters in turn (a replica takes over a failed
    master after ``node_timeout_ms``)."""

    def __init__(
        self,
        masters: int = 3,
        kind: str = "any",
        extra_args: tuple[str, ...] = (),
        replicas: int = 0,
        node_timeout_ms: int = 5000,
    ) -> None:
        binary = find_server_binary(kind)
        if binary is None:
            raise RuntimeError("a Redis Cluster needs redis-server or valkey-server")
        self.masters = masters
        self.bus_ports = [free_port() for _ in range(masters + replicas)]
        self.servers = [
            RedisServer(
                binary,
                # The bus port is set: the default (port + 10000) may be taken or above 65535.
                args=(
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-port",
                    str(bus_port),
                    "--cluster-node-timeout",
                    str(node_timeout_ms),
                    *extra_args,
                ),
            )
            for bus_port in self.bus_ports
        ]

    @property
    def nodes(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", server.port) for server in self.servers]

    @property
    def url(self) -> str:
        """A ``redis+cluster://`` URL naming every node."""
        return "redis+cluster://" + ",".join(f"{host}:{port}" for host, port in self.nodes)

    def start(self, timeout: float = 20.0) -> RedisClusterServers:
        for server in self.servers:
            server.start()
        clients = [redis.Redis(port=server.port) for server in self.servers]
        try:
            masters = clients[: self.masters]
            share = SLOTS // len(masters)
            for index, client in enumerate(masters):
                last = SLOTS - 1 if index == len(masters) - 1 else (index + 1) * share - 1
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", index * share, last)
            for server, bus_port in zip(self.servers[1:], self.bus_ports[1:], strict=True):
                clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", server.port, bus_port)
            deadline = time.monotonic() + timeout
            while not all(self._ready(client) for client in clients):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the cluster on ports {[s.port for s in self.servers]} did not form")
                time.sleep(0.05)
            for index, replica in enumerate(clients[self.masters :]):
                master_id = masters[index % len(masters)].execute_command("CLUSTER", "MYID")
                replica.execute_command("CLUSTER", "REPLICATE", master_id)
            while not all(self._replicating(client) for client in clients[self.masters :]):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the replicas on ports {[s.port for s in self.servers]} did not sync")
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise
        finally:
            for client in clients:
                client.close()
        return self

    def _ready(self, client: redis.Redis) -> bool:
        info = client.execute_command("CLUSTER", "INFO")
        text = info.decode() if isinstance(info, bytes) else str(info)
        fields = dict(line.split(":", 1) for line in text.split() if ":" in line)
        return fields.get("cluster_state") == "ok" and fields.get("cluster_known_nodes") == str(
            len(self.servers)
        )

    @staticmethod
    def _replicating(client: redis.Redis) -> bool:
        info = client.info("replication")
        return info.get("role") == "slave" and info.get("master_link_status") == "up"

    def primary_of(self, key: str) -> RedisServer:
        """The server that serves ``key``'s slot now, as a live node's ``CLUSTER SLOTS`` says."""
        slot = redis.crc.key_slot(key.encode())
        for server in self.servers:
            if server.process is None or server.process.poll() is not None:
                continue
            with redis.Redis(port=server.port, socket_timeout=1) as client:
                for first, last, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
                    if first <= slot <= last:
                        return next(s for s in self.servers if s.port == int(primary[1]))
        raise RuntimeError(f"no live node of the cluster serves {key!r}")

    def flush(self) -> None:
        """Empty every primary, and forget its scripts."""
        for server in self.servers:
            with redis.Redis(port=server.port) as client:
                client.flushall()
                client.script_flush()

    def client(self, **options: Any) -> redis.cluster.RedisCluster:
        nodes = [redis.cluster.ClusterNode(host, port) for host, port in self.nodes]
        return redis.cluster.RedisCluster(startup_nodes=nodes, **options)

    def async_client(self, **options: Any) -> redis.asyncio.cluster.RedisCluster:
        nodes = [redis.asyncio.cluster.ClusterNode(host, port) for host, port in self.nodes]
        return redis.asyncio.cluster.RedisCluster(startup_nodes=nodes, **options)

    def stop(self) -> None:
        for server in self.servers:
            server.__exit__(None, None, None)


@pytest.fixture(scope="session")
def redis_cluster_servers() -> Iterator[RedisClusterServers]:
    cluster = RedisClusterServers(extra_args=("--enable-debug-command", "yes")).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_cluster(redis_cluster_servers: RedisClusterServers) -> RedisClusterServers:
    """The session's cluster, flushed."""
    redis_cluster_servers.flush()
    return redis_cluster_servers


def cluster_limiter(mode: str, clock: Callable[[], float], cluster: RedisClusterServers) -> Any:
    """What ``support.make_limiter`` gives for a server, on the cluster (async: run to completion)."""
    from support import SyncFacade

    if mode == "sync":
        return Limiter(RedisStorage(cluster.client(), clock=clock))
    return SyncFacade(AsyncLimiter(AsyncRedisStorage(cluster.async_client(), clock=clock)))


@pytest.fixture
def make_cluster_limiter(redis_cluster: RedisClusterServers) -> Callable[[str, Callable[[], float]], Any]:
    """``make_cluster_limiter(mode, clock)``: a limiter on the flushed cluster ("sync" or "async")."""
    return lambda mode, clock: cluster_limiter(mode, clock, redis_cluster)
