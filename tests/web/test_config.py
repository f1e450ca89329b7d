"""The per-route limits file: loading, validation messages, inheritance and route lookup."""

from __future__ import annotations

import ipaddress
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from bisman_ratelimit import ConfigFileError, ConfigurationError, Limit
from bisman_ratelimit.web._config import (
    Exemptions,
    GlobalPolicy,
    Policy,
    RateLimitConfig,
    RoutePolicy,
    load_config,
    parse_config,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "example_apps" / "ratelimits.toml"

NOTATION_HELP = (
    "expected '<amount>/<period>' or '<amount> per [<n>] <period>', e.g. '100/minute', "
    "'10 per second', '5 per 30 seconds' or the short '5/m' and '100/5m'; join several with ';'"
)
ROUTE_FIELDS = "path, methods, limits, algorithm, key, cost, shadow, exempt, deduct_when, description"
A = "ratelimits.toml: routes[0] (/a): "  # where errors in route() land
ALGORITHMS = "fixed_window, sliding_window, sliding_log, token_bucket, gcra"


def route(**fields: Any) -> dict[str, Any]:
    """One route in a config whose defaults allow 10 a minute."""
    return {"defaults": {"limits": "10/minute"}, "routes": [{"path": "/a", **fields}]}


def error_of(data: Any) -> str:
    with pytest.raises(ConfigFileError) as info:
        parse_config(data, source="ratelimits.toml")
    return str(info.value)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- a full file -------------------------------------------------------------------------------------


def test_example_file_loads_with_every_kind_of_route() -> None:
    config = load_config(EXAMPLE)
    assert config.source == str(EXAMPLE)
    assert config.defaults == Policy(limits=(Limit(100, 60),), algorithm="sliding_window", key="ip")
    assert config.global_limit == GlobalPolicy(limits=(Limit(10000, 60),), algorithm="fixed_window")
    login = config.route_for("/auth/login", "POST")
    assert login is not None
    assert login.policy == Policy(limits=(Limit(5, 60), Limit(20, 3600)), key="ip", deduct_when=(401, 403))
    assert login.description == "Failed logins per client IP"
    calls = config.route_for("/api/calls", "POST")
    assert calls is not None
    assert calls.policy == Policy(
        limits=(Limit(30, 60),),
        algorithm="token_bucket",
        key="user",
        exempt=Exemptions(ips=(ipaddress.ip_network("10.0.0.0/8"),), users=("admin",)),
    )
    history = config.route_for("/chat/threads/{thread_id}/messages", "GET")
    assert history is not None
    assert history.policy.key == "header:x-api-key"
    assert history.policy.shadow is True
    health = config.route_for("/health", "GET")
    assert health is not None
    assert health.methods is None
    assert health.policy.exempt.all is True


def test_the_documented_toml_example_parses(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "ratelimits.toml",
        """
[defaults]
limits = ["100/minute"]
algorithm = "sliding_window"
key = "ip"

[global]
limits = "10000/minute"
algorithm = "fixed_window"

[[routes]]
path = "/auth/login"
methods = ["POST"]
limits = ["5/minute", "20/hour"]
key = "ip"
deduct_when = { status = [401, 403] }
description = "Failed logins per client IP"

[[routes]]
path = "/api/calls"
methods = ["POST"]
limits = "30/minute"
algorithm = "token_bucket"
key = "user"
cost = 1
shadow = false
exempt = { ips = ["10.0.0.0/8"], users = ["admin"] }

[[routes]]
path = "/health"
exempt = true
""",
    )
    config = load_config(path)
    assert [(r.path, r.methods) for r in config.routes] == [
        ("/auth/login", frozenset({"POST"})),
        ("/api/calls", frozenset({"POST"})),
        ("/health", None),
    ]


def test_yaml_has_the_same_structure(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "ratelimits.yaml",
        """
defaults:
  limits: 100/minute
global:
  limits: [10000/minute]
routes:
  - path: /users/<int:id>/
    methods: [get, Post]
    limits: 5 per 30 seconds
    key: header:X-Api-Key
    exempt:
      ips: [192.168.0.0/16, "2001:db8::/32"]
""",
    )
    config = load_config(path)
    assert config.global_limit == GlobalPolicy(limits=(Limit(10000, 60),))
    (only,) = config.routes
    assert only == RoutePolicy(
        path="/users/<int:id>/",
        methods=frozenset({"GET", "POST"}),
        policy=Policy(
            limits=(Limit(5, 30),),
            key="header:x-api-key",
            exempt=Exemptions(
                ips=(ipaddress.ip_network("192.168.0.0/16"), ipaddress.ip_network("2001:db8::/32"))
            ),
        ),
    )


def test_yml_suffix_and_empty_yaml_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "empty.yml", ""))
    assert config == RateLimitConfig(
        source=str(tmp_path / "empty.yml"), defaults=Policy(limits=()), global_limit=None, routes=()
    )


