"""Per-route limits read from a TOML or YAML file.

The file mirrors the tuning table of an app: ``[defaults]`` that every route
inherits, an optional ``[global]`` limit shared by every request, and
``[[routes]]`` entries that match a route template and its methods. Everything
is validated at load; an error names the file, the entry and the field, and
says what was expected. See ``docs/configuration.md`` for the format.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import string
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NoReturn, cast

from bisman_ratelimit.core import (
    ALGORITHMS,
    Algorithm,
    ConfigFileError,
    InvalidArgument,
    InvalidLimit,
    Limit,
    parse_limits,
)
from bisman_ratelimit.web._environment import parse_switch
from bisman_ratelimit.web._routes import limited_as

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib


KeyKind = str  # "ip" | "user" | "api_key" | "header:<name>"
KEY_KINDS: tuple[str, ...] = ("ip", "user", "api_key", "header:<name>")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# RFC 9110 token characters: what a header name or a method may contain.
_TOKEN_CHARS = frozenset(string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~")


@dataclass(frozen=True)
class Exemptions:
    """Who a policy never applies to."""

    all: bool = False
    ips: tuple[IPNetwork, ...] = ()
    users: tuple[str, ...] = ()

    def matches(self, ip: str | None, user: str | None) -> bool:
        """True when a request from ``ip`` by ``user`` is exempt."""
        if self.all:
            return True
        if user is not None and user in self.users:
            return True
        if ip is None or not self.ips:
            return False
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        # A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d.
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.ips)

    def __bool__(self) -> bool:
        """False when nobody is exempt, so callers can skip the lookup."""
        return self.all or bool(self.ips) or bool(self.users)


@dataclass(frozen=True)
class Policy:
    """What applies to a request: limits, how they are counted and who is exempt."""

    limits: tuple[Limit, ...]
    algorithm: Algorithm = "sliding_window"
    key: KeyKind = "ip"
    cost: int = 1
    shadow: bool = False
    exempt: Exemptions = Exemptions()
    # Response status codes that count; () means every request counts, before the response.
    deduct_when: tuple[int, ...] = ()


@dataclass(frozen=True)
class RoutePolicy:
    """The policy of one route template, for some or every method."""

    path: str
    methods: frozenset[str] | None
    policy: Policy
    description: str = ""


@dataclass(frozen=True)
class GlobalPolicy:
    """One limit shared by every request, checked before the route's own."""

    limits: tuple[Limit, ...]
    algorithm: Algorithm = "fixed_window"
    shadow: bool = False


@dataclass(frozen=True)
class RateLimitConfig:
    """A validated limits file."""

    source: str
    defaults: Policy
    global_limit: GlobalPolicy | None
    routes: tuple[RoutePolicy, ...]
    # ``enabled = false`` at the top of the file switches limiting off (the plugins read it).
    enabled: bool = True
    _by_method: dict[tuple[str, str], RoutePolicy] = field(init=False, repr=False, compare=False)
    _any_method: dict[str, RoutePolicy] = field(init=False, repr=False, compare=False)
    _paths: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_method: dict[tuple[str, str], RoutePolicy] = {}
        any_method: dict[str, RoutePolicy] = {}
        for route in self.routes:
            if route.methods is None:
                any_method.setdefault(route.path, route)
            else:
                for method in route.methods:
                    by_method.setdefault((route.path, method), route)
        object.__setattr__(self, "_by_method", by_method)
        object.__setattr__(self, "_any_method", any_method)
        object.__setattr__(self, "_paths", frozenset(route.path for route in self.routes))

    def lists(self, path_template: str) -> bool:
        """Whether an entry names this exact template, for some method or for every one."""
        return path_template in self._paths

    def route_for(self, path_template: str, method: str) -> RoutePolicy | None:
        """The entry for this exact template; a method-specific entry wins over one for every method.

        A HEAD request falls under the entry for HEAD, else the one for GET.
        """
        for name in limited_as(method):
            route = self._by_method.get((path_template, name))
            if route is not None:
                return route
        return self._any_method.get(path_template)


# --- loading -----------------------------------------------------------------------------------------

