"""A bus on real Redis with its lanes, for tests that run a Dramatiq worker in this process.

``test_forged_heads`` and ``test_skipped_heads`` write messages straight onto a queue and
look at what the handlers logged, the dead letters and the lanes; :func:`lanes_on_redis`
configures such a bus for one test and removes everything it left in Redis.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
import redis

from dramatiq_eventbus import EventBus
from dramatiq_eventbus.brokers import EventBusRedisBroker

from ..support.broker_queues import RedisQueues
from ..support.servers import require_redis
from .handlers import log_key
from .harness import forget_lanes


@dataclass
class Lanes:
    """The bus of one test, the run id its handlers log under, and the Redis of its broker."""

    bus: EventBus
    run: str
    redis: Any

    @property
    def queue(self) -> str:
        return self.bus.config.queues.partitioned

    def handled(self, handler: str) -> list[int]:
        """The ``n`` of each event ``handler`` handled, in order."""
        entries = [json.loads(raw) for raw in self.redis.lrange(log_key(self.run), 0, -1)]
        return [entry["n"] for entry in entries if entry["h"] == handler and entry["ok"]]

    def dead_letters(self) -> list[dict[str, Any]]:
        return RedisQueues(require_redis()).dead_letters(self.queue)

    def write_first(self, message: Any) -> None:
        """Put ``message`` at the front of its queue, as anyone who can write to Redis can."""
        redis_id = str(uuid.uuid4())
        self.redis.hset(f"dramatiq:{self.queue}.msgs", redis_id, message.encode())
        self.redis.lpush(f"dramatiq:{self.queue}", redis_id)


L = TypeVar("L", bound=Lanes)


@contextmanager
def lanes_on_redis(
    monkeypatch: pytest.MonkeyPatch, name: str, kind: type[L], *, lanes_url: str | None = None, **settings: Any
) -> Iterator[L]:
    """Configure a bus on the test Redis for the ordering handlers, and yield it as a ``kind``.

    Parameters:
      monkeypatch(pytest.MonkeyPatch): Sets the handlers' run id and Redis for the test.
      name(str): What the queues are named after.
      kind(type[Lanes]): Lanes, or a subclass with more to look at.
      lanes_url(str | None): A Redis of the lanes' own; None keeps them in the broker's.
      settings: More configure() arguments.
    """
    url = require_redis()
    run = uuid.uuid4().hex[:10]
    monkeypatch.setenv("ORDERING_RUN", run)
    monkeypatch.setenv("ORDERING_REDIS_URL", url)
    bus = EventBus().configure(
        handlers="tests.ordering.handlers:HANDLERS",
        broker=url,
        queue=f"{name}_{run}",
        partitioned_queue=f"{name}_{run}_keyed",
        redis_url=lanes_url,
        **settings,
    )
    client: Any = redis.Redis.from_url(url)
    try:
        yield kind(bus, run, client)
    finally:
        broker = bus.broker
        assert isinstance(broker, EventBusRedisBroker)
        for lane_client in {client, redis.Redis.from_url(lanes_url or url)}:
            lane_client.delete(log_key(run))
            forget_lanes(lane_client, run)
        for key in client.scan_iter(match=f"ordering:{run}:*", count=1000):
            client.delete(key)
        probe = RedisQueues(url)
        probe.delete((bus.config.queues.default, bus.config.queues.partitioned))
        probe.forget_brokers([broker.broker_id])
        probe.close()
        client.close()
        broker.close()