def test_parse_config_defaults_source_and_accepts_limit_objects() -> None:
    config = parse_config({"routes": [{"path": "/a", "limits": [Limit(3, 1.5), "1/day"]}]})
    assert config.source == "<dict>"
    assert config.routes[0].policy.limits == (Limit(3, 1.5), Limit(1, 86400))


# --- inheritance -------------------------------------------------------------------------------------


def test_route_inherits_every_field_it_leaves_out() -> None:
    config = parse_config(
        {
            "defaults": {
                "limits": ["100/minute", "1000/hour"],
                "algorithm": "gcra",
                "key": "api_key",
                "cost": 2,
                "shadow": True,
                "exempt": {"users": ["ops"]},
                "deduct_when": {"status": [429]},
            },
            "routes": [{"path": "/a"}, {"path": "/b", "limits": "5/second", "key": "user", "exempt": False}],
        }
    )
    defaults = config.defaults
    assert config.routes[0].policy == defaults
    assert config.routes[1].policy == Policy(
        limits=(Limit(5, 1),),
        algorithm="gcra",
        key="user",
        cost=2,
        shadow=True,
        exempt=Exemptions(),
        deduct_when=(429,),
    )


def test_built_in_defaults_when_the_file_gives_none() -> None:
    config = parse_config({"routes": [{"path": "/a", "limits": "1/second"}]})
    assert config.defaults == Policy(limits=())
    assert config.global_limit is None
    assert config.routes[0].policy == Policy(
        limits=(Limit(1, 1),), algorithm="sliding_window", key="ip", cost=1, shadow=False
    )


def test_exempt_route_needs_no_limits_anywhere() -> None:
    config = parse_config({"routes": [{"path": "/health", "exempt": True}]})
    assert config.routes[0].policy == Policy(limits=(), exempt=Exemptions(all=True))


# --- route_for ---------------------------------------------------------------------------------------


def test_route_for_method_specific_entry_wins_over_every_method() -> None:
    config = parse_config(
        {
            "defaults": {"limits": "10/minute"},
            "routes": [
                {"path": "/items/{id}", "description": "any"},
                {"path": "/items/{id}", "methods": ["POST", "PUT"], "description": "writes"},
                {"path": "/items", "methods": "GET", "description": "list"},
            ],
        }
    )

    def described(path: str, method: str) -> str | None:
        found = config.route_for(path, method)
        return None if found is None else found.description

    assert described("/items/{id}", "POST") == "writes"
    assert described("/items/{id}", "put") == "writes"
    assert described("/items/{id}", "GET") == "any"
    assert described("/items/{id}", "DELETE") == "any"
    assert described("/items", "GET") == "list"
    assert described("/items", "POST") is None
    # Templates match exactly: no prefix or pattern matching.
    assert described("/items/{id}/", "GET") is None


