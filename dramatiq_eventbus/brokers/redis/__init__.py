"""Everything the bus knows of Redis: its broker, consumer, key layout, Lua scripts and lanes.

Dramatiq's private names are reached through :mod:`.upstream` only.
"""

import redis

from .broker import EventBusRedisBroker, enqueue_many, keep_dead_letter, with_redis_id
from .consumer import FetchHook
from .dead_letters import RedisDeadLetters
from .keys import LaneKeys, RedisKeys
from .lanes import RedisLaneStore
from .scripts import ThreadConnections

#: What redis-py raises when Redis fails or cannot be reached.
CLIENT_ERRORS: tuple[type[Exception], ...] = (redis.RedisError,)

__all__ = [
    "CLIENT_ERRORS",
    "EventBusRedisBroker",
    "FetchHook",
    "LaneKeys",
    "RedisDeadLetters",
    "RedisKeys",
    "RedisLaneStore",
    "ThreadConnections",
    "enqueue_many",
    "keep_dead_letter",
    "with_redis_id",
]
