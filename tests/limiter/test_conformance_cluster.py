"""The conformance suite on a real three-primary Redis Cluster, multi-slot ``hit_many`` included."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from support import ManualClock
from test_conformance import *  # noqa: F403 - the suite, run again here

# The redis_cluster fixture.
pytest_plugins = ["cluster_fixtures"]


@pytest.fixture(params=["sync", "async"])
def limiter(
    request: pytest.FixtureRequest,
    make_cluster_limiter: Callable[[str, ManualClock], Any],
    clock: ManualClock,
) -> Iterator[Any]:
    made = make_cluster_limiter(request.param, clock)
    yield made
    if request.param == "async":
        made.shutdown()
    else:
        made.close()