def test_route_for_a_head_request_is_the_get_entry_unless_head_has_its_own() -> None:
    config = parse_config(
        {
            "defaults": {"limits": "10/minute"},
            "routes": [
                {"path": "/report", "methods": ["GET"], "description": "get"},
                {"path": "/export", "description": "any"},
                {"path": "/export", "methods": ["GET"], "description": "get"},
                {"path": "/export", "methods": ["HEAD"], "description": "head"},
                {"path": "/upload", "methods": ["POST"], "description": "post"},
            ],
        }
    )

    def described(path: str, method: str) -> str | None:
        found = config.route_for(path, method)
        return None if found is None else found.description

    assert described("/report", "HEAD") == "get"
    assert described("/report", "head") == "get"
    assert described("/report", "OPTIONS") is None
    assert described("/export", "HEAD") == "head"
    assert described("/export", "OPTIONS") == "any"
    assert described("/upload", "HEAD") is None
    assert config.lists("/upload") and config.lists("/export")
    assert not config.lists("/upload/") and not config.lists("/nowhere")
    assert described("/items/42", "GET") is None


# --- exemptions --------------------------------------------------------------------------------------


def test_exemptions_match_ips_networks_and_users() -> None:
    exempt = (
        parse_config(
            {
                "routes": [
                    {
                        "path": "/a",
                        "limits": "1/second",
                        "exempt": {"ips": ["10.0.0.0/8", "2001:db8::1"], "users": ["admin"]},
                    }
                ]
            }
        )
        .routes[0]
        .policy.exempt
    )
    assert exempt.matches("10.1.2.3", None)
    assert exempt.matches("::ffff:10.1.2.3", None)  # IPv4 client seen on a dual-stack socket
    assert exempt.matches("2001:db8::1", None)
    assert not exempt.matches("2001:db8::2", None)
    assert not exempt.matches("11.0.0.1", None)
    assert not exempt.matches("not an ip", None)
    assert not exempt.matches(None, None)
    assert exempt.matches("11.0.0.1", "admin")
    assert not exempt.matches(None, "Admin")
    assert Exemptions(all=True).matches(None, None)
    assert not Exemptions().matches("10.0.0.1", "admin")
    # Falsy when nobody is exempt, so a caller can skip the lookup.
    assert not Exemptions()
    assert Exemptions(users=("admin",))
    assert Exemptions(all=True)


