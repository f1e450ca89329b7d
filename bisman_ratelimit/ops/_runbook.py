"""Runbook operations: flush one namespace, inspect a key, back up, fail over.

- :func:`flush_namespace` deletes the keys of one namespace, the key named
  by the namespace itself (``flags:config``, one hash) and every key under
  its prefix, with SCAN and UNLINK in batches, never ``FLUSHALL``/``FLUSHDB``.
  The prefix is escaped with :func:`~bisman_ratelimit.core._keys.scan_pattern`,
  so ``*`` or ``?`` in it match only themselves, and each key is checked
  against the prefix again before it is deleted.
- :func:`inspect_key` reads type, TTL, ``MEMORY USAGE``, size and encoding.
- :func:`backup` runs ``BGSAVE`` and waits until ``LASTSAVE`` moves.
- :func:`failover` asks a Sentinel to fail a master over and waits until a
  new primary answers as one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from bisman_ratelimit.core import InvalidArgument, StorageError, StorageResponseError, scan_pattern
from bisman_ratelimit.ops._grouping import (
    above_policy,
    above_policy_reason,
    as_text,
    key_bytes,
    whole_seconds,
)
from bisman_ratelimit.stores import Namespace, NamespaceRegistry, default_registry

Progress = Callable[[float, float], None]


def _text(value: Any) -> str:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)


# --- flush ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FlushResult:
    """How many keys of the namespace were found, and deleted (0 on a dry run).

    ``own_key`` tells whether the key named by the namespace itself (``flags:config``
    for the namespace ``flags:config:``) was among them; ``pattern`` matched the rest.
    """

    prefix: str
    pattern: str
    matched: int
    deleted: int
    dry_run: bool
    own_key: bool = False

    @property
    def searched(self) -> str:
        """Where the keys were looked for, as the command prints it."""
        scan = f"SCAN MATCH {self.pattern}"
        return f"the key {self.prefix[:-1]} and {scan}" if self.own_key else scan


def namespace_prefix(namespace: str) -> str:
    """``"rl"`` or ``"rl:"`` -> ``"rl:"``: a flush takes whole namespaces, never a bare prefix.

    Without the colon, ``rl`` would also take ``rlx:...`` keys.
    """
    text = namespace.strip()
    if not text.rstrip(":"):
        raise InvalidArgument(
            f"flush needs a namespace such as 'rl:' (got {namespace!r}); it never deletes every key"
        )
    return text if text.endswith(":") else text + ":"


def scan_share(cursor: int) -> float:
    """How much of the keyspace a SCAN has walked when the server hands back ``cursor``.

    SCAN counts its cursor up with the bits reversed (so a table that grows
    or shrinks between calls loses no key): read backwards, the cursor is
    the walked share of the hash table, whatever the table's size.
    """
    if cursor <= 0:
        return 0.0
    bits = cursor.bit_length()
    reversed_cursor = int(format(cursor, f"0{bits}b")[::-1], 2)
    return reversed_cursor / (1 << bits)


def flush_namespace(
    client: Any,
    namespace: str,
    *,
    dry_run: bool = False,
    batch: int = 500,
    expected: int | None = None,
    progress: Progress | None = None,
) -> FlushResult:
    """Delete every key under ``namespace`` (see :func:`namespace_prefix`) with SCAN + UNLINK.

    ``progress`` is called with (done, total) after each batch: keys deleted
    (or matched, on a dry run) out of ``expected`` when it is known, else
    keys walked out of ``DBSIZE``, estimated from the SCAN cursor.
    """
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise InvalidArgument(f"batch must be a whole number >= 1, got {batch!r}")
    prefix = namespace_prefix(namespace)
    pattern = scan_pattern(prefix)
    raw_prefix = prefix.encode()
    matched = deleted = 0
    keyspace = max(1, int(client.dbsize())) if progress is not None and expected is None else 0
    pending: list[Any] = []
    # The namespace's own key (a namespace may be one key): SCAN MATCH prefix:* cannot see it.
    own_key = bool(client.exists(prefix[:-1]))
    if own_key:
        matched += 1
        pending.append(prefix[:-1])
    cursor: int = 0
    while True:
        cursor, keys = client.scan(cursor, match=pattern, count=batch)
        for key in keys:
            # A second check that does not depend on how the server reads the pattern.
            if (key if isinstance(key, bytes) else key.encode()).startswith(raw_prefix):
                matched += 1
                pending.append(key)
        if not dry_run and (len(pending) >= batch or (int(cursor) == 0 and pending)):
            for start in range(0, len(pending), batch):
                deleted += int(client.unlink(*pending[start : start + batch]))
            pending.clear()
        elif dry_run:
            pending.clear()
        if progress is not None:
            if expected is None:
                # Nothing says how many keys match until the walk ends; the cursor says how far it is.
                walked = keyspace if int(cursor) == 0 else round(scan_share(int(cursor)) * keyspace)
                progress(min(walked, keyspace), keyspace)
            else:
                done = matched if dry_run else deleted
                progress(done, max(done, expected))
        if int(cursor) == 0:
            return FlushResult(prefix, pattern, matched, deleted, dry_run, own_key)


def ttl_above_policy(ttl: float, namespace: Namespace) -> str:
    """Why a key outlives its namespace's TTL, and which of the two wins."""
    why = above_policy_reason(namespace)
    policy = f"{namespace.prefix}'s TTL of {namespace.ttl:g} s"
    return f"expires in {whole_seconds(ttl)} s, longer than {policy}: {why}"


