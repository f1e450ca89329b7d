"""The one script loader: Lua package files, loaded once, run by SHA.

A script is the shared head (``backends/lua/common.lua``) followed by its
parts, read from the ``lua/`` folder of a package (the engine's, or the
stores'). It runs as ``EVALSHA``; when the server answers NOSCRIPT (after
``SCRIPT FLUSH``, a restart or a failover) it is loaded and run again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from typing import Any

from redis.exceptions import NoScriptError

_HOME = "bisman_ratelimit.backends"


class Script:
    """A Lua script assembled from package files: the shared head, then ``parts``.

    ``parts`` are read from ``package``'s ``lua/`` folder. ``bind`` adds
    ``local check = <name>`` before the last part, which is how
    ``single.lua`` is pointed at one algorithm.
    """

    def __init__(self, *parts: str, bind: str | None = None, package: str = _HOME) -> None:
        head = resources.files(_HOME).joinpath("lua/common.lua").read_text()
        folder = resources.files(package).joinpath("lua")
        texts = [head, *(folder.joinpath(name).read_text() for name in parts)]
        if bind is not None:
            texts.insert(-1, f"local check = {bind}\n")
        self.name = parts[-1]
        self.source = "".join(texts)
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    def __repr__(self) -> str:
        return f"<Script {self.name} {self.sha[:8]}>"

    def run(
        self,
        call: Callable[..., Any],
        load: Callable[[str], object],
        keys: Sequence[str],
        args: Sequence[Any],
    ) -> Any:
        """``EVALSHA`` through ``call`` (a client's ``execute_command``); ``load`` it on NOSCRIPT."""
        try:
            return call("EVALSHA", self.sha, len(keys), *keys, *args)
        except NoScriptError:
            load(self.source)
            return call("EVALSHA", self.sha, len(keys), *keys, *args)

    async def arun(
        self,
        call: Callable[..., Awaitable[Any]],
        load: Callable[[str], Awaitable[object]],
        keys: Sequence[str],
        args: Sequence[Any],
    ) -> Any:
        """:meth:`run` on an asyncio client."""
        try:
            return await call("EVALSHA", self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await load(self.source)
            return await call("EVALSHA", self.sha, len(keys), *keys, *args)
