"""Route templates the way Starlette's router finds them.

The first route whose ``matches(scope)`` is a full match wins, else the first
partial one (a method the route does not allow: it still names the route).
Mounts and hosts are searched recursively and their prefixes joined, so a
request to ``/api/users/42`` resolves to ``/api/users/{id}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.routing import BaseRoute, Host, Match, Mount, compile_path
from starlette.types import Scope

from ._fastapi_internals import included_matcher, template_of

# (template or None, the leaf route or None): the leaf has .endpoint, and .dependant in FastAPI.
Resolved = tuple[str | None, Any]


def resolve(routes: Sequence[BaseRoute], scope: Scope) -> Resolved:
    """The template and route that would serve ``scope``; ``(None, None)`` when none would."""
    partial: tuple[BaseRoute, Scope] | None = None
    for route in routes:
        match, child = route.matches(scope)
        if match is Match.FULL:
            return _leaf(route, scope, child)
        if match is Match.PARTIAL and partial is None:
            partial = (route, child)
    if partial is not None:
        return _leaf(partial[0], scope, partial[1])
    return None, None


def _leaf(route: BaseRoute, scope: Scope, child: Scope) -> Resolved:
    select = None if isinstance(route, (Mount, Host)) else included_matcher(route)
    if select is not None:
        return _included(select, scope)
    if isinstance(route, (Mount, Host)):
        prefix = compile_path(route.path)[1] if isinstance(route, Mount) else ""
        inner = route.routes
        if inner:
            template, leaf = resolve(inner, {**scope, **child})
            if template is not None:
                return prefix + template, leaf
        # A mounted app that is not a router (static files, another framework).
        return prefix + "/{path}", route
    return getattr(route, "path_format", None), route


def _included(select: Any, scope: Scope) -> Resolved:
    """A router included into a FastAPI app that routes lazily (FastAPI 0.120 and later).

    Its own matcher picks the route and an "effective route context" that carries the
    template with the router's prefix, the endpoint and the dependencies, include-time
    ones too.
    """
    match, child, route, context = select(scope)
    if match is Match.NONE:
        return None, None
    if context is not None:
        return template_of(context), context
    if route is not None:
        return _leaf(route, {**scope, **child}, {})
    return None, None


def uses_hosts(routes: Sequence[BaseRoute]) -> bool:
    """Whether any route depends on the Host header, so that a path alone does not decide."""
    for route in routes:
        if isinstance(route, Host):
            return True
        if isinstance(route, Mount) and uses_hosts(route.routes):
            return True
    return False