# --- inspect --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyReport:
    """What one key is and holds. ``ttl`` is ``None`` when it never expires."""

    key: str
    type: str
    ttl: float | None
    memory_bytes: int | None
    size: int | None
    size_unit: str
    encoding: str
    namespace: str | None
    policy: str


_SIZE_COMMANDS = {
    "string": ("STRLEN", "bytes"),
    "list": ("LLEN", "elements"),
    "hash": ("HLEN", "fields"),
    "set": ("SCARD", "members"),
    "zset": ("ZCARD", "members"),
    "stream": ("XLEN", "entries"),
}


def _policy_note(key: str, ttl: float | None, registry: NamespaceRegistry) -> tuple[str | None, str]:
    namespace = registry.find(key)
    if namespace is None:
        return None, "outside the known namespaces"
    if namespace.ephemeral and ttl is None:
        return namespace.prefix, (
            f"VIOLATION: {namespace.prefix} is ephemeral but this key never expires; "
            f"set a TTL (default {namespace.ttl:g} s)"
            if namespace.ttl
            else f"VIOLATION: {namespace.prefix} is ephemeral but this key never expires"
        )
    if not namespace.ephemeral and ttl is not None:
        return namespace.prefix, f"{namespace.prefix} is persistent but this key expires in {ttl:g} s"
    if ttl is not None and above_policy(ttl, namespace.ttl):
        return namespace.prefix, f"TTL ABOVE POLICY: {ttl_above_policy(ttl, namespace)}"
    return namespace.prefix, "follows its namespace's TTL policy"


def inspect_key(
    client: Any, key: str | bytes, *, registry: NamespaceRegistry = default_registry
) -> KeyReport | None:
    """Type, TTL, memory, size and encoding of ``key``, or ``None`` if there is no such key.

    ``key`` is the key's bytes, or text as :func:`~bisman_ratelimit.ops._grouping.as_text`
    gives it (bytes that are not UTF-8 kept as surrogates); ``KeyReport.key`` is that text.
    """
    text = as_text(key)
    key = key_bytes(text)
    pipe = client.pipeline(transaction=False)
    pipe.type(key)
    pipe.pttl(key)
    pipe.memory_usage(key)
    pipe.object("encoding", key)
    kind, pttl, memory, encoding = pipe.execute(raise_on_error=False)
    kind = _text(kind)
    if kind == "none":
        return None
    size_command, unit = _SIZE_COMMANDS.get(kind, (None, ""))
    size = int(client.execute_command(size_command, key)) if size_command else None
    ttl = None if not isinstance(pttl, int) or pttl < 0 else pttl / 1000
    namespace, policy = _policy_note(text, ttl, registry)
    return KeyReport(
        key=text,
        type=kind,
        ttl=ttl,
        memory_bytes=memory if isinstance(memory, int) else None,
        size=size,
        size_unit=unit,
        encoding=_text(encoding) if isinstance(encoding, (bytes, str)) else "?",
        namespace=namespace,
        policy=policy,
    )


# --- backup ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackupResult:
    """A finished snapshot: where the server wrote it, and its size if this host can see the file."""

    path: str
    lastsave: int
    seconds: float
    size: int | None


