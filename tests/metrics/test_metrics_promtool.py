"""Our exposition and alert rules, checked by the real promtool (Debian's prometheus package)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import textwrap
from collections import Counter
from pathlib import Path

import pytest
import redis
from prometheus_client import CollectorRegistry, generate_latest

from bisman_ratelimit.metrics import CacheMetrics, RateLimitMetrics
from bisman_ratelimit.ops import NamespaceGrouper, RedisCollector
from bisman_ratelimit.ops._hotkeys import summarize_hotkeys
from bisman_ratelimit.ops.cli._ops_cmd import write_hotkey_metrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus-alerts.yml"
DASHBOARD = DEPLOY / "grafana-dashboard.json"


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        raise RuntimeError("promtool not found: apt-get install -y prometheus (it ships /usr/bin/promtool)")
    return found


def check_metrics(promtool: str, exposition: bytes) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, "check", "metrics"], input=exposition.decode(), capture_output=True, text=True, timeout=60
    )


def populated_registry(redis_client: redis.Redis) -> CollectorRegistry:
    registry = CollectorRegistry()
    cache = CacheMetrics(registry=registry)
    limits = RateLimitMetrics(registry=registry)
    cache.observe("get", "hit", 0.0004)
    cache.observe("evalsha", "n/a", 0.002)
    limits.record_decision(route="/api/calls/{id}", allowed=True)
    limits.record_decision(route="/api/calls/{id}", allowed=False, reason="client")
    limits.record_decision(route=None, allowed=True, reason="shadow")
    limits.record_breaker_transition("open")
    for i in range(30):
        redis_client.set(f"rl:user:{i}:api:calls", i, ex=300)
    redis_client.set("flags:config:darkMode", "on")
    registry.register(RedisCollector(redis_client))
    return registry


def test_exposition_passes_promtool_check_metrics(promtool: str, redis_client: redis.Redis) -> None:
    registry = populated_registry(redis_client)
    exposition = generate_latest(registry)
    assert b'redis_namespace_keys{namespace="rl:user"} 30.0' in exposition
    result = check_metrics(promtool, exposition)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_promtool_does_catch_a_bad_exposition(promtool: str) -> None:
    # The check above means something only if promtool complains about real mistakes.
    bad = b"# HELP app_requests Requests.\n# TYPE app_requests counter\napp_requests 1\n"
    result = check_metrics(promtool, bad)
    assert result.returncode != 0
    assert 'counter metrics should have "_total" suffix' in result.stdout + result.stderr


def test_hotkey_metrics_file_passes_promtool(promtool: str, tmp_path: Path) -> None:
    ops = Counter({"chat:ctx:thread:1": 90, **{f"x:{i}": 1 for i in range(10)}})
    report = summarize_hotkeys(ops, ops, Counter(), commands=100, grouper=NamespaceGrouper(open_domains=True))
    path = tmp_path / "hotkeys.prom"
    write_hotkey_metrics(report, str(path))
    text = path.read_text()
    assert 'redis_hotkey_ops_share{namespace="chat:ctx"} 0.9' in text
    assert 'redis_hotkey_ops_share{namespace="other"} 0.01' in text
    result = check_metrics(promtool, text.encode())
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_alert_rules_pass_promtool_check_rules(promtool: str) -> None:
    result = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 6 rules found" in result.stdout


RULE_TESTS = """
rule_files:
  - {rules}
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'redis_memory_bytes{{instance="full"}}'
        values: '860x10'
      - series: 'redis_memory_max_bytes{{instance="full"}}'
        values: '1000x10'
      - series: 'redis_memory_bytes{{instance="fine"}}'
        values: '800x10'
      - series: 'redis_memory_max_bytes{{instance="fine"}}'
        values: '1000x10'
      - series: 'redis_memory_bytes{{instance="nolimit"}}'
        values: '900x10'
      - series: 'redis_memory_max_bytes{{instance="nolimit"}}'
        values: '0x10'
    alert_rule_test:
      - eval_time: 4m
        alertname: RedisMemoryHigh
        exp_alerts: []
      - eval_time: 6m
        alertname: RedisMemoryHigh
        exp_alerts:
          - exp_labels: {{severity: warning, instance: full}}
            exp_annotations:
              summary: "Redis full uses 86% of maxmemory"
              description: >-
                Past 85% of maxmemory eviction is near. Find what grew with `bisman-ratelimit audit
                cardinality`; see docs/RUNBOOK.md.
  - interval: 1m
    input_series:
      - series: 'app_breaker_state{{job="web", breaker="redis", state="open"}}'
        values: '0 0 1 1 1 1'
      - series: 'app_breaker_state{{job="web", breaker="redis", state="closed"}}'
        values: '1 1 0 0 0 0'
    alert_rule_test:
      - eval_time: 2m
        alertname: RateLimitBreakerOpen
        exp_alerts: []
      - eval_time: 4m
        alertname: RateLimitBreakerOpen
        exp_alerts:
          - exp_labels: {{severity: critical, job: web, breaker: redis}}
            exp_annotations:
              summary: "Circuit breaker redis of web is open"
              description: >-
                The app stopped calling Redis and answers from its fallback. Check RedisDown and the
                app's logs.
  - interval: 1m
    input_series:
      # 1 refusal/s for 80 minutes, then 10/s: a spike; the shadow series never alerts.
      - series: 'app_rate_limit_block_total{{job="web", route="/login", reason="client"}}'
        values: '0+60x80 4860+600x20'
      - series: 'app_rate_limit_block_total{{job="web", route="/login", reason="shadow"}}'
        values: '0+6000x100'
    alert_rule_test:
      - eval_time: 78m
        alertname: RateLimitBlockSpike
        exp_alerts: []
      - eval_time: 95m
        alertname: RateLimitBlockSpike
        exp_alerts:
          - exp_labels: {{severity: warning, job: web, route: /login}}
            exp_annotations:
              summary: "Refusals on /login (web) rose to 10/s"
              description: >-
                More than three times the previous hour's rate, and over 1/s: an attack, a client in
                a retry loop, or a limit set too low. Break it down by reason in the dashboard.
  - interval: 1m
    input_series:
      - series: 'redis_hotkey_ops_share{{instance="node", namespace="chat:ctx"}}'
        values: '0.5x5'
      - series: 'redis_hotkey_ops_share{{instance="node", namespace="rl:user"}}'
        values: '0.01x5'
      - series: 'redis_hotkey_audit_timestamp_seconds{{instance="node"}}'
        values: '0x5'
    alert_rule_test:
      - eval_time: 2m
        alertname: RedisHotKey
        exp_alerts:
          - exp_labels: {{severity: warning, instance: node, namespace: "chat:ctx"}}
            exp_annotations:
              summary: "A chat:ctx key took 50% of Redis key operations"
              description: >-
                The last hot-key audit found one key above 5% of all key operations. Run
                `bisman-ratelimit audit hotkeys --duration 10s` for the key and how to split it.
