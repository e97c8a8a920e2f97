"""Every private part of Dramatiq's RedisBroker the bus relies on, and nowhere else.

Dramatiq keeps its Redis layout and the calling convention of its ``dispatch.lua``
script private. The bus mirrors both (its fetch, batch enqueue, ack and lane scripts
write the same keys), so this module names each such dependency once, and
:func:`contract_problems` says which of them no longer holds for the installed
Dramatiq. ``tests/brokers/test_upstream_contract.py`` runs it; ``make test-upstream``
runs it against the newest releases.

Tested with Dramatiq 2.2.1.
"""

from __future__ import annotations

import hashlib
import inspect
import re
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import dramatiq.brokers.redis
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis

from .. import contract

#: The ``dispatch.lua`` this package mirrors, by SHA-256: its key layout (see :mod:`.keys`),
#: its argument order (:data:`DISPATCH_ARGUMENTS`), and that a command it does not know only
#: heartbeats and, when asked, runs maintenance (:func:`heartbeat_and_recover`).
DISPATCH_LUA_SHA256 = "ba4d872e4fb204ebc3f73ca4719265a9946d70e847856c125314f01a8c90540c"

#: The leading arguments of every ``dispatch.lua`` call, in the order its header declares.
DISPATCH_ARGUMENTS = (
    "command",
    "timestamp",
    "queue_name",
    "worker_id",
    "heartbeat_timeout",
    "dead_message_ttl",
    "do_maintenance",
    "max_unpack_size",
)

#: A command that no branch of dispatch.lua handles: the call only heartbeats and, with
#: maintenance forced on, moves dead workers' messages of one queue back to it.
_NO_COMMAND = "eventbus_tend"

#: Public attributes of a RedisBroker that the bus reads; their absence is a contract break too.
BROKER_ATTRIBUTES = ("client", "namespace", "broker_id", "heartbeat_timeout", "dead_message_ttl", "scripts")

#: The generated ``do_<command>`` methods the bus calls, each a dispatch.lua command.
DISPATCH_COMMANDS = ("ack", "nack", "requeue")


def dispatch_lua_path() -> Path:
    """Where the installed Dramatiq keeps its ``dispatch.lua``."""
    return Path(dramatiq.brokers.redis.__file__).parent / "redis" / "dispatch.lua"


def max_unpack_size(broker: RedisBroker) -> int:
    """How many ids one Lua call may unpack, as Dramatiq bounds its own fetches."""
    return int(broker._max_unpack_size())  # type: ignore[no-untyped-call]


def ack(broker: RedisBroker, queue_name: str, redis_id: str | bytes) -> None:
    """Dramatiq's ack: forget the delivery ``redis_id`` fetched by this worker from ``queue_name``."""
    broker.do_ack(queue_name, redis_id)


def nack(broker: RedisBroker, queue_name: str, redis_id: str | bytes) -> None:
    """Dramatiq's nack: move the delivery ``redis_id`` to ``queue_name``'s dead-letter queue."""
    broker.do_nack(queue_name, redis_id)


def requeue(broker: RedisBroker, queue_name: str, redis_ids: Sequence[str | bytes]) -> None:
    """Dramatiq's requeue: put fetched deliveries still in this worker's ack set back on the queue."""
    if redis_ids:
        broker.do_requeue(queue_name, *redis_ids)


def heartbeat_and_recover(broker: RedisBroker, queue_name: str) -> None:
    """Heartbeat, and move the messages of workers silent for ``heartbeat_timeout`` back to ``queue_name``.

    Dramatiq runs this maintenance on about one call in a thousand; the bus's consumers run
    it on a clock. It calls ``dispatch.lua`` with a command it does not handle and
    maintenance forced on, in the argument order of :data:`DISPATCH_ARGUMENTS`.
    """
    values = {
        "command": _NO_COMMAND,
        "timestamp": current_millis(),
        "queue_name": queue_name,
        "worker_id": broker.broker_id,
        "heartbeat_timeout": broker.heartbeat_timeout,
        "dead_message_ttl": broker.dead_message_ttl,
        "do_maintenance": 1,
        "max_unpack_size": max_unpack_size(broker),
    }
    broker.scripts["dispatch"](keys=[broker.namespace], args=[values[name] for name in DISPATCH_ARGUMENTS])