# --- errors, by their messages ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(
            route(methods=["POST"], limits="abc"),
            "ratelimits.toml: routes[0] (POST /a): field 'limits': "
            f"invalid rate limit 'abc': {NOTATION_HELP}",
            id="bad-limit",
        ),
        pytest.param(
            route(limits=["1/minute", "5 per fortnight"]),
            A + f"field 'limits[1]': invalid rate limit '5 per fortnight': {NOTATION_HELP}",
            id="bad-limit-in-list",
        ),
        pytest.param(
            route(limits=[]),
            A + "field 'limits': expected at least one rate limit, e.g. \"100/minute\"",
            id="empty-limits",
        ),
        pytest.param(
            route(limits=100),
            A + "field 'limits': expected a rate limit string or a list of them, got integer 100",
            id="limits-type",
        ),
        pytest.param(
            route(algorithm="token-bucket"),
            A + "field 'algorithm': unknown algorithm 'token-bucket' "
            f"(did you mean 'token_bucket'?); expected one of {ALGORITHMS}",
            id="bad-algorithm",
        ),
        pytest.param(
            route(algorithm="leaky"),
            A + f"field 'algorithm': unknown algorithm 'leaky'; expected one of {ALGORITHMS}",
            id="bad-algorithm-no-suggestion",
        ),
        pytest.param(
            route(key="cookie"),
            A + "field 'key': unknown key 'cookie'; expected one of ip, user, api_key, header:<name>",
            id="bad-key",
        ),
        pytest.param(
            route(key="header:x api"),
            A + "field 'key': invalid header name 'x api' in 'header:x api': "
            "expected a header name of letters, digits and -, e.g. 'header:x-api-key'",
            id="bad-header-key",
        ),
        pytest.param(
            route(key="header:"),
            A + "field 'key': invalid header name '' in 'header:': "
            "expected a header name of letters, digits and -, e.g. 'header:x-api-key'",
            id="empty-header-key",
        ),
        pytest.param(
            route(limts="5/minute"),
            A + f"unknown field 'limts' (did you mean 'limits'?); allowed: {ROUTE_FIELDS}",
            id="unknown-field-suggestion",
        ),
        pytest.param(
            route(zzz=1),
            A + f"unknown field 'zzz'; allowed: {ROUTE_FIELDS}",
            id="unknown-field",
        ),
        pytest.param(
            {"defaults": {"limit": "1/minute"}},
            "ratelimits.toml: defaults: unknown field 'limit' (did you mean 'limits'?); allowed: "
            "limits, algorithm, key, cost, shadow, exempt, deduct_when",
            id="unknown-defaults-field",
        ),
        pytest.param(
            {"global": {"limits": "1/second", "key": "ip"}},
            "ratelimits.toml: global: unknown field 'key'; allowed: limits, algorithm, shadow",
            id="unknown-global-field",
        ),
        pytest.param(
            {"routs": []},
            "ratelimits.toml: unknown field 'routs' (did you mean 'routes'?); "
            "allowed: defaults, global, routes, enabled",
            id="unknown-top-level",
        ),
        pytest.param(
            route(exempt={"ip": ["10.0.0.0/8"]}),
            A + "field 'exempt': unknown field 'ip' (did you mean 'ips'?); allowed: ips, users",
            id="unknown-exempt-field",
        ),
        pytest.param(
            route(cost=0),
            A + "field 'cost': expected a whole number >= 1, got integer 0",
            id="cost-zero",
        ),
        pytest.param(
            route(cost=1.0),
            A + "field 'cost': expected a whole number >= 1, got float 1.0",
            id="cost-float",
        ),
        pytest.param(
            route(cost=True),
            A + "field 'cost': expected a whole number >= 1, got boolean true",
            id="cost-bool",
        ),
        pytest.param(
            route(cost="2"),
            A + "field 'cost': expected a whole number >= 1, got string '2'",
            id="cost-string",
        ),
        pytest.param(
            route(limits="5/minute", cost=6),
            A + "field 'cost': cost 6 is more than the limit 5/minute allows at "
            "once, so every request would be denied",
            id="cost-above-limit",
        ),
        pytest.param(
            {"defaults": {"cost": 3}, "routes": [{"path": "/a", "limits": "2/minute"}]},
            A + "field 'limits': cost 3 is more than the limit 2/minute allows at "
            "once, so every request would be denied",
            id="inherited-cost-above-limit",
        ),
        pytest.param(
            route(shadow="yes"),
            A + "field 'shadow': expected true or false, got string 'yes'",
            id="shadow-type",
        ),
        pytest.param(
            {"global": {"limits": "1/second", "shadow": 1}},
            "ratelimits.toml: global: field 'shadow': expected true or false, got integer 1",
            id="global-shadow-type",
        ),
        pytest.param(
            route(description=["x"]),
            A + "field 'description': expected a string, got a list",
            id="description-type",
        ),
        pytest.param(
            {"routes": {"path": "/a"}},
            "ratelimits.toml: field 'routes': expected a list of route tables ([[routes]]), got a table",
            id="routes-type",
        ),
        pytest.param(
            {"routes": ["/a"]},
            "ratelimits.toml: routes[0]: expected a table, got string '/a'",
            id="route-type",
        ),
        pytest.param(
            {"defaults": "100/minute"},
            "ratelimits.toml: defaults: expected a table, got string '100/minute'",
            id="defaults-type",
        ),
        pytest.param(
            {"routes": [{"limits": "1/second"}]},
            "ratelimits.toml: routes[0]: field 'path': missing: every route needs a path template, "
            'e.g. path = "/users/{id}"',
            id="missing-path",
        ),
        pytest.param(
            {"routes": [{"path": "/a b", "limits": "1/second"}]},
            "ratelimits.toml: routes[0] (/a b): field 'path': expected a route template without spaces, "
            "e.g. '/users/{id}', got '/a b'",
            id="path-with-space",
        ),
        pytest.param(
            route(methods=[]),
            A + "field 'methods': expected at least one method; leave 'methods' out to match every method",
            id="methods-empty",
        ),
        pytest.param(
            route(methods=["GET", 1]),
            A + "field 'methods': expected HTTP method names such as 'GET' or 'POST', got integer 1",
            id="methods-type",
        ),
        pytest.param(
            route(methods="GET POST"),
            A + "field 'methods': expected HTTP method names such as 'GET' or 'POST', got 'GET POST'",
            id="methods-not-token",
        ),
        pytest.param(
            {"routes": [{"path": "/a"}]},
            A + "field 'limits': missing: give limits in the route or in defaults, "
            "or set exempt = true to leave the route unlimited",
            id="no-limits-anywhere",
        ),
        pytest.param(
            {"global": {"algorithm": "gcra"}},
            "ratelimits.toml: global: field 'limits': missing: the global section needs limits, "
            'e.g. limits = "10000/minute"',
            id="global-without-limits",
        ),
        pytest.param(
            {"routes": [{"path": "/health", "exempt": True, "limits": "1/second"}]},
            "ratelimits.toml: routes[0] (/health): field 'limits': "
            "has no effect on a route with exempt = true; remove one of them",
            id="exempt-with-limits",
        ),
        pytest.param(
            {"defaults": {"limits": "1/second", "exempt": True}},
            "ratelimits.toml: defaults: field 'exempt': "
            "exempt = true in defaults would switch off every limit; "
            "give ips and users here, or exempt = true on single routes",
            id="exempt-all-defaults",
        ),
        pytest.param(
            route(exempt="yes"),
            A + "field 'exempt': expected true, false or a table with ips and users, got string 'yes'",
            id="exempt-type",
        ),
        pytest.param(
            route(exempt={"ips": ["10.0.0.0/8", "10.0.0.0/33"]}),
            A + "field 'exempt.ips[1]': invalid IP network '10.0.0.0/33': "
            "expected an IP address or a CIDR such as '10.0.0.0/8' or '2001:db8::/32'",
            id="bad-cidr",
        ),
        pytest.param(
            route(exempt={"ips": ["10.0.0.1/8"]}),
            A + "field 'exempt.ips[0]': invalid IP network '10.0.0.1/8' "
            "(10.0.0.1/8 has host bits set): expected an IP address or a CIDR such as '10.0.0.0/8' or "
            "'2001:db8::/32'",
            id="cidr-host-bits",
        ),
        pytest.param(
            route(exempt={"ips": "10.0.0.0/8"}),
            A + "field 'exempt.ips': expected a list of strings, got string '10.0.0.0/8'",
            id="ips-not-list",
        ),
        pytest.param(
            route(exempt={"users": [""]}),
            A + "field 'exempt.users[0]': expected a user id, got an empty string",
            id="empty-user",
        ),
        pytest.param(
            route(deduct_when={"status": [401, 99]}),
            A + "field 'deduct_when.status[1]': expected an HTTP status code from 100 to 599, got integer 99",
            id="bad-status",
        ),
        pytest.param(
            route(deduct_when={"status": ["401"]}),
            A + "field 'deduct_when.status[0]': expected an HTTP status code "
            "from 100 to 599, got string '401'",
            id="status-string",
        ),
        pytest.param(
            route(deduct_when=[401]),
            A + "field 'deduct_when': expected a table such as { status = [401, 403] }, got a list",
            id="deduct-when-type",
        ),
        pytest.param(
            route(deduct_when={}),
            A + "field 'deduct_when.status': missing: expected a list of "
            "response status codes, e.g. [401, 403]",
            id="deduct-when-empty",
        ),
        pytest.param(
            route(deduct_when={"statuses": [401]}),
            A + "field 'deduct_when': unknown field 'statuses' (did you mean 'status'?); allowed: status",
            id="deduct-when-unknown",
        ),
    ],
)
def test_error_messages(data: Any, message: str) -> None:
    assert error_of(data) == message


