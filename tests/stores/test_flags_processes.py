"""A flag changed from the command line reaches other app processes, cached, within a bound."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import time
from typing import Any

import redis

from bisman_ratelimit.stores import FlagAdmin, Flags

# An app process: serves the flag from its cache and reports when it changes.
READER = r"""
import sys, time
from bisman_ratelimit.stores import Flags
flags = Flags(sys.argv[1])
print("ready", flags.get("checkout", "unset"), flush=True)
deadline = time.monotonic() + 10
reads = 0
while time.monotonic() < deadline:
    value = flags.get("checkout", "unset")
    reads += 1
    if value != "unset":
        print("seen", repr(value), time.time(), reads, flags.cache.loaded_at, flush=True)
        break
    time.sleep(0.001)
else:
    print("timeout", flush=True)
"""


def test_cli_change_reaches_two_processes(redis_url: str) -> None:
    readers = [
        subprocess.Popen(
            [sys.executable, "-c", READER, redis_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for reader in readers:
            assert reader.stdout is not None
            assert reader.stdout.readline().split() == ["ready", "unset"]
        with redis.Redis.from_url(redis_url) as client:
            loads_before = client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
        cli = subprocess.run(
            [
                sys.executable,
                "-m",
                "bisman_ratelimit",
                "flags",
                "set",
                "checkout",
                "v2",
                "--type",
                "str",
                "--url",
                redis_url,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        written = time.time()
        assert (cli.returncode, cli.stdout, cli.stderr) == (0, 'checkout = "v2" (str)\n', "")
        seen = []
        for reader in readers:
            out, err = reader.communicate(timeout=15)
            assert err == ""
            word, value, at, reads, _ = out.split()
            assert (word, value) == ("seen", "'v2'")
            seen.append((float(at), int(reads)))
        with redis.Redis.from_url(redis_url) as client:
            loads = client.info("commandstats")["cmdstat_evalsha"]["calls"] - loads_before
    finally:
        for reader in readers:
            reader.kill()
            reader.wait()
    for at, reads in seen:
        # Bounded delay: seen within half a second of the command returning.
        assert at - written < 0.5
        assert reads > 0
    # Hundreds of reads in each process cost one snapshot reload each, plus the CLI's two calls.
    assert loads <= 4


def _read_until_changed(flags: Flags, ready: Any, results: Any) -> None:
    flags.get("checkout", "unset")
    ready.release()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if flags.get("checkout", "unset") == "v2":
            results.put(time.time())
            return
        time.sleep(0.002)
    results.put(None)


def test_a_change_reaches_every_process_forked_after_a_read(redis_url: str) -> None:
    """As under ``gunicorn --preload``: a reader used in the parent, then workers forked from it."""
    flags = Flags(redis_url)
    assert flags.get("checkout", "unset") == "unset"
    context = multiprocessing.get_context("fork")
    ready, results = context.Semaphore(0), context.Queue()
    children = [context.Process(target=_read_until_changed, args=(flags, ready, results)) for _ in range(4)]
    for child in children:
        child.start()
    for _ in children:
        assert ready.acquire(timeout=10)
    FlagAdmin(redis_url).set("checkout", "v2", "str")
    changed = time.time()
    seen = [results.get(timeout=10) for _ in children]
    for child in children:
        child.join(10)
    assert None not in seen, f"{seen.count(None)} of 4 workers never saw the change"
    assert max(seen) - changed < 1.0
    # The parent listens as before.
    assert flags.get("checkout", "unset") == "v2"
    flags.close()
