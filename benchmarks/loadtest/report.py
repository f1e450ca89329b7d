"""The load test's report: markdown tables and matplotlib plots from ``results.json``.

    python benchmarks/loadtest/report.py docs/loadtest/results.json   # README.md and plots beside it

Every figure compares contenders within one run. Per phase, throughput is
the median over its one-second ticks of requests per second, and latency
the median over its ticks of each tick's percentile.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from run import HARNESS_COMMANDS

GROUPS = (
    ("starlette", "Starlette under uvicorn"),
    ("fastapi", "FastAPI under uvicorn"),
    ("django-asgi", "Django under gunicorn with uvicorn workers (ASGI)"),
    ("django-wsgi", "Django under gunicorn gthread (WSGI)"),
)
PEERS = {
    "starlette": "slowapi",
    "fastapi": "fastapi-limiter",
    "django-asgi": "django-ratelimit",
    "django-wsgi": "django-ratelimit",
}


@dataclass(frozen=True, kw_only=True)
class PhaseFigures:
    """What one contender did in one phase."""

    rps: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    statuses: dict[str, int]
    abuser_statuses: dict[str, int]
    socket_errors: int
    requests: int
    commands_per_request: float | None
    cpu_us_per_request: float | None
    commands: dict[str, float]
    usec_per_call: dict[str, float]
    allowed_bound: int


def median(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else math.nan


def add(total: dict[str, int], more: dict[str, int]) -> None:
    for status, count in more.items():
        total[status] = total.get(status, 0) + count


def passed(statuses: dict[str, int]) -> int:
    return sum(count for status, count in statuses.items() if status.startswith("2"))


def server_errors(statuses: dict[str, int]) -> int:
    return sum(count for status, count in statuses.items() if status.startswith("5") and status != "503")


def redis_cost(
    before: dict[str, Any] | None, after: dict[str, Any] | None, requests: int
) -> tuple[float | None, float | None, dict[str, float], dict[str, float]]:
    """Commands and CPU per request between two INFO readings; none across a restart (counters start over)."""
    if not before or not after or before["run_id"] != after["run_id"] or not requests:
        return None, None, {}, {}
    calls: dict[str, float] = {}
    usec: dict[str, float] = {}
    for name, stat in after["commandstats"].items():
        if name in HARNESS_COMMANDS:
            continue
        old = before["commandstats"].get(name, {"calls": 0, "usec": 0})
        delta = stat["calls"] - old["calls"]
        if delta > 0:
            calls[name] = delta / requests
            usec[name] = (stat["usec"] - old["usec"]) / delta
    cpu = (
        after["used_cpu_sys"] + after["used_cpu_user"] - before["used_cpu_sys"] - before["used_cpu_user"]
    ) * 1e6
    return sum(calls.values()), cpu / requests, calls, usec


def phase_figures(run: dict[str, Any], contender: dict[str, Any], phase: dict[str, Any]) -> PhaseFigures:
    clients = [tick for tick in phase["ticks"] if tick["role"] == "clients"]
    abuser = [tick for tick in phase["ticks"] if tick["role"] == "abuser"]
    statuses: dict[str, int] = {}
    abuser_statuses: dict[str, int] = {}
    for tick in clients:
        add(statuses, tick["statuses"])
    for tick in abuser:
        add(abuser_statuses, tick["statuses"])
    requests = sum(tick["requests"] for tick in phase["ticks"])
    # wrk stops each tick with a request in flight on every connection, which the server still handles.
    handled = requests + sum(tick["connections"] for tick in phase["ticks"])
    errors = sum(sum(tick["errors"].values()) for tick in phase["ticks"])
    before, after = phase["redis_before"], phase["redis_after"]
    per_request, cpu, commands, usec = redis_cost(before, after, handled)
    # Fixed windows of one second: a phase of T seconds touches at most ceil(T) + 1 of them,
    # and a memory store counts in each worker apart.
    workers = run["workers"] if contender["contender"]["storage"] == "memory" else 1
    limit = run["shared"] if phase["name"] == "global" else run["per_client"]
    bound = limit * (math.ceil(phase["end"] - phase["start"]) + 1) * workers
    return PhaseFigures(
        rps=median(tick["requests"] * 1e6 / tick["duration_us"] for tick in clients),
        p50_ms=median(tick["latency_us"]["p50"] / 1000 for tick in clients),
        p99_ms=median(tick["latency_us"]["p99"] / 1000 for tick in clients),
        p999_ms=median(tick["latency_us"]["p999"] / 1000 for tick in clients),
        statuses=statuses,
        abuser_statuses=abuser_statuses,
        socket_errors=errors,
        requests=requests,
        commands_per_request=per_request,
        cpu_us_per_request=cpu,
        commands=commands,
        usec_per_call=usec,
        allowed_bound=bound,
    )


def group_of(name: str) -> str:
    return next(group for group, _ in GROUPS if name.startswith(group + "-"))


def label(name: str) -> str:
    return name.split("-", 2 if name.startswith("django") else 1)[-1]


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def status_text(statuses: dict[str, int]) -> str:
    return ", ".join(f"{status}: {count:,}" for status, count in sorted(statuses.items())) or "-"


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return lines


def analyse(run: dict[str, Any]) -> dict[str, dict[str, PhaseFigures]]:
    return {
        contender["contender"]["name"]: {
            phase["name"]: phase_figures(run, contender, phase) for phase in contender["phases"]
        }
        for contender in run["contenders"]
    }


def within_50ms(phases: dict[str, PhaseFigures], connections: dict[str, int]) -> str:
    """The most requests/s of a steady phase whose p99 stayed at 50 ms or under, and its connections."""
    kept = [
        (phase.rps, connections[name])
        for name, phase in phases.items()
        if name in connections and phase.p99_ms <= 50
    ]
    if not kept:
        return "none"
    rps, count = max(kept)
    return f"{fmt(rps, 0)} ({count} conn.)"


def goals(run: dict[str, Any], figures: dict[str, dict[str, PhaseFigures]]) -> list[str]:
    lines: list[str] = []
    steady = {name: phases["steady"] for name, phases in figures.items() if "steady" in phases}
    for group, title in GROUPS:
        for phase_name, where in (("steady", ""), ("steady-light", " on the light steady phase")):
            ours = figures.get(f"{group}-ours-redis", {}).get(phase_name)
            peer = figures.get(f"{group}-{PEERS[group]}", {}).get(phase_name)
            if ours and peer:
                ratio = ours.rps / peer.rps
                verdict = "met" if ratio >= 2 else "not met"
                lines.append(
                    f"- {title}{where}: ours on Redis serves {ratio:.2f} x {PEERS[group]} "
                    f"(goal ≥ 2 x: {verdict})."
                )
    ours, floor = steady.get("starlette-ours-redis"), steady.get("starlette-floor")
    if ours and floor:
        ratio = ours.rps / floor.rps
        verdict = "met" if ratio >= 0.9 else "not met"
        lines.append(
            f"- Starlette: ours on Redis serves {ratio:.2f} x the bare app doing one raw EVALSHA per request "
            f"(goal ≥ 0.90: {verdict})."
        )
    over = []
    checked = 0
    for name, phases in figures.items():
        if name.endswith("-bare"):
            continue
        for phase_name in ("abuser-4", "abuser-512"):
            phase = phases.get(phase_name)
            if phase is None:
                continue
            checked += 1
            if passed(phase.abuser_statuses) > phase.allowed_bound:
                over.append(
                    f"{name} ({phase_name}: {passed(phase.abuser_statuses):,} > {phase.allowed_bound:,})"
                )
    if checked:
        verdict = "met by every limiter" if not over else "not met by " + "; ".join(over)
        lines.append(f"- The abusive client gets nothing past its limit: {verdict}.")
    for name, phases in figures.items():
        if phases.get("restart") and "-ours-redis" in name:
            errors = server_errors(phases["restart"].statuses) + phases["restart"].socket_errors
            verdict = "met" if errors == 0 else "not met"
            lines.append(
                f"- {name}: the Redis restart costs {errors} 5xx or socket errors "
                f"with the fallback ({verdict})."
            )
    return lines


# The parts of bench_core.py's output that belong beside the load test.
CORE_SECTIONS = ("## Redis, sync: three sliding-window limits", "## Redis, sync: where a check's time goes")


def demoted(text: str) -> list[str]:
    """A script's markdown, its headings three levels lower, to sit under the report's own."""
    return ["###" + line if line.startswith("#") else line for line in text.splitlines()]


def sections(text: str, titles: Sequence[str]) -> list[str]:
    """The markdown sections of ``text`` whose heading starts with one of ``titles``, a level lower."""
    out: list[str] = []
    keep = False
    for line in text.splitlines():
        if line.startswith("#"):
            keep = line.startswith(titles)
            line = "##" + line if keep else line
        if keep:
            out.append(line)
    return out


def render(run: dict[str, Any], figures: dict[str, dict[str, PhaseFigures]], plots: Sequence[str]) -> str:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(run["started"]))
    names = [contender["contender"]["name"] for contender in run["contenders"]]
    connections = {
        phase["name"]: tick["connections"]
        for contender in run["contenders"]
        for phase in contender["phases"]
        if phase["name"].startswith("steady")
        for tick in phase["ticks"]
        if tick["role"] == "clients"
    }
    workers = {contender["contender"]["name"]: contender["workers"] for contender in run["contenders"]}
    out = [
        "# Load test",
        "",
        f"Generated by `python benchmarks/loadtest/run.py{' --quick' if run['quick'] else ''}` on {when}, "
        f"in {run['seconds'] / 60:.1f} min: Redis {run['redis_version']}, {run['cpus']} CPUs, "
        f"wrk with {run['connections']} connections for the well-behaved clients, "
        f"{run['ticks']} one-second ticks per phase, {run['workers']} server workers. "
        "The load generator runs on the same cores as the servers and Redis: "
        "read the ratios between contenders of this run, not the absolute figures "
        "(the findings below say how busy the machine was).",
        "",
        f"Limits: `GET /api/calls` allows {run['per_client']} requests per second per client (`X-Client`), "
        f"`GET /api/global` {run['shared']} per second for every client together; "
        "fixed windows of one second "
        "for every library. See [benchmarks/loadtest/README.md](../../benchmarks/loadtest/README.md) for the "
        "contenders and the phases.",
        "",
        "## Headline: steady load under the limits",
        "",
        "Requests per second (median of the phase's seconds), latency (median of each second's percentile), "
        "and what Redis spent per request (`INFO commandstats` and `used_cpu_*` before and after the phase).",
        "",
    ]
    header = [
        "contender",
        "req/s",
        "x bare",
        "p50 ms",
        "p99 ms",
        "p99 ≤ 50 ms",
        "req/s at p99 ≤ 50 ms",
        "Redis cmds/req",
        "Redis CPU µs/req",
    ]
    rows = []
    for name in names:
        steady = figures[name].get("steady")
        if steady is None:
            continue
        bare = figures.get(f"{group_of(name)}-bare", {}).get("steady")
        rows.append(
            [
                f"`{name}`",
                fmt(steady.rps, 0),
                fmt(steady.rps / bare.rps, 2) if bare else "-",
                fmt(steady.p50_ms),
                fmt(steady.p99_ms),
                "yes" if steady.p99_ms <= 50 else "no",
                within_50ms(figures[name], connections),
                fmt(steady.commands_per_request, 2),
                fmt(steady.cpu_us_per_request),
            ]
        )
    out += table(header, rows)
    out += ["", "## Goals", ""]
    out += goals(run, figures) or ["- (not enough contenders in this run to judge them)"]
    if plots:
        out += ["", "## Plots", ""]
        out += [f"![{plot}]({plot})" for plot in plots]
    out += ["", "## Every phase", ""]
    out += [f"- `{phase['name']}`: {phase['title']}" for phase in run["phases"]]
    for group, title in GROUPS:
        members = [name for name in names if group_of(name) == group]
        if not members:
            continue
        out += ["", f"### {title}", ""]
        header = [
            "contender",
            "phase",
            "req/s",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "statuses (well-behaved)",
            "socket errors",
            "Redis cmds/req",
            "Redis CPU µs/req",
        ]
        rows = []
        for name in members:
            for phase_name, phase in figures[name].items():
                rows.append(
                    [
                        f"`{label(name)}`",
                        phase_name,
                        fmt(phase.rps, 0),
                        fmt(phase.p50_ms),
                        fmt(phase.p99_ms),
                        fmt(phase.p999_ms),
                        status_text(phase.statuses),
                        str(phase.socket_errors),
                        fmt(phase.commands_per_request, 2),
                        fmt(phase.cpu_us_per_request),
                    ]
                )
        out += table(header, rows)
    out += [
        "",
        "## The abusive client",
        "",
        "Its own status counts (a wrk process of its own). `bound`: the most its limit lets through in the "
        "phase's fixed windows (one-second windows touched, times the workers for a store in each process).",
        "",
    ]
    rows = []
    for name in names:
        for phase_name in ("abuser-4", "abuser-512"):
            phase = figures[name].get(phase_name)
            if phase is None:
                continue
            rows.append(
                [
                    f"`{name}`",
                    phase_name,
                    status_text(phase.abuser_statuses),
                    f"{passed(phase.abuser_statuses):,}",
                    "-" if name.endswith("-bare") else f"{phase.allowed_bound:,}",
                ]
            )
    out += table(["contender", "phase", "abuser's statuses", "passed", "bound"], rows)
    out += [
        "",
        "## What Redis runs per request",
        "",
        "Steady phase, per request: calls of each command "
        "(commands inside a script count too), and the server's µs per call.",
        "",
    ]
    rows = []
    for name in names:
        steady = figures[name].get("steady")
        if steady is None or not steady.commands:
            continue
        calls = ", ".join(f"{command} {count:.2f}" for command, count in sorted(steady.commands.items()))
        usec = ", ".join(f"{command} {value:.1f}" for command, value in sorted(steady.usec_per_call.items()))
        rows.append([f"`{name}`", calls, usec])
    out += table(["contender", "calls per request", "µs per call"], rows)
    if run.get("figures"):
        out += ["", "## Beside it", ""]
        for name, title in (
            ("key_memory", "Redis memory per tracked client and limit"),
            ("accuracy", "Sliding-window accuracy"),
        ):
            if name in run["figures"]:
                out += [f"### {title}", "", *demoted(run["figures"][name].strip()), ""]
        if "core" in run["figures"]:
            out += ["### `hit_many` of three limits against the EVALSHA floor", ""]
            out += sections(run["figures"]["core"], CORE_SECTIONS)
    out += ["", f"Servers: {', '.join(sorted(set(str(w) for w in workers.values())))} worker(s) each.", ""]
    return "\n".join(out)


def write_plots(run: dict[str, Any], figures: dict[str, dict[str, PhaseFigures]], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [contender["contender"]["name"] for contender in run["contenders"]]
    written: list[str] = []

    steady = [(name, figures[name]["steady"]) for name in names if "steady" in figures[name]]
    if steady:
        fig, (left, right) = plt.subplots(1, 2, figsize=(12, max(3.0, 0.35 * len(steady) + 1)))
        labels = [name for name, _ in steady]
        left.barh(labels, [phase.rps for _, phase in steady], color="tab:blue")
        left.set_xlabel("requests/s, steady phase (median)")
        left.invert_yaxis()
        right.barh(labels, [phase.commands_per_request or 0 for _, phase in steady], color="tab:red")
        right.set_xlabel("Redis commands per request")
        right.invert_yaxis()
        right.set_yticklabels([])
        fig.tight_layout()
        fig.savefig(out / "throughput.png", dpi=90)
        plt.close(fig)
        written.append("throughput.png")

    for group, title in GROUPS:
        members = [
            contender for contender in run["contenders"] if group_of(contender["contender"]["name"]) == group
        ]
        if not members:
            continue
        fig, axes = plt.subplots(len(members), 3, figsize=(15, 2.6 * len(members)), squeeze=False)
        for row, contender in zip(axes, members, strict=True):
            name = contender["contender"]["name"]
            origin = contender["phases"][0]["start"]
            latency, statuses, redis_axis = row
            ticks = [
                tick for phase in contender["phases"] for tick in phase["ticks"] if tick["role"] == "clients"
            ]
            times = [tick["start"] - origin for tick in ticks]
            for key, style in (("p50", ":"), ("p99", "-"), ("p999", "--")):
                latency.plot(times, [tick["latency_us"][key] / 1000 for tick in ticks], style, label=key)
            latency.set_yscale("log")
            latency.set_ylabel("ms")
            latency.set_title(f"{name}: latency", fontsize=9)
            every = [tick for phase in contender["phases"] for tick in phase["ticks"]]
            buckets = {"2xx": [], "429": [], "503": [], "5xx": [], "errors": []}
            for moment in sorted({tick["start"] for tick in every}):
                same = [tick for tick in every if tick["start"] == moment]
                counts: dict[str, int] = {}
                for tick in same:
                    add(counts, tick["statuses"])
                seconds = max(tick["duration_us"] for tick in same) / 1e6
                buckets["2xx"].append(passed(counts) / seconds)
                buckets["429"].append(counts.get("429", 0) / seconds)
                buckets["503"].append(counts.get("503", 0) / seconds)
                buckets["5xx"].append(server_errors(counts) / seconds)
                buckets["errors"].append(sum(sum(tick["errors"].values()) for tick in same) / seconds)
            moments = [moment - origin for moment in sorted({tick["start"] for tick in every})]
            statuses.stackplot(moments, *buckets.values(), labels=list(buckets))
            statuses.set_title(f"{name}: requests/s by status", fontsize=9)
            samples = [sample for sample in contender["samples"] if "redis" in sample]
            redis_axis.plot(
                [s["t"] - origin for s in samples],
                [s["redis"]["instantaneous_ops_per_sec"] for s in samples],
                color="tab:red",
            )
            redis_axis.set_ylabel("Redis ops/s", color="tab:red", fontsize=8)
            memory = redis_axis.twinx()
            memory.plot(
                [s["t"] - origin for s in samples],
                [s["redis"]["used_memory"] / 2**20 for s in samples],
                color="tab:gray",
            )
            memory.set_ylabel("used_memory MiB", color="tab:gray", fontsize=8)
            redis_axis.set_title(f"{name}: Redis", fontsize=9)
            for axis in (latency, statuses, redis_axis):
                for phase in contender["phases"][1:]:
                    axis.axvline(phase["start"] - origin, color="black", linewidth=0.5, alpha=0.4)
        axes[0][0].legend(fontsize=7)
        axes[0][1].legend(fontsize=7, loc="upper right")
        for axis in axes[-1]:
            axis.set_xlabel("seconds (lines: phase starts)")
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(out / f"timeline-{group}.png", dpi=80)
        plt.close(fig)
        written.append(f"timeline-{group}.png")
    return written


def write_report(run: dict[str, Any], out: Path, *, plots: bool = True) -> Path:
    figures = analyse(run)
    written = write_plots(run, figures, out) if plots else []
    text = render(run, figures, written)
    # A reading of the figures, written by hand, survives redrawing the report from the same results.
    notes = out / "findings.md"
    if notes.exists():
        text = text.replace("\n## Plots\n", "\n" + notes.read_text().strip() + "\n\n## Plots\n", 1)
    report = out / "README.md"
    report.write_text(text)
    return report


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Redraw the load test's report from its saved results.")
    parser.add_argument(
        "results", type=Path, help="a results.json written by run.py (e.g. docs/loadtest/results.json)"
    )
    results = parser.parse_args().results
    print(write_report(json.loads(results.read_text()), results.parent))