def test_duplicate_routes() -> None:
    base = {"defaults": {"limits": "1/second"}}
    assert error_of({**base, "routes": [{"path": "/a"}, {"path": "/b"}, {"path": "/a"}]}) == (
        "ratelimits.toml: routes[2] (/a): duplicate route: /a (every method) is already defined by routes[0]"
    )
    assert (
        error_of(
            {**base, "routes": [{"path": "/a", "methods": "GET"}, {"path": "/a", "methods": ["post", "get"]}]}
        )
        == "ratelimits.toml: routes[1] (GET,POST /a): duplicate route: GET /a is already defined by routes[0]"
    )
    # A method-specific entry beside one for every method is not a duplicate.
    ok = parse_config({**base, "routes": [{"path": "/a"}, {"path": "/a", "methods": "GET"}]})
    assert len(ok.routes) == 2


def test_error_carries_its_parts_and_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_config(route(cost=0), source="limits.toml")
    error = info.value
    assert isinstance(error, ConfigFileError)
    assert (error.path, error.where, error.field) == ("limits.toml", "routes[0] (/a)", "cost")
    assert error.problem == "expected a whole number >= 1, got integer 0"


# --- reading files -----------------------------------------------------------------------------------


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "ratelimits.toml", '[defaults]\nlimits = "1/minute"\nkey = ip\n')
    with pytest.raises(ConfigFileError) as info:
        load_config(path)
    assert re.fullmatch(
        rf"{re.escape(str(path))}: invalid TOML: .+ \(at line 3, column \d+\)", str(info.value)
    )