def blocking_client(broker: RedisBroker, socket_timeout: float, name: str) -> redis.Redis:
    """A client of the broker's Redis, with one connection of its own, for a blocking command.

    A blocking command holds its connection for the whole wait: it must not take one of the
    broker's client (which its other threads share), and its socket must not time out before
    Redis answers. This copies the connection settings of the broker's client (redis-py's
    ``ConnectionPool.connection_class`` and ``connection_kwargs``) with a socket timeout of at
    least ``socket_timeout`` seconds (none set, it is ``socket_timeout``: a connection that
    died silently must not block a consumer forever), under the client name ``name`` (what
    ``CLIENT LIST`` shows).
    """
    pool = broker.client.connection_pool
    kwargs = dict(pool.connection_kwargs)
    current = kwargs.get("socket_timeout")
    if current is None or current < socket_timeout:
        kwargs["socket_timeout"] = socket_timeout
    kwargs["client_name"] = name
    own = redis.ConnectionPool(connection_class=pool.connection_class, max_connections=1, **kwargs)
    return redis.Redis(connection_pool=own)


def contract_problems(source: bytes | None = None) -> list[str]:
    """What of this module's assumptions the installed Dramatiq breaks; empty when all hold.

    Parameters:
      source(bytes | None): The ``dispatch.lua`` to check; the installed one if None.
    """
    problems = []
    if source is None:
        source = dispatch_lua_path().read_bytes()
    digest = hashlib.sha256(source).hexdigest()
    if digest != DISPATCH_LUA_SHA256:
        problems.append(
            f"Dramatiq's dispatch.lua changed (sha256 {digest}, expected {DISPATCH_LUA_SHA256}): read it against "
            f"dramatiq_eventbus/brokers/redis/ (keys.py, upstream.py, lua/) and update DISPATCH_LUA_SHA256"
        )
    # The script's own reading of its arguments (``local command = ARGV[1]``...), not its comment.
    read = {int(index): name.decode() for name, index in re.findall(rb"local (\w+) = ARGV\[(\d+)\]", source)}
    names = tuple(read.get(position, "?") for position in range(1, len(DISPATCH_ARGUMENTS) + 1))
    if names != DISPATCH_ARGUMENTS:
        problems.append(
            f"dispatch.lua reads its arguments as {list(names)}, not {list(DISPATCH_ARGUMENTS)}: "
            f"heartbeat_and_recover() would pass them in the wrong order"
        )
    if not callable(getattr(RedisBroker, "_max_unpack_size", None)):
        problems.append("RedisBroker._max_unpack_size() is gone: max_unpack_size() needs another source")
    signature = inspect.signature(RedisBroker.__init__)
    for name in ("url", "namespace", "heartbeat_timeout", "dead_message_ttl"):
        if name not in signature.parameters:
            problems.append(f"RedisBroker() no longer takes {name}=")
    pool = redis.ConnectionPool()
    if not (isinstance(getattr(pool, "connection_kwargs", None), dict) and hasattr(pool, "connection_class")):
        problems.append(
            "redis-py's ConnectionPool has no connection_kwargs or connection_class: blocking_client() breaks"
        )
    if "__getattr__" not in vars(RedisBroker):
        problems.append("RedisBroker no longer generates do_<command> methods: ack(), nack() and requeue() break")
    return problems


@cache
def warn_if_broken() -> None:
    """Log once, at the first broker made, what of the contract the installed Dramatiq breaks."""
    contract.warn_if_broken(__name__, ("dramatiq",), contract_problems(), "dramatiq~=2.2.1")


def check_broker(broker: Any) -> list[str]:
    """What of :data:`BROKER_ATTRIBUTES` a live broker lacks."""
    return [f"RedisBroker has no attribute {name!r}" for name in BROKER_ATTRIBUTES if not hasattr(broker, name)]
