"""The bus's Lua scripts for Redis, read from ``lua/`` the way Dramatiq reads its own.

Each ``lua/<name>.lua`` is the script ``<name>``; the ``lane_*`` scripts and ``fetch`` (which
leases the lane heads it takes) are loaded with ``lane_functions.lua`` in front of them,
since Redis scripts cannot import one another.
Every lane script but FINISH and SWEEP takes a whole batch, so that a batch costs one
command: redis-py would precede a pipeline of script calls with a SCRIPT EXISTS round trip.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import redis
from redis.commands.core import Script

_FOLDER = Path(__file__).parent / "lua"
_LANE_FUNCTIONS = "lane_functions"


@cache
def source(name: str) -> str:
    """The text of script ``name``, with the lane functions in front of a lane script."""
    text = (_FOLDER / f"{name}.lua").read_text()
    if (name.startswith("lane_") or name == "fetch") and name != _LANE_FUNCTIONS:
        text = (_FOLDER / f"{_LANE_FUNCTIONS}.lua").read_text() + text
    return text


def register(client: redis.Redis, name: str) -> Script:
    """Script ``name`` on ``client``; redis-py loads it into Redis the first time it runs."""
    return client.register_script(source(name))
