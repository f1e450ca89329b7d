"""FastAPI's private router matcher, read here and nowhere else in the plugin.

Since 0.120 FastAPI includes routers lazily: ``app.include_router()`` adds one
route standing for the whole router, whose private ``_match(scope)`` picks the
route inside along with an "effective route context" that carries the template
with the router's prefix, the endpoint and the dependencies. Earlier releases
copy every route of the router into the app, and there is nothing to read.

Which of the two the installed FastAPI does, and whether ``_match`` answers as
expected, is checked once, on first use, with a router of its own. When a
release has changed ``_match``, the route contexts that FastAPI lists publicly
(``fastapi.routing.iter_route_contexts``) are matched one by one instead: the
same route, found more slowly. One debug line on ``bisman_ratelimit.starlette``
says so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal

from starlette.routing import BaseRoute, Match
from starlette.types import Scope

logger = logging.getLogger("bisman_ratelimit.starlette")

# How included routers are matched: "eager" (FastAPI copies their routes into
# the app, or is not installed), "private" (their _match), "public" (the route
# contexts FastAPI lists).
RouterMatch = Literal["eager", "private", "public"]
# What _match gives: the match, the child scope, the route, its effective context.
Selected = tuple[Match, Scope, Any, Any]

_PROBE_PATH = "/bisman-probe/{item}"


class Checks:
    """The way included routers are matched (``None``: not checked yet)."""

    __slots__ = ("router",)

    def __init__(self) -> None:
        self.router: RouterMatch | None = None


CHECKS = Checks()


def _probe() -> RouterMatch:
    try:
        from fastapi import APIRouter, FastAPI
    except ImportError:
        return "eager"

    async def endpoint(item: str) -> None:  # pragma: no cover - never called
        del item

    router = APIRouter(prefix=_PROBE_PATH.rsplit("/", 1)[0])
    router.add_api_route("/{item}", endpoint, methods=["GET"])
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.include_router(router)
    routes = app.router.routes
    if any(getattr(route, "path_format", None) == _PROBE_PATH for route in routes):
        return "eager"
    scope: Scope = {
        "type": "http",
        "method": "GET",
        "path": _PROBE_PATH.replace("{item}", "x"),
        "root_path": "",
        "query_string": b"",
        "headers": [],
    }
    try:
        match, _child, _route, context = routes[-1]._match(scope)  # type: ignore[attr-defined]
        template = (
            getattr(getattr(context, "starlette_route", None), "path_format", None) or context.path_format
        )
        if match is Match.FULL and template == _PROBE_PATH and context.endpoint is endpoint:
            return "private"
    except Exception:
        pass
    logger.debug("FastAPI's included routers have no _match as expected: their route contexts serve instead")
    return "public"


def template_of(context: Any) -> str | None:
    """The template, router prefix included, of the route an effective route context stands for."""
    template: str | None = getattr(getattr(context, "starlette_route", None), "path_format", None)
    return template or context.path_format


def included_matcher(route: BaseRoute) -> Callable[[Scope], Selected] | None:
    """``route``'s matcher if it is a router FastAPI included lazily, else ``None``."""
    how = CHECKS.router
    if how is None:
        how = CHECKS.router = _probe()
    if how == "eager":
        return None
    if how == "private":
        select: Callable[[Scope], Selected] | None = getattr(route, "_match", None)
        return select
    return _by_contexts(route)


def _by_contexts(route: BaseRoute) -> Callable[[Scope], Selected] | None:
    """A matcher over the route contexts FastAPI lists for ``route``: the first full match, else
    the first partial one, as ``_match`` does."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:
        return None
    contexts = list(iter_route_contexts([route]))
    if len(contexts) == 1 and contexts[0].original_route is route:
        return None  # a route of its own, not a router

    def select(scope: Scope) -> Selected:
        partial: Selected | None = None
        for context in contexts:
            match, child = context.matches(scope)
            if match is Match.FULL:
                return match, child, context.original_route, context
            if match is Match.PARTIAL and partial is None:
                partial = (match, child, context.original_route, context)
        return partial if partial is not None else (Match.NONE, {}, None, None)

    return select
