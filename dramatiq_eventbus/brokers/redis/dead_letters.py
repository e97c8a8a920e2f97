"""A Redis broker's dead-letter queues, read and emptied in place.

Dramatiq keeps a queue's dead letters in two keys (see :class:`.keys.RedisKeys`): a ZSET of
their Redis ids scored by when each was dead-lettered (ms), and a HASH of their bodies.
Reading walks the ZSET oldest first, a chunk at a time, and fetches only the bodies no larger
than the caller reads; removing takes an id out of both keys in one MULTI/EXEC, so that no
reader ever sees an id without its body because of it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import Any

import redis

from .keys import RedisKeys

#: How many dead letters one round trip reads.
CHUNK = 100


class RedisDeadLetters:
    """The dead letters of a Redis broker's queues.

    Parameters:
      client(redis.Redis): The broker's Redis.
      keys(RedisKeys): The broker's keys.
    """

    #: Dead letters here carry their last attempt's failure: the bus writes the failed message
    #: over its stored dead letter (:func:`.broker.keep_dead_letter`).
    keeps_last_failure = True

    def __init__(self, client: redis.Redis, keys: RedisKeys) -> None:
        self.client = client
        self.keys = keys

    def read(
        self, queue_name: str, *, scan: int, max_bytes: int
    ) -> Iterator[tuple[str, bytes | None, int, float | None]]:
        """Up to ``scan`` of ``queue_name``'s dead letters, oldest first, left in place.

        Each is ``(Redis id, body, size, dead-lettered at)``: the id as latin-1 text (any bytes
        survive the round trip to :meth:`remove`), the body None when it is missing or larger
        than ``max_bytes`` (its size says which), the time in Unix seconds.
        """
        ids_key, bodies_key = self.keys.dead_letters(queue_name), self.keys.dead_letter_messages(queue_name)
        for start in range(0, scan, CHUNK):
            found: Any = self.client.zrange(ids_key, start, min(start + CHUNK, scan) - 1, withscores=True)
            entries: list[tuple[Any, float]] = list(found)
            if not entries:
                return
            with self.client.pipeline(transaction=False) as pipe:
                for redis_id, _ in entries:
                    pipe.hstrlen(bodies_key, redis_id)
                sizes: list[int] = pipe.execute()
            wanted = [redis_id for (redis_id, _), size in zip(entries, sizes, strict=True) if 0 < size <= max_bytes]
            bodies: dict[Any, Any] = (
                dict(zip(wanted, self.client.hmget(bodies_key, wanted), strict=True)) if wanted else {}
            )
            for (redis_id, score), size in zip(entries, sizes, strict=True):
                yield _text(redis_id), _bytes(bodies.get(redis_id)), size, score / 1000
            if len(entries) < CHUNK:
                return

    def remove(self, queue_name: str, keys: Collection[str], *, scan: int) -> int:
        """Remove the dead letters of ``queue_name`` with these Redis ids (as :meth:`read` gave
        them); return how many were there. ``scan`` is not needed here: Redis finds them by id."""
        if not keys:
            return 0
        ids = [key.encode("latin-1") for key in keys]
        with self.client.pipeline(transaction=True) as pipe:
            pipe.zrem(self.keys.dead_letters(queue_name), *ids)
            pipe.hdel(self.keys.dead_letter_messages(queue_name), *ids)
            removed, _ = pipe.execute()
        return int(removed)


def _text(value: bytes | str) -> str:
    # A client made with decode_responses=True hands back str; any bytes survive latin-1 both ways.
    return value if isinstance(value, str) else value.decode("latin-1")


def _bytes(value: bytes | str | None) -> bytes | None:
    return value.encode("utf-8") if isinstance(value, str) else value