_TOP_FIELDS = ("defaults", "global", "routes", "enabled")
_POLICY_FIELDS = ("limits", "algorithm", "key", "cost", "shadow", "exempt", "deduct_when")
_ROUTE_FIELDS = ("path", "methods", *_POLICY_FIELDS, "description")
_GLOBAL_FIELDS = ("limits", "algorithm", "shadow")
_EXEMPT_FIELDS = ("ips", "users")
_DEDUCT_FIELDS = ("status",)

_YAML_SUFFIXES = (".yaml", ".yml")

# A limits file is a few kilobytes; these bounds keep a hostile or broken one
# from costing memory, or a RecursionError deep inside the TOML or YAML parser.
MAX_CONFIG_BYTES = 1024 * 1024
MAX_CONFIG_DEPTH = 32


def load_config(path: str | os.PathLike[str]) -> RateLimitConfig:
    """Read and validate a ``.toml``, ``.yaml`` or ``.yml`` limits file."""
    name = os.fspath(path)
    suffix = Path(name).suffix.lower()
    if suffix != ".toml" and suffix not in _YAML_SUFFIXES:
        raise ConfigFileError(
            name, "", None, f"unknown file type {suffix or '(none)'!r}: expected a .toml, .yaml or .yml file"
        )
    try:
        with open(name, "rb") as file:
            raw = file.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigFileError(name, "", None, "file not found") from None
    except OSError as exc:
        raise ConfigFileError(name, "", None, f"cannot read the file: {exc.strerror or exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigFileError(name, "", None, f"larger than {MAX_CONFIG_BYTES} bytes: not a limits file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigFileError(name, "", None, f"not UTF-8 text (bad byte at offset {exc.start})") from None
    try:
        data = _load_yaml(name, text) if suffix in _YAML_SUFFIXES else _load_toml(name, text)
    except RecursionError:
        raise ConfigFileError(name, "", None, _too_deep()) from None
    return parse_config(data, source=name)


def _too_deep() -> str:
    return f"nested more than {MAX_CONFIG_DEPTH} levels deep: not a limits file"


def _check_depth(name: str, data: Any) -> None:
    # Iterative, so that the check itself cannot recurse too deep.
    stack = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_CONFIG_DEPTH:
            raise ConfigFileError(name, "", None, _too_deep())
        if isinstance(value, Mapping):
            stack.extend((item, depth + 1) for item in value.values())
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)


def _load_toml(name: str, text: str) -> Any:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # The message ends with "(at line N, column M)", or "(at end of document)", which gets its line too.
        last_line = text.count("\n") + 1
        message = str(exc).replace("(at end of document)", f"(at end of document, line {last_line})")
        raise ConfigFileError(name, "", None, f"invalid TOML: {message}") from None