def test_toml_error_at_end_of_document_names_the_last_line(tmp_path: Path) -> None:
    path = write(tmp_path, "ratelimits.toml", "[defaults]\nlimits = [\n")
    with pytest.raises(ConfigFileError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: invalid TOML: Invalid value (at end of document, line 3)"


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "ratelimits.yaml", "defaults:\n  limits: [1/minute\n  key: ip\n")
    with pytest.raises(ConfigFileError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: invalid YAML at line 3, column 6: expected ',' or ']', but got ':'"


def test_yaml_validation_errors_read_like_toml_ones(tmp_path: Path) -> None:
    path = write(tmp_path, "limits.yml", "routes:\n  - path: /a\n    limits: 5/minute\n    shadow: maybe\n")
    with pytest.raises(ConfigFileError) as info:
        load_config(path)
    assert (
        str(info.value)
        == f"{path}: routes[0] (/a): field 'shadow': expected true or false, got string 'maybe'"
    )


def test_yaml_top_level_must_be_a_table(tmp_path: Path) -> None:
    path = write(tmp_path, "limits.yaml", "- path: /a\n")
    with pytest.raises(ConfigFileError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: expected a table, got a list"


def test_yaml_without_pyyaml_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "ratelimits.yaml", "routes: []\n")
    # A None entry in sys.modules makes `import yaml` raise ImportError, as when PyYAML is absent.
    monkeypatch.setitem(sys.modules, "yaml", None)
    with pytest.raises(ConfigFileError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: reading YAML needs PyYAML: pip install 'bisman-ratelimit[yaml]'"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigFileError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: file not found"


def test_directory_instead_of_file(tmp_path: Path) -> None:
    path = tmp_path / "dir.toml"
    path.mkdir()
    with pytest.raises(ConfigFileError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: cannot read the file: Is a directory"


def test_unknown_file_type(tmp_path: Path) -> None:
    path = write(tmp_path, "limits.json", "{}")
    with pytest.raises(ConfigFileError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: unknown file type '.json': expected a .toml, .yaml or .yml file"


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "limits.toml"
    path.write_bytes(b'[defaults]\nlimits = "1/minute" # \xff\n')
    with pytest.raises(ConfigFileError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: not UTF-8 text (bad byte at offset 33)"
