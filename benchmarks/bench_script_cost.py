"""The server's instructions per script call, counted by callgrind: a figure the machine's load does not move.

    python benchmarks/bench_script_cost.py [--calls 4000]

Starts a private redis-server (or valkey-server) under ``valgrind
--tool=callgrind`` and, for each script, sends ``--calls`` calls in
pipelined batches of 64 (the coalesced path), then reads how many
instructions the server ran meanwhile: parsing the commands, running the
script with its inner commands, writing the replies. Two key sets: 1,000
keys that all hold a live state (most hits update one), and keys never
seen before (every hit writes a new state with its expiry).

- *floor*: ``EVALSHA`` of ``INCR`` and, on a new key, ``PEXPIRE``, the least a
  Redis-backed fixed window can cost;
- *ours*: the single-limit script of each O(1) algorithm, as a check of
  ``50/second`` sends it;
- *ours, three limits*: the script of many limits as ``hit_many`` sends it
  for three sliding windows on one client (``bench_core.py``'s three-limit
  row), measured against the floor once per key.

Counts are repeatable to a fraction of a percent; timings are not (see
``loadtest/cpu.py`` for the CPU time Redis spends per decision under a
real load). Needs valgrind (Debian: ``apt-get install valgrind``).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
from _common import machine_summary, markdown_table, source_revision

from bisman_ratelimit.backends._redis import RATELIMIT, SINGLE
from bisman_ratelimit.testing import find_server_binary, free_port

FLOOR = (
    "local n = redis.call('INCR', KEYS[1]) "
    "if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end "
    "return n"
)
ALGORITHMS = ("fixed_window", "sliding_window", "token_bucket", "gcra")
# hit_many's arguments for 100000/second, 1000000/minute and 100000000/day.
THREE_LIMITS = [
    *("sliding_window", "100000", "1000000", "100000", "1"),
    *("sliding_window", "1000000", "60000000", "1000000", "1"),
    *("sliding_window", "100000000", "86400000000", "100000000", "1"),
]
KEY_SETS: dict[str, int | None] = {"1,000 live keys": 1_000, "new keys": None}


class Counted:
    """A redis-server under callgrind, and the instructions it runs for a stretch of calls."""

    def __init__(self, binary: str, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.process = subprocess.Popen(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={folder}/out.%p",
                binary,
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("the server did not start under valgrind") from None
                time.sleep(0.2)
        self.version = self.client.info("server")["redis_version"]

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)

    def _control(self, *args: str) -> None:
        subprocess.run(["callgrind_control", *args, str(self.process.pid)], check=True, capture_output=True)

    def per_call(self, source: str, args: list[str], live: int | None, calls: int, width: int = 1) -> float:
        """Instructions per call over ``calls`` calls, on ``live`` keys holding a state, else new keys.

        A call names ``width`` keys (the limits of one client).
        """
        sha = self.client.script_load(source)

        def send(keys: list[str]) -> None:
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.evalsha(sha, width, *(f"{key}:{i}" for i in range(width)), *args)
                if len(pipe) == 64:
                    pipe.execute()
            pipe.execute()

        self.client.flushall()
        send([f"warm{i}" for i in range(1000)])  # the script, the allocator
        if live is None:
            keys = [f"new{i}" for i in range(calls)]
        else:
            keys = [f"live{i % live}" for i in range(calls)]
            send(keys[:live])
        self._control("-z")
        send(keys)
        before = set(self.folder.glob("out.*"))
        self._control("-d")
        (dump,) = set(self.folder.glob("out.*")) - before
        match = re.search(r"^(?:summary|totals): (\d+)", dump.read_text(), re.MULTILINE)
        dump.unlink()
        if match is None:
            raise RuntimeError(f"no totals in {dump}")
        return int(match.group(1)) / calls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=4000)
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        parser.error("valgrind is not on PATH (Debian: apt-get install valgrind)")
    binary = find_server_binary()
    if binary is None:
        parser.error("no redis-server or valkey-server found")

    # name: (source, arguments, keys a call)
    scripts = {"floor": (FLOOR, ["1000"], 1)}
    for algorithm in ALGORITHMS:
        scripts[f"ours {algorithm}"] = (
            SINGLE[algorithm].source,
            ["", "1", algorithm, "50", "1000000", "50", "1"],
            1,
        )
    scripts["ours, three limits (hit_many)"] = (RATELIMIT.source, ["", "1", *THREE_LIMITS], 3)
    counts: dict[tuple[str, str], float] = {}
    with tempfile.TemporaryDirectory(prefix="script-cost-") as folder:
        server = Counted(binary, Path(folder))
        try:
            for name, (source, script_args, width) in scripts.items():
                for label, keys in KEY_SETS.items():
                    counts[(name, label)] = server.per_call(source, script_args, keys, args.calls, width)
                    print(f"{name}, {label}: {counts[(name, label)]:,.0f}", file=sys.stderr, flush=True)
        finally:
            server.close()

    print(f"# Instructions per script call\n\n{machine_summary()}; {Path(binary).name} {server.version};")
    print(f"{source_revision()}; pipelined batches of 64; {args.calls:,} calls a row.\n")
    rows = []
    for name, (*_, width) in scripts.items():
        row = [name]
        for label in KEY_SETS:
            count = counts[(name, label)]
            row += [f"{count:,.0f}", f"{count / (width * counts[('floor', label)]):.2f}"]
        rows.append(row)
    headers = ["script"]
    for label in KEY_SETS:
        headers += [f"{label}: instructions", "x floor per key"]
    print(markdown_table(headers, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
