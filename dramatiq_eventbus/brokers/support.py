"""What the bus can do with a broker beyond Dramatiq's ``Broker`` interface.

The bus works with any Dramatiq broker. With its own brokers (:class:`EventBusRedisBroker`,
:class:`EventBusRabbitmqBroker`) it also sends a fan-out in one round trip, consumes
without stranding a batch, and takes lane leases per fetch. :func:`support_for` is the one
place that tells broker kinds apart; everything else asks the :class:`BrokerSupport` it
returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import redis as redis_client
from dramatiq.broker import Broker, MessageProxy
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker

from . import rabbitmq
from . import redis as redis_package
from .rabbitmq import EventBusRabbitmqBroker
from .redis import EventBusRedisBroker, FetchHook, RedisKeys
from .sending import Send, sender_for


@dataclass(frozen=True)
class BrokerSupport:
    """What the bus can do with one broker.

    Parameters:
      send(Send): Sends a batch of messages: one round trip on the bus's brokers.
      priorities(bool): The broker serves a backlog by ``broker_priority`` (RabbitMQ with max_priority).
      redis(redis.Redis | None): The broker's Redis, where lanes live unless configured elsewhere.
      redis_keys(RedisKeys | None): The broker's Redis keys: lanes in its Redis put new heads on its queues.
      keep_dead_letter(Callable[[Message], None] | None): Writes a failed message over its stored
        dead letter, so that the last attempt's reason is kept.
      set_fetch_hook(Callable[[FetchHook | None], None] | None): Hands the consumers of the
        broker's queues a hook for their fetches and acks.
      set_max_message_bytes(Callable[[int], None] | None): Sets the largest message the
        broker's consumers read.
      lacks(tuple[str, ...]): What this broker lacks of the bus's own, for a warning.
      instead(str): The class to use instead, for that warning.
    """

    send: Send
    priorities: bool = False
    redis: redis_client.Redis | None = None
    redis_keys: RedisKeys | None = None
    keep_dead_letter: Callable[[MessageProxy], None] | None = None
    set_fetch_hook: Callable[[FetchHook | None], None] | None = None
    set_max_message_bytes: Callable[[int], None] | None = None
    lacks: tuple[str, ...] = field(default=())
    instead: str = ""


#: What a Dramatiq broker made elsewhere lacks of the bus's own: its consumer.
_CONSUMER_GAPS = (
    "a message that cannot be decoded or run is dead-lettered alone with one log line, "
    "without stranding or failing the messages fetched with it",
    "a message over max_message_bytes is refused before it is parsed",
)
_REDIS_GAPS = (
    *_CONSUMER_GAPS,
    "a dead worker's messages come back within the heartbeat timeout, not at some later random call",
    "acks go to Redis in batches, and lane leases are taken per fetch",
)


def support_for(broker: Broker) -> BrokerSupport:
    """What the bus can do with ``broker``."""
    if isinstance(broker, EventBusRedisBroker):
        return BrokerSupport(
            send=broker.enqueue_many,
            redis=broker.client,
            redis_keys=broker.keys,
            keep_dead_letter=broker.keep_dead_letter,
            set_fetch_hook=lambda hook: setattr(broker, "fetch_hook", hook),
            set_max_message_bytes=lambda limit: setattr(broker, "max_message_bytes", limit),
        )
    if isinstance(broker, EventBusRabbitmqBroker):
        return BrokerSupport(
            send=broker.enqueue_many,
            priorities=broker.max_priority is not None,
            set_max_message_bytes=lambda limit: setattr(broker, "max_message_bytes", limit),
        )
    if isinstance(broker, RedisBroker):
        keys = RedisKeys(broker.namespace)
        return BrokerSupport(
            send=lambda messages: redis_package.enqueue_many(broker, messages, keys),
            redis=broker.client,
            redis_keys=keys,
            keep_dead_letter=lambda message: redis_package.keep_dead_letter(broker, message),
            lacks=_REDIS_GAPS,
            instead="dramatiq_eventbus.brokers.EventBusRedisBroker",
        )
    if isinstance(broker, RabbitmqBroker):
        return BrokerSupport(
            send=lambda messages: rabbitmq.enqueue_many(broker, messages),
            priorities=broker.max_priority is not None,
            lacks=_CONSUMER_GAPS,
            instead="dramatiq_eventbus.brokers.EventBusRabbitmqBroker",
        )
    return BrokerSupport(send=sender_for(broker))  # a StubBroker, or another kind: one message at a time