def _persistence(client: Any) -> dict[str, Any]:
    info: dict[str, Any] = client.info("persistence")
    return info


def backup(
    client: Any,
    *,
    timeout: float = 600.0,
    poll: float = 0.1,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> BackupResult:
    """Run ``BGSAVE`` and wait until the snapshot is on disk (``LASTSAVE`` changes)."""
    started = clock()
    deadline = started + timeout
    before = _persistence(client)
    while True:
        try:
            client.bgsave(schedule=True)
            break
        except redis.ResponseError as exc:
            # Someone else's save is running; it may predate recent writes, so take our own after it.
            if "in progress" not in str(exc).lower():
                raise
        _wait(client, lambda info: not info.get("rdb_bgsave_in_progress"), deadline, poll, clock, sleep)
        before = _persistence(client)

    def finished(info: dict[str, Any]) -> bool:
        if info.get("rdb_bgsave_in_progress"):
            return False
        if info.get("rdb_last_save_time") != before.get("rdb_last_save_time"):
            return True
        # LASTSAVE has one-second resolution; the save counter (it counts failed saves too)
        # tells two saves in one second apart.
        if "rdb_saves" in info and info["rdb_saves"] != before.get("rdb_saves"):
            return True
        return info.get("rdb_last_bgsave_status") != "ok" and not info.get("aof_rewrite_in_progress")

    info = _wait(client, finished, deadline, poll, clock, sleep)
    if info.get("rdb_last_bgsave_status") != "ok":
        raise StorageResponseError(
            f"BGSAVE failed (rdb_last_bgsave_status={info.get('rdb_last_bgsave_status')}): "
            "check the Redis log, free disk space and that its dir is writable"
        )
    directory = _text(client.config_get("dir").get("dir", ""))
    filename = _text(client.config_get("dbfilename").get("dbfilename", "dump.rdb"))
    path = os.path.join(directory, filename)
    try:
        size: int | None = os.stat(path).st_size
    except OSError:
        size = None  # the server is on another host
    return BackupResult(path, int(info["rdb_last_save_time"]), clock() - started, size)


def _wait(
    client: Any,
    done: Callable[[dict[str, Any]], bool],
    deadline: float,
    poll: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> dict[str, Any]:
    while True:
        info = _persistence(client)
        if done(info):
            return info
        if clock() >= deadline:
            raise StorageError(
                "BGSAVE did not finish in time "
                f"(rdb_bgsave_in_progress={info.get('rdb_bgsave_in_progress')}); it may still be running: "
                "check INFO persistence"
            )
        sleep(poll)


# --- failover -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FailoverResult:
    """The master's address before and after a Sentinel failover."""

    master: str
    old: tuple[str, int]
    new: tuple[str, int]
    seconds: float


def _address(answer: Any) -> tuple[str, int] | None:
    if not answer:
        return None
    host, port = answer
    return _text(host), int(port)


def _role(host: str, port: int, connect: Callable[[str, int], Any]) -> str | None:
    try:
        client = connect(host, port)
        try:
            return _text(client.execute_command("ROLE")[0])
        finally:
            client.close()
    except redis.RedisError:
        return None


def _connect(host: str, port: int) -> Any:
    return redis.Redis(host=host, port=port, socket_timeout=2, socket_connect_timeout=2)


def failover(
    sentinel: Any,
    master: str,
    *,
    timeout: float = 60.0,
    poll: float = 0.2,
    connect: Callable[[str, int], Any] = _connect,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> FailoverResult:
    """``SENTINEL FAILOVER master`` through ``sentinel`` (a client of a Sentinel), then wait for it.

    Done when the Sentinel names a new address and the server there answers
    ``ROLE`` as ``master``.
    """
    started = clock()
    old = _address(sentinel.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", master))
    if old is None:
        raise InvalidArgument(f"the Sentinel knows no master named {master!r}: check --master")
    sentinel.execute_command("SENTINEL", "FAILOVER", master)
    deadline = started + timeout
    current = old
    while clock() < deadline:
        current = _address(sentinel.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", master)) or old
        if current != old and _role(*current, connect) == "master":
            return FailoverResult(master, old, current, clock() - started)
        sleep(poll)
    raise StorageError(
        f"failover of {master!r} did not finish within {timeout:g} s: the Sentinel names "
        f"{current[0]}:{current[1]} (was {old[0]}:{old[1]}); check SENTINEL MASTERS and the Sentinel log"
    )