def _load_yaml(name: str, text: str) -> Any:
    try:
        import yaml
    except ImportError:
        raise ConfigFileError(
            name, "", None, "reading YAML needs PyYAML: pip install 'bisman-ratelimit[yaml]'"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigFileError(name, "", None, f"invalid YAML{where}: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigFileError(name, "", None, f"invalid YAML: {exc}") from None
    # An empty YAML document is null; treat it like an empty TOML file.
    return {} if data is None else data


def parse_config(data: Mapping[str, Any], source: str = "<dict>") -> RateLimitConfig:
    """Validate already-parsed file contents (or a dict written in code)."""
    _check_depth(source, data)
    return _Parser(source).config(data)


# --- validation --------------------------------------------------------------------------------------


def shared_window(limits: Sequence[Limit]) -> str | None:
    """Why ``limits`` cannot be counted under one key, or ``None``.

    A key's limits are stored apart by algorithm and window only (see
    ``core.limit_tag``): two amounts over one window would share a counter.
    """
    seen: dict[int, Limit] = {}
    for limit in limits:
        other = seen.setdefault(limit.period_us, limit)
        if other != limit:
            return (
                f"limits {other} and {limit} count over one window and would share a counter; "
                "keep the stricter one"
            )
    return None


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"{'integer' if isinstance(value, int) else 'float'} {value!r}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, (list, tuple)):
        return "a list"
    return type(value).__name__


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_token(text: str) -> bool:
    return bool(text) and all(ch in _TOKEN_CHARS for ch in text)


class _Parser:
    """Walks the parsed data once; every error goes through ``fail``."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, field_name: str | None, problem: str) -> NoReturn:
        raise ConfigFileError(self.source, where, field_name, problem)

    def check_fields(
        self, where: str, table: Mapping[str, Any], allowed: Sequence[str], parent: str | None
    ) -> None:
        for name in table:
            if not isinstance(name, str):
                self.fail(where, parent, f"field names must be strings, got {_type_name(name)}")
            if name in allowed:
                continue
            close = difflib.get_close_matches(name, allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            self.fail(where, parent, f"unknown field {name!r}{hint}; allowed: {', '.join(allowed)}")

    def table(self, where: str, field_name: str | None, value: object) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            self.fail(where, field_name, f"expected a table, got {_type_name(value)}")
        return value

    # -- top level

    def config(self, data: object) -> RateLimitConfig:
        top = self.table("", None, data)
        self.check_fields("", top, _TOP_FIELDS, None)
        defaults = self.defaults(top.get("defaults", {}))
        global_limit = self.global_policy(top["global"]) if "global" in top else None
        raw_routes = top.get("routes", [])
        if not isinstance(raw_routes, (list, tuple)):
            self.fail(
                "", "routes", f"expected a list of route tables ([[routes]]), got {_type_name(raw_routes)}"
            )
        routes: list[RoutePolicy] = []
        seen: dict[tuple[str, str | None], int] = {}
        for index, raw in enumerate(raw_routes):
            route = self.route(index, raw, defaults)
            where = self.route_where(index, raw)
            for method in sorted(route.methods) if route.methods is not None else [None]:
                previous = seen.get((route.path, method))
                if previous is not None:
                    label = f"{method} {route.path}" if method else f"{route.path} (every method)"
                    self.fail(
                        where, None, f"duplicate route: {label} is already defined by routes[{previous}]"
                    )
                seen[(route.path, method)] = index
            routes.append(route)
        return RateLimitConfig(
            source=self.source,
            defaults=defaults,
            global_limit=global_limit,
            routes=tuple(routes),
            enabled=self.switch("", "enabled", top.get("enabled", True)),
        )

    def defaults(self, raw: object) -> Policy:
        where = "defaults"
        table = self.table(where, None, raw)
        self.check_fields(where, table, _POLICY_FIELDS, None)
        limits = self.limits(where, table["limits"]) if "limits" in table else ()
        exempt = self.exempt(where, table["exempt"]) if "exempt" in table else Exemptions()
        if exempt.all:
            self.fail(
                where,
                "exempt",
                "exempt = true in defaults would switch off every limit; "
                "give ips and users here, or exempt = true on single routes",
            )
        policy = Policy(
            limits=limits,
            algorithm=self.algorithm(where, table.get("algorithm", "sliding_window")),
            key=self.key(where, table.get("key", "ip")),
            cost=self.cost(where, table.get("cost", 1)),
            shadow=self.boolean(where, "shadow", table.get("shadow", False)),
            exempt=exempt,
            deduct_when=self.deduct_when(where, table["deduct_when"]) if "deduct_when" in table else (),
        )
        self.check_cost(where, "cost", policy)
        return policy

    def global_policy(self, raw: object) -> GlobalPolicy:
        where = "global"
        table = self.table(where, None, raw)
        self.check_fields(where, table, _GLOBAL_FIELDS, None)
        if "limits" not in table:
            self.fail(
                where, "limits", 'missing: the global section needs limits, e.g. limits = "10000/minute"'
            )
        return GlobalPolicy(
            limits=self.limits(where, table["limits"]),
            algorithm=self.algorithm(where, table.get("algorithm", "fixed_window")),
            shadow=self.boolean(where, "shadow", table.get("shadow", False)),
        )

    # -- routes

    @staticmethod
    def route_where(index: int, raw: object) -> str:
        where = f"routes[{index}]"
        if not isinstance(raw, Mapping):
            return where
        path = raw.get("path")
        if not isinstance(path, str) or not path:
            return where
        methods = raw.get("methods")
        if isinstance(methods, str):
            methods = [methods]
        if (
            isinstance(methods, (list, tuple))
            and methods
            and all(isinstance(m, str) and _is_token(m) for m in methods)
        ):
            return f"{where} ({','.join(sorted({m.upper() for m in methods}))} {path})"
        return f"{where} ({path})"

    def route(self, index: int, raw: object, defaults: Policy) -> RoutePolicy:
        where = self.route_where(index, raw)
        table = self.table(where, None, raw)
        self.check_fields(where, table, _ROUTE_FIELDS, None)
        path = self.path(where, table.get("path"))
        methods = self.methods(where, table["methods"]) if "methods" in table else None
        description = table.get("description", "")
        if not isinstance(description, str):
            self.fail(where, "description", f"expected a string, got {_type_name(description)}")
        exempt = self.exempt(where, table["exempt"]) if "exempt" in table else defaults.exempt
        if exempt.all:
            # Limits on a route that is never limited are a mistake worth reporting.
            for name in _POLICY_FIELDS:
                if name != "exempt" and name in table:
                    self.fail(where, name, "has no effect on a route with exempt = true; remove one of them")
            return RoutePolicy(path, methods, replace(defaults, exempt=exempt), description)
        if "limits" in table:
            limits = self.limits(where, table["limits"])
        elif defaults.limits:
            limits = defaults.limits
        else:
            self.fail(
                where,
                "limits",
                "missing: give limits in the route or in defaults, "
                "or set exempt = true to leave the route unlimited",
            )
        policy = Policy(
            limits=limits,
            algorithm=self.algorithm(where, table["algorithm"])
            if "algorithm" in table
            else defaults.algorithm,
            key=self.key(where, table["key"]) if "key" in table else defaults.key,
            cost=self.cost(where, table["cost"]) if "cost" in table else defaults.cost,
            shadow=self.boolean(where, "shadow", table["shadow"]) if "shadow" in table else defaults.shadow,
            exempt=exempt,
            deduct_when=(
                self.deduct_when(where, table["deduct_when"])
                if "deduct_when" in table
                else defaults.deduct_when
            ),
        )
        self.check_cost(where, "cost" if "cost" in table else "limits", policy)
        return RoutePolicy(path=path, methods=methods, policy=policy, description=description)

    def path(self, where: str, value: object) -> str:
        if value is None:
            self.fail(where, "path", 'missing: every route needs a path template, e.g. path = "/users/{id}"')
        if not isinstance(value, str):
            self.fail(where, "path", f"expected a string, got {_type_name(value)}")
        if not value or any(ch.isspace() for ch in value):
            self.fail(
                where,
                "path",
                f"expected a route template without spaces, e.g. '/users/{{id}}', got {value!r}",
            )
        return value

    def methods(self, where: str, value: object) -> frozenset[str]:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            self.fail(where, "methods", f"expected a method name or a list of them, got {_type_name(value)}")
        if not items:
            self.fail(
                where, "methods", "expected at least one method; leave 'methods' out to match every method"
            )
        out: set[str] = set()
        for item in items:
            if not isinstance(item, str) or not _is_token(item):
                shown = _type_name(item) if not isinstance(item, str) else repr(item)
                self.fail(
                    where, "methods", f"expected HTTP method names such as 'GET' or 'POST', got {shown}"
                )
            out.add(item.upper())
        return frozenset(out)

    # -- policy fields

    def limits(self, where: str, value: object) -> tuple[Limit, ...]:
        items = [value] if isinstance(value, (str, Limit)) else value
        if not isinstance(items, (list, tuple)):
            self.fail(
                where, "limits", f"expected a rate limit string or a list of them, got {_type_name(value)}"
            )
        if not items:
            self.fail(where, "limits", 'expected at least one rate limit, e.g. "100/minute"')
        out: list[Limit] = []
        for index, item in enumerate(items):
            name = "limits" if items is not value else f"limits[{index}]"
            if not isinstance(item, (str, Limit)):
                self.fail(
                    where, name, f"expected a rate limit string such as '100/minute', got {_type_name(item)}"
                )
            try:
                out.extend(parse_limits(item))
            except InvalidLimit as exc:
                self.fail(where, name, str(exc))
        problem = shared_window(out)
        if problem:
            self.fail(where, "limits", problem)
        return tuple(out)

    def algorithm(self, where: str, value: object) -> Algorithm:
        if not isinstance(value, str) or value not in ALGORITHMS:
            shown = repr(value) if isinstance(value, str) else _type_name(value)
            hint = ""
            if isinstance(value, str):
                close = difflib.get_close_matches(value, list(ALGORITHMS), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
            self.fail(
                where,
                "algorithm",
                f"unknown algorithm {shown}{hint}; expected one of {', '.join(ALGORITHMS)}",
            )
        # One of the names just checked.
        return cast(Algorithm, value)

    def key(self, where: str, value: object) -> str:
        expected = f"expected one of {', '.join(KEY_KINDS)}"
        if not isinstance(value, str):
            self.fail(where, "key", f"{expected}, got {_type_name(value)}")
        if value in ("ip", "user", "api_key"):
            return value
        if value.startswith("header:"):
            header = value[len("header:") :]
            if not _is_token(header):
                self.fail(
                    where,
                    "key",
                    f"invalid header name {header!r} in {value!r}: expected a header name "
                    "of letters, digits and -, e.g. 'header:x-api-key'",
                )
            return f"header:{header.lower()}"
        self.fail(where, "key", f"unknown key {value!r}; {expected}")

    def cost(self, where: str, value: object) -> int:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
        self.fail(where, "cost", f"expected a whole number >= 1, got {_type_name(value)}")

    def check_cost(self, where: str, field_name: str, policy: Policy) -> None:
        for limit in policy.limits:
            if policy.cost > limit.capacity:
                self.fail(
                    where,
                    field_name,
                    f"cost {policy.cost} is more than the limit {limit} allows at once, "
                    "so every request would be denied",
                )

    def switch(self, where: str, field_name: str, value: object) -> bool:
        """A boolean, or a string the environment switch reads too (``"off"``, ``"0"``...)."""
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return parse_switch(value, where=field_name)
            except InvalidArgument:
                pass
        self.fail(
            where,
            field_name,
            f"expected true or false (or one of 'on', 'off', 'yes', 'no', '1', '0'), got {_type_name(value)}",
        )

    def boolean(self, where: str, field_name: str, value: object) -> bool:
        if not isinstance(value, bool):
            self.fail(where, field_name, f"expected true or false, got {_type_name(value)}")
        return value

    def exempt(self, where: str, value: object) -> Exemptions:
        if isinstance(value, bool):
            return Exemptions(all=value)
        if not isinstance(value, Mapping):
            self.fail(
                where,
                "exempt",
                f"expected true, false or a table with ips and users, got {_type_name(value)}",
            )
        self.check_fields(where, value, _EXEMPT_FIELDS, "exempt")
        ips: list[IPNetwork] = []
        for index, item in enumerate(self.string_list(where, "exempt.ips", value.get("ips", []))):
            try:
                ips.append(ipaddress.ip_network(item))
            except ValueError as exc:
                # ipaddress says "has host bits set" for 10.0.0.1/8, which is worth passing on.
                reason = f" ({exc})" if "host bits" in str(exc) else ""
                self.fail(
                    where,
                    f"exempt.ips[{index}]",
                    f"invalid IP network {item!r}{reason}: expected an IP address or a CIDR such as "
                    "'10.0.0.0/8' or '2001:db8::/32'",
                )
        users = self.string_list(where, "exempt.users", value.get("users", []))
        for index, user in enumerate(users):
            if not user:
                self.fail(where, f"exempt.users[{index}]", "expected a user id, got an empty string")
        return Exemptions(ips=tuple(ips), users=tuple(users))

    def string_list(self, where: str, field_name: str, value: object) -> tuple[str, ...]:
        if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) for item in value):
            self.fail(where, field_name, f"expected a list of strings, got {_type_name(value)}")
        return tuple(value)

    def deduct_when(self, where: str, value: object) -> tuple[int, ...]:
        if not isinstance(value, Mapping):
            self.fail(
                where,
                "deduct_when",
                f"expected a table such as {{ status = [401, 403] }}, got {_type_name(value)}",
            )
        self.check_fields(where, value, _DEDUCT_FIELDS, "deduct_when")
        codes = value.get("status")
        if codes is None:
            self.fail(
                where,
                "deduct_when.status",
                "missing: expected a list of response status codes, e.g. [401, 403]",
            )
        if _is_int(codes):
            codes = [codes]
        if not isinstance(codes, (list, tuple)) or not codes:
            self.fail(
                where,
                "deduct_when.status",
                f"expected a non-empty list of status codes, got {_type_name(codes)}",
            )
        out: list[int] = []
        for index, code in enumerate(codes):
            if not _is_int(code) or not 100 <= code <= 599:
                self.fail(
                    where,
                    f"deduct_when.status[{index}]",
                    f"expected an HTTP status code from 100 to 599, got {_type_name(code)}",
                )
            if code not in out:
                out.append(code)
        return tuple(sorted(out))
