"""Two applications that keep their lanes in one Redis database, each under its own lane prefix.

A worker sends the stalled heads of every lane under its prefix again, through its own
broker: under one prefix, a worker of an application on a Redis broker took the lanes of
one on RabbitMQ, and sent their heads to Redis queues nobody read (seen when a benchmark's
worker swept a test's lanes). On real Redis and RabbitMQ, with each bus's own sweep.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from dramatiq_eventbus import EventBus
from dramatiq_eventbus.ordering import LaneSweeper

from ..support.broker_queues import RabbitmqQueues, RedisQueues
from ..support.servers import require_rabbitmq, require_redis
from .handlers import Step
from .harness import forget_lanes

pytestmark = [pytest.mark.redis, pytest.mark.rabbitmq]


@pytest.fixture
def run() -> str:
    return uuid.uuid4().hex[:10]


def configured(run: str, app: str, **settings: Any) -> EventBus:
    return EventBus().configure(
        handlers="tests.ordering.handlers:HANDLERS",
        queue=f"prefix_{app}_{run}",
        partitioned_queue=f"prefix_{app}_{run}_keyed",
        lane_prefix=f"{app}-{run}",
        **settings,
    )


@pytest.fixture
def apps(run: str) -> Iterator[tuple[EventBus, EventBus]]:
    shop = configured(run, "shop", broker=require_rabbitmq(), redis_url=require_redis())
    billing = configured(run, "billing", broker=require_redis())
    yield shop, billing
    client: Any = redis.Redis.from_url(require_redis())
    for bus in (shop, billing):
        assert bus.config.lanes is not None
        forget_lanes(client, run, prefix=bus.config.lanes.prefix)
        bus.broker.close()
    client.close()
    queues = [f"prefix_{app}_{run}{suffix}" for app in ("shop", "billing") for suffix in ("", "_keyed")]
    RabbitmqQueues(require_rabbitmq()).delete(queues)
    probe = RedisQueues(require_redis())
    probe.delete(queues)
    probe.close()


def sweep(bus: EventBus) -> None:
    """One run of the bus's lane maintenance, as its worker's sweeper thread does it."""
    sweeper = next(m for m in bus.broker.middleware if isinstance(m, LaneSweeper))
    sweeper.sweep_once(bus.broker)


def stall_every_lane(bus: EventBus) -> None:
    """Make every lane of ``bus`` due for the sweep now, as if its head had stalled."""
    lanes = bus.config.lanes
    assert lanes is not None
    names = lanes.client.zrange(lanes.keys.lanes, 0, -1)
    assert names
    lanes.client.zadd(lanes.keys.lanes, {name: 0 for name in names})


def test_a_worker_sends_again_only_the_stalled_heads_of_its_own_prefix(
    apps: tuple[EventBus, EventBus], run: str
) -> None:
    shop, billing = apps
    key = f"k-{run}"
    shop.publish(Step(key, 0, 0))  # three handlers: three lanes, their heads in RabbitMQ
    shop_keyed = shop.config.queues.partitioned
    rabbitmq = RabbitmqQueues(require_rabbitmq())
    assert rabbitmq.count(shop_keyed) == 3
    stall_every_lane(shop)

    sweep(billing)  # the other application's worker, in the same Redis database
    assert RedisQueues(require_redis()).count(shop_keyed) == 0, "billing sent shop's heads to its own Redis"
    assert {lane.state for lane in shop.lanes()} == {"dispatched"}

    sweep(shop)  # shop's own worker sends them again, to RabbitMQ
    assert rabbitmq.count(shop_keyed) == 6
    assert RedisQueues(require_redis()).count(shop_keyed) == 0


def test_lanes_are_kept_under_the_configured_prefix(apps: tuple[EventBus, EventBus], run: str) -> None:
    shop, billing = apps
    billing.publish(Step(f"k-{run}", 0, 0))
    client: Any = redis.Redis.from_url(require_redis())
    assert {lane.decode().rsplit(":", 1)[-1] for lane in client.zrange(f"billing-{run}:lanes", 0, -1)} == {f"k-{run}"}
    assert not client.zcard(f"shop-{run}:lanes")
    assert len(billing.lanes()) == 3 and shop.lanes() == []
    client.close()
