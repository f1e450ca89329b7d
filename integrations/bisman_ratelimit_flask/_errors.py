"""``RateLimitExceeded``: what a refused request raises, as in Flask-Limiter.

It is werkzeug's ``TooManyRequests``, so ``@app.errorhandler(429)`` handlers
written for Flask-Limiter receive it. Without such a handler the answer is
the problem+json body of the other plugins; the rate-limit header fields are
added to whichever response is sent.
"""

from __future__ import annotations

from flask.wrappers import Response
from werkzeug.exceptions import TooManyRequests

from bisman_ratelimit.core import Limit
from bisman_ratelimit.web import Verdict

_UNITS = ((86400, "day"), (3600, "hour"), (60, "minute"), (1, "second"))


def limit_text(limit: Limit) -> str:
    """A limit in Flask-Limiter's words, e.g. ``1 per 1 day`` (its default description)."""
    period = limit.period
    for seconds, unit in _UNITS:
        if period >= seconds and period % seconds == 0:
            count = int(period // seconds)
            return f"{limit.amount} per {count} {unit}{'s' if count != 1 else ''}"
    return f"{limit.amount} per {period:g} seconds"


class RateLimitExceeded(TooManyRequests):
    """A request over one of its limits.

    ``limit`` is the limit it went over, ``verdict`` the whole decision
    (headers included); ``description`` is the limit's ``error_message`` or
    the limit in words.
    """

    def __init__(
        self, limit: Limit, verdict: Verdict, *, description: str, response: Response | None = None
    ) -> None:
        self.limit = limit
        self.verdict = verdict
        super().__init__(description=description, response=response)