"""


def test_alert_rules_fire_when_they_should(promtool: str, tmp_path: Path) -> None:
    tests = tmp_path / "alerts.test.yml"
    tests.write_text(textwrap.dedent(RULE_TESTS).format(rules=RULES))
    result = subprocess.run(
        [promtool, "test", "rules", str(tests)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_dashboard_queries_only_metrics_we_export(redis_client: redis.Redis, tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])] + [
        item["query"]["query"] for item in dashboard["templating"]["list"] if item["type"] == "query"
    ]
    used = {name for expr in exprs for name in re.findall(r"\b((?:app|redis)_[a-z_]+)\b", expr)}

    exported = {
        sample.name for metric in populated_registry(redis_client).collect() for sample in metric.samples
    }
    ops = Counter({"k:1": 1})
    path = tmp_path / "hot.prom"
    write_hotkey_metrics(
        summarize_hotkeys(ops, ops, Counter(), commands=1, grouper=NamespaceGrouper()), str(path)
    )
    exported |= {
        line.split("{")[0].split(" ")[0] for line in path.read_text().splitlines() if not line.startswith("#")
    }

    assert used - exported == set()
    # Each panel is placed and has a query; ids are unique.
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert all(panel["targets"] for panel in dashboard["panels"] if panel["type"] != "row")
