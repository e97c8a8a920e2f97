"""Lanes in the test Redis under a prefix of their own, for tests that drive the lane scripts."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from dramatiq_eventbus.brokers import RedisLaneStore

from .servers import require_redis


@contextmanager
def scratch_lane_store(name: str) -> Iterator[RedisLaneStore]:
    """A RedisLaneStore under the prefix ``name`` plus a random part; its keys are deleted after."""
    client = redis.Redis.from_url(require_redis())
    store = RedisLaneStore(client, prefix=f"{name}-{uuid.uuid4().hex[:8]}")
    try:
        yield store
    finally:
        keys = list(client.scan_iter(match=f"{store.prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
