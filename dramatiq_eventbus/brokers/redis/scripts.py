"""The bus's Lua scripts for Redis, read from ``lua/`` the way Dramatiq reads its own, and
run on a connection each thread keeps.

Each ``lua/<name>.lua`` is the script ``<name>``; the ``lane_*`` scripts and ``fetch`` (which
leases the lane heads it takes) are loaded with ``lane_functions.lua`` in front of them,
since Redis scripts cannot import one another.
Every lane script but FINISH and SWEEP takes a whole batch, so that a batch costs one
command: redis-py would precede a pipeline of script calls with a SCRIPT EXISTS round trip.
"""

from __future__ import annotations

import codecs
import os
import threading
import weakref
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError

_FOLDER = Path(__file__).parent / "lua"
_LANE_FUNCTIONS = "lane_functions"


@cache
def source(name: str) -> str:
    """The text of script ``name``, with the lane functions in front of a lane script."""
    text = (_FOLDER / f"{name}.lua").read_text()
    if (name.startswith("lane_") or name == "fetch") and name != _LANE_FUNCTIONS:
        text = (_FOLDER / f"{_LANE_FUNCTIONS}.lua").read_text() + text
    return text


class ThreadConnections:
    """Each thread's own connection to one Redis, from the shared client's pool, kept by the thread.

    A redis-py client takes a connection from its pool for every command, checks it and
    gives it back, through layers of retry and observability: 40-50 µs of CPU per command
    on the benchmark machine, against 50-60 µs for the send, the wait and the read, and as
    much as everything else publish() does. Here each thread takes its connection once, and
    runs the bus's scripts on it with redis-py's own ``send_command`` and ``read_response``.
    Before each script the connection is checked as the pool checks one it lends (a
    non-blocking read, about 9 µs): one that Redis closed is opened again, so a restarted
    Redis costs no failed command.

    At most half of the pool's ``max_connections`` are kept so, so that Dramatiq's own
    commands and the application's still find connections; the threads past that run the
    scripts on the shared client. A thread's connection goes back to the pool when the
    thread ends, and a forked child takes its own.

    Parameters:
      client(redis.Redis): The shared client; its pool lends the connections.
      keep(bool): False to keep none: every thread uses the shared client.
    """

    def __init__(self, client: redis.Redis, *, keep: bool = True) -> None:
        self.shared = client
        self._pool = client.connection_pool
        self._local = threading.local()
        # Reentrant: a garbage collection inside the lock may run a finalizer that gives back.
        self._lock = threading.RLock()
        self._kept = 0
        self._pid = os.getpid()
        #: How many threads may keep a connection at once.
        self.limit = int(getattr(self._pool, "max_connections", 0)) // 2 if keep else 0
        settings = getattr(self._pool, "connection_kwargs", {})
        # packed() writes strs as UTF-8, strictly: redis-py's default, which a client may change.
        self._pack_here = (
            codecs.lookup(settings.get("encoding", "utf-8")).name == "utf-8"
            and settings.get("encoding_errors", "strict") == "strict"
        )

    def current(self) -> Any:
        """The calling thread's connection, checked; None past the limit."""
        local = self._local
        kept: _Kept | None = getattr(local, "kept", None)
        if kept is None or kept.pid != os.getpid():
            kept = local.kept = self._take()
        connection = kept.connection
        if connection is not None:
            try:
                if connection.can_read():
                    raise redis.ConnectionError("the connection holds data no command asked for")
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                connection.disconnect()  # the next command connects again
        return connection

    def run(self, script: Script, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run ``script`` on the calling thread's connection; its reply, or redis-py's error.

        A connection that fails is closed by redis-py, and opened again by the next command.
        """
        connection = self.current()
        if connection is None:
            return script(keys=keys, args=args, client=self.shared)
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        try:
            data = packed(command) if self._pack_here else None
            if data is None:
                connection.send_command(*command)
            else:
                connection.send_packed_command([data])
            return connection.read_response()
        except NoScriptError:
            # Redis lost its scripts (restarted, flushed): load it again, as redis-py's Script does.
            connection.send_command("SCRIPT", "LOAD", script.script)
            connection.read_response()
            connection.send_command(*command)
            return connection.read_response()

    @property
    def kept(self) -> int:
        """How many threads keep a connection now."""
        return self._kept

    def _take(self) -> _Kept:
        pid = os.getpid()
        if pid != self._pid:
            # A forked child: none of the parent's threads runs here, and its lock may have been held.
            self._lock, self._kept, self._pid = threading.RLock(), 0, pid
        with self._lock:
            full = self._kept >= self.limit
            if not full:
                self._kept += 1
        if full:
            return _Kept(None, pid)
        try:
            kept = _Kept(self._pool.get_connection(), pid)
        except BaseException:
            self._given_back(pid, None)
            raise
        # Runs when the thread ends and its local state goes, or when these connections go
        # (their per-thread state goes with them). A weak reference: a strong one from the
        # finalizer would keep them, and every thread's connection, for good.
        weakref.finalize(kept, _give_back, weakref.ref(self), pid, kept.connection)
        return kept

    def _given_back(self, pid: int, connection: Any) -> None:
        with self._lock:
            if pid != self._pid:
                return  # a connection of the parent process, dropped in a forked child: not the pool's
            self._kept -= 1
        if connection is not None:
            self._pool.release(connection)


def packed(command: Sequence[Any]) -> bytes | None:
    """``command`` in the Redis protocol, as one piece; None if it holds anything but bytes, strs
    (written as UTF-8) and ints, which redis-py's packer is left to write.

    redis-py's own packer took 22 µs for a fan-out of ten (40 arguments, measured), this 6.5; and
    it cuts a command longer than 6,000 bytes into pieces, each its own ``sendall``.
    """
    parts = [b"*%d\r\n" % len(command)]
    for argument in command:
        kind = type(argument)
        if kind is bytes:
            data = argument
        elif kind is str:
            data = argument.encode()
        elif kind is int:
            data = b"%d" % argument
        elif isinstance(argument, str):
            # The ids consumers read are a subclass (ReceivedId). Encoded as redis-py encodes one.
            data = argument.encode("utf-8", "strict")
        else:
            return None
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _give_back(owner: weakref.ref[ThreadConnections], pid: int, connection: Any) -> None:
    """Give a thread's connection back to its pool; closed, when its ThreadConnections went."""
    connections = owner()
    if connections is not None:
        connections._given_back(pid, connection)
    elif connection is not None and pid == os.getpid():
        connection.disconnect()


class _Kept:
    """A thread's connection (None past the limit), and the process that took it."""

    __slots__ = ("__weakref__", "connection", "pid")

    def __init__(self, connection: Any, pid: int) -> None:
        self.connection = connection
        self.pid = pid


class BusScript:
    """One of the bus's scripts, run on the calling thread's connection (see :class:`ThreadConnections`).

    Called as redis-py's ``Script``: ``script(keys=[...], args=[...])``. A Redis that lost
    its scripts (restarted, flushed) is given the script again, as redis-py does.
    """

    def __init__(self, connections: ThreadConnections, name: str) -> None:
        self.name = name
        self.connections = connections
        self.script = connections.shared.register_script(source(name))

    def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        return self.connections.run(self.script, keys, args)


def register(connections: ThreadConnections, name: str) -> BusScript:
    """Script ``name`` on ``connections``' Redis; it is loaded into Redis the first time it runs."""
    return BusScript(connections, name)
