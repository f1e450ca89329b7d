"""Route templates as frameworks spell them, and as a limits file may name them; the
methods whose limits a request falls under.

Django and Flask write path parameters as ``<int:id>``, the ASGI frameworks
as ``{id}``. A limits file written for one app is read by the others, so a
route is looked up under each spelling.

A HEAD request is a GET without the body, answered by the same view in every
framework: limits written for GET (a file entry, a decorator's ``methods``)
cover it, and count it on the same counters.
"""

from __future__ import annotations

import re
from collections.abc import Collection

# <int:id> -> {id}: the spelling of route templates in files shared with ASGI apps.
_CONVERTER = re.compile(r"<(?:[^<>:]+:)?([^<>:]+)>")


def template_forms(route: str) -> tuple[str, ...]:
    """The ways a limits file may name a route, most exact first.

    ``users/<int:id>/`` is also found as ``/users/<int:id>/`` and as
    ``/users/{id}``, so one file can serve a Django or Flask app and an ASGI app.
    """
    forms = [route]
    if not route.startswith("/"):
        forms.append("/" + route)
    plain = route.removeprefix("^").removesuffix("$")
    if not any(char in plain for char in "^$()[]?*+\\|"):
        braced = "/" + _CONVERTER.sub(r"{\1}", plain).lstrip("/")
        if len(braced) > 1:
            braced = braced.rstrip("/")
        forms.append(braced)
    return tuple(dict.fromkeys(forms))


def limited_as(method: str) -> tuple[str, ...]:
    """The methods whose limits a ``method`` request falls under, most specific first."""
    method = method.upper()
    return ("HEAD", "GET") if method == "HEAD" else (method,)


def covers(methods: Collection[str] | None, method: str) -> bool:
    """Whether limits written for ``methods`` (None: every method) apply to a ``method`` request."""
    return methods is None or any(name in methods for name in limited_as(method))
