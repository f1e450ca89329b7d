"""RFC 9457 problem details for refused requests.

A per-client denial is a 429 of type ``quota-exceeded``; the global overload
limit answers 503 ``temporary-reduced-capacity``. Both problem types are the
ones registered by draft-ietf-httpapi-ratelimit-headers, with its
``violated-policies`` extension member naming the policies that tripped.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

CONTENT_TYPE = "application/problem+json"
QUOTA_EXCEEDED = "https://iana.org/assignments/http-problem-types#quota-exceeded"
TEMPORARY_REDUCED_CAPACITY = "https://iana.org/assignments/http-problem-types#temporary-reduced-capacity"


@dataclass(frozen=True)
class Problem:
    """A problem details object; :meth:`body` is the JSON to send."""

    status: int
    type: str
    title: str
    detail: str
    violated_policies: tuple[str, ...] = ()
    instance: str | None = None

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "type": self.type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.instance is not None:
            data["instance"] = self.instance
        if self.violated_policies:
            data["violated-policies"] = list(self.violated_policies)
        return data

    def body(self) -> bytes:
        return json.dumps(self.as_dict(), separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _wait(retry_after: int) -> str:
    return f"{retry_after} second{'s' if retry_after != 1 else ''}"


def too_many_requests(
    violated_policies: Sequence[str], retry_after: int, *, instance: str | None = None
) -> Problem:
    """The 429 problem: this client went over one or more of its quotas."""
    return Problem(
        status=429,
        type=QUOTA_EXCEEDED,
        title="Too Many Requests",
        detail=f"Rate limit exceeded; retry in {_wait(retry_after)}.",
        violated_policies=tuple(violated_policies),
        instance=instance,
    )


def service_unavailable(retry_after: int, *, instance: str | None = None) -> Problem:
    """The 503 problem: the server sheds load, whoever the client is."""
    return Problem(
        status=503,
        type=TEMPORARY_REDUCED_CAPACITY,
        title="Service Unavailable",
        detail=f"The server is over its request capacity; retry in {_wait(retry_after)}.",
        instance=instance,
    )
