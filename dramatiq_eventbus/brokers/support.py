"""What the bus can do with a broker beyond Dramatiq's ``Broker`` interface.

The bus works with any Dramatiq broker. With its own brokers (:class:`EventBusRedisBroker`,
:class:`EventBusRabbitmqBroker`) it also sends a fan-out in one round trip, consumes
without stranding a batch, and takes lane leases per fetch. :func:`support_for` is the one
place that tells broker kinds apart; everything else asks the :class:`BrokerSupport` it
returns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis as redis_client
from dramatiq.broker import Broker, MessageProxy
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.message import Message

from . import rabbitmq
from . import redis as redis_package
from .inspection import MessageCheck, RefusalListener
from .limits import DEFAULT_MAX_MESSAGE_BYTES, check_all_sendable
from .rabbitmq import EventBusRabbitmqBroker
from .redis import EventBusRedisBroker, FetchHook, RedisKeys
from .sending import Send, enqueue_each, sender_for


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
      set_message_check(Callable[[MessageCheck], None] | None): Hands the broker's consumers
        the bus's check of each message (signature, options), so that they refuse what fails
        it before Dramatiq's worker sees it.
      set_refusal_listener(Callable[[RefusalListener], None] | None): Hands the broker's consumers
        what to tell of each message they refuse.
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
    set_message_check: Callable[[MessageCheck], None] | None = None
    set_refusal_listener: Callable[[RefusalListener], None] | None = None
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
            set_message_check=lambda check: setattr(broker, "message_check", check),
            set_refusal_listener=lambda listener: setattr(broker, "refusal_listener", listener),
        )
    if isinstance(broker, EventBusRabbitmqBroker):
        return BrokerSupport(
            send=broker.enqueue_many,
            priorities=broker.max_priority is not None,
            set_max_message_bytes=lambda limit: setattr(broker, "max_message_bytes", limit),
            set_message_check=lambda check: setattr(broker, "message_check", check),
            set_refusal_listener=lambda listener: setattr(broker, "refusal_listener", listener),
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
    if isinstance(broker, StubBroker):
        checked = _SizeCheckedSending(broker)
        return BrokerSupport(send=checked.send, set_max_message_bytes=checked.limit)
    return BrokerSupport(send=sender_for(broker))  # another kind: one message at a time


class _SizeCheckedSending:
    """A StubBroker's sends, one by one, refusing at publish() what the bus's brokers refuse there.

    A StubBroker's consumers read messages of any size: without this, a test of an event
    too large for production's workers would pass. Each message is encoded once more; a
    test can afford that.
    """

    def __init__(self, broker: StubBroker) -> None:
        self.broker = broker
        self.max_bytes = DEFAULT_MAX_MESSAGE_BYTES

    def limit(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes

    def send(self, messages: Sequence[Message[Any]]) -> None:
        check_all_sendable(messages, [message.encode() for message in messages], self.max_bytes)
        enqueue_each(self.broker, messages)
