"""The bus's Lua scripts for Redis, read from ``lua/`` the way Dramatiq reads its own, and
run on a connection each thread keeps.

Each ``lua/<name>.lua`` is the script ``<name>``; the ``lane_*`` scripts and ``fetch`` (which
leases the lane heads it takes) are loaded with ``lane_functions.lua`` in front of them,
since Redis scripts cannot import one another.
Every lane script but FINISH and SWEEP takes a whole batch, so that a batch costs one
command: redis-py would precede a pipeline of script calls with a SCRIPT EXISTS round trip.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import redis

_FOLDER = Path(__file__).parent / "lua"
_LANE_FUNCTIONS = "lane_functions"


@cache
def source(name: str) -> str:
    """The text of script ``name``, with the lane functions in front of a lane script."""
    text = (_FOLDER / f"{name}.lua").read_text()
    if (name.startswith("lane_") or name == "fetch") and name != _LANE_FUNCTIONS:
        text = (_FOLDER / f"{_LANE_FUNCTIONS}.lua").read_text() + text
    return text


class ThreadClients:
    """Each thread's own client of one Redis, keeping one connection of the shared client's pool.

    redis-py takes a connection from its pool for every command, checks its health and
    gives it back: 40-50 µs of CPU per command on the benchmark machine, against 50-60 µs
    for the rest of the call (send, wait, read), and as much as everything else publish()
    does. A thread's own client (redis-py's ``single_connection_client``) takes its
    connection once; before each script it is checked as the pool checks a connection it
    lends (a non-blocking read: one Redis closed is opened again), 10-15 µs of the 40-50.

    At most half of the pool's ``max_connections`` are kept so, so that Dramatiq's own
    commands and the application's still find connections; the threads past that share the
    pooled client. A thread's connection goes back to the pool when the thread ends, and a
    forked child makes its own.

    Parameters:
      client(redis.Redis): The shared client; its pool lends the connections.
      keep(bool): False to keep none: every thread uses the shared client.
    """

    def __init__(self, client: redis.Redis, *, keep: bool = True) -> None:
        self.shared = client
        self._local = threading.local()
        self._lock = threading.Lock()
        self._kept = 0
        self._pid = os.getpid()
        #: How many threads may keep a connection at once.
        self.limit = int(getattr(client.connection_pool, "max_connections", 0)) // 2 if keep else 0

    def current(self) -> redis.Redis:
        """The calling thread's client (the shared one past the limit), its connection checked
        as the pool checks one it lends: one that Redis closed, or that holds unread data, is
        closed here and opened again by the next command."""
        local = self._local
        client: redis.Redis | None = getattr(local, "client", None)
        if client is None or local.pid != os.getpid():
            client = local.client = self._new_client()
            local.pid = os.getpid()
        connection = client.connection
        if connection is not None:
            try:
                if connection.can_read():
                    raise redis.ConnectionError("the connection holds data no command asked for")
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                connection.disconnect()  # type: ignore[no-untyped-call]
        return client

    @property
    def kept(self) -> int:
        """How many threads keep a connection now."""
        return self._kept

    def _new_client(self) -> redis.Redis:
        pid = os.getpid()
        if pid != self._pid:
            # A forked child: none of the parent's threads runs here, and its lock may have been held.
            self._lock, self._kept, self._pid = threading.Lock(), 0, pid
        with self._lock:
            if self._kept >= self.limit:
                return self.shared
            self._kept += 1
        try:
            client = redis.Redis(connection_pool=self.shared.connection_pool, single_connection_client=True)
        except BaseException:
            self._given_back(pid)
            raise
        # Runs when the thread ends and its client goes (which gives its connection back to the pool).
        weakref.finalize(client, self._given_back, pid)
        return client

    def _given_back(self, pid: int) -> None:
        with self._lock:
            if pid == self._pid:  # not a client of the parent process, dropped in a forked child
                self._kept -= 1


class BusScript:
    """One of the bus's scripts, run on the calling thread's client (see :class:`ThreadClients`).

    Called as redis-py's ``Script``: ``script(keys=[...], args=[...])``. A Redis that lost
    its scripts (restarted, flushed) is given the script again, as redis-py does.
    """

    def __init__(self, clients: ThreadClients, name: str) -> None:
        self.name = name
        self.clients = clients
        self.script = clients.shared.register_script(source(name))

    def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        return self.script(keys=keys, args=args, client=self.clients.current())


def register(clients: ThreadClients, name: str) -> BusScript:
    """Script ``name`` on ``clients``' Redis; it is loaded into Redis the first time it runs."""
    return BusScript(clients, name)
