"""What the bus can do with a broker beyond Dramatiq's ``Broker`` interface.

The bus works with any Dramatiq broker. With its own brokers (:class:`EventBusRedisBroker`,
:class:`EventBusRabbitmqBroker`) it also sends a fan-out in one round trip, consumes
without stranding a batch, and takes lane leases per fetch. :func:`support_for` is the one
place that tells broker kinds apart; everything else asks the :class:`BrokerSupport` it
returns.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

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
from .rabbitmq import DeliveryHook, EventBusRabbitmqBroker, RabbitmqDeadLetters
from .redis import EventBusRedisBroker, FetchHook, RedisDeadLetters, RedisKeys, ThreadConnections
from .sending import Send, enqueue_each, sender_for

#: One dead letter as its queue keeps it: the key it is removed by (a Redis id; the SHA-256 of
#: an AMQP body; a stub's message id), its body (None when missing or too large to be read),
#: its size in bytes, and when it was dead-lettered, in Unix seconds (None when unknown).
StoredDeadLetter = tuple[str, bytes | None, int, float | None]


class DeadLetterQueue(Protocol):
    """A broker's dead-letter queues, as the bus reads and empties them.

    ``keeps_last_failure`` says whether a dead letter carries its last attempt's failure
    (Redis, where the bus rewrites it), or only those of the attempts before (RabbitMQ).
    """

    keeps_last_failure: bool

    def read(self, queue_name: str, *, scan: int, max_bytes: int) -> Iterator[StoredDeadLetter]:
        """Up to ``scan`` of ``queue_name``'s dead letters, oldest first, left in place; a body
        over ``max_bytes`` may be left unread."""
        ...

    def remove(self, queue_name: str, keys: Collection[str], *, scan: int) -> int:
        """Remove ``queue_name``'s dead letters known by ``keys``, looking at up to ``scan``;
        return how many were removed."""
        ...


@dataclass(frozen=True)
class BrokerSupport:
    """What the bus can do with one broker.

    Parameters:
      send(Send): Sends a batch of messages: one round trip on the bus's brokers.
      priorities(bool): The broker serves a backlog by ``broker_priority`` (RabbitMQ with max_priority).
      redis(redis.Redis | None): The broker's Redis, where lanes live unless configured elsewhere.
      redis_keys(RedisKeys | None): The broker's Redis keys: lanes in its Redis put new heads on its queues.
      redis_connections(ThreadConnections | None): Each thread's connection to the broker's Redis,
        which lanes there share with the broker's sends.
      keep_dead_letter(Callable[[Message], None] | None): Writes a failed message over its stored
        dead letter, so that the last attempt's reason is kept.
      dead_letters(DeadLetterQueue | None): Reads and removes the broker's dead letters.
      set_fetch_hook(Callable[[FetchHook | None], None] | None): Hands the consumers of the
        broker's queues a hook for their fetches and acks (Redis).
      set_delivery_hook(Callable[[DeliveryHook | None], None] | None): Hands the consumers of
        the broker's queues a hook for what they read and ack (RabbitMQ).
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
    redis_connections: ThreadConnections | None = None
    keep_dead_letter: Callable[[MessageProxy], None] | None = None
    dead_letters: DeadLetterQueue | None = None
    set_fetch_hook: Callable[[FetchHook | None], None] | None = None
    set_delivery_hook: Callable[[DeliveryHook | None], None] | None = None
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
_RABBITMQ_GAPS = (
    *_CONSUMER_GAPS,
    "lane leases are taken per batch of deliveries, and next lane heads published with the acks",
)


def support_for(broker: Broker) -> BrokerSupport:
    """What the bus can do with ``broker``."""
    if isinstance(broker, EventBusRedisBroker):
        return BrokerSupport(
            send=broker.enqueue_many,
            redis=broker.client,
            redis_keys=broker.keys,
            redis_connections=broker.thread_connections,
            keep_dead_letter=broker.keep_dead_letter,
            dead_letters=RedisDeadLetters(broker.client, broker.keys),
            set_fetch_hook=lambda hook: setattr(broker, "fetch_hook", hook),
            set_max_message_bytes=lambda limit: setattr(broker, "max_message_bytes", limit),
            set_message_check=lambda check: setattr(broker, "message_check", check),
            set_refusal_listener=lambda listener: setattr(broker, "refusal_listener", listener),
        )
    if isinstance(broker, EventBusRabbitmqBroker):
        return BrokerSupport(
            send=broker.enqueue_many,
            priorities=broker.max_priority is not None,
            dead_letters=RabbitmqDeadLetters(broker.parameters),
            set_delivery_hook=lambda hook: setattr(broker, "delivery_hook", hook),
            set_max_message_bytes=lambda limit: setattr(broker, "max_message_bytes", limit),
            set_message_check=lambda check: setattr(broker, "message_check", check),
            set_refusal_listener=lambda listener: setattr(broker, "refusal_listener", listener),
        )
    if isinstance(broker, RedisBroker):
        keys = RedisKeys(broker.namespace)
        connections = ThreadConnections(broker.client)
        return BrokerSupport(
            send=lambda messages: redis_package.enqueue_many(broker, messages, keys, connections=connections),
            redis=broker.client,
            redis_keys=keys,
            redis_connections=connections,
            keep_dead_letter=lambda message: redis_package.keep_dead_letter(broker, message),
            dead_letters=RedisDeadLetters(broker.client, keys),
            lacks=_REDIS_GAPS,
            instead="dramatiq_eventbus.brokers.EventBusRedisBroker",
        )
    if isinstance(broker, RabbitmqBroker):
        return BrokerSupport(
            send=lambda messages: rabbitmq.enqueue_many(broker, messages),
            priorities=broker.max_priority is not None,
            dead_letters=RabbitmqDeadLetters(broker.parameters),
            lacks=_RABBITMQ_GAPS,
            instead="dramatiq_eventbus.brokers.EventBusRabbitmqBroker",
        )
    if isinstance(broker, StubBroker):
        checked = _SizeCheckedSending(broker)
        return BrokerSupport(
            send=checked.send, set_max_message_bytes=checked.limit, dead_letters=_StubDeadLetters(broker)
        )
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


class _StubDeadLetters:
    """A StubBroker's dead letters, in memory, known by their message ids."""

    keeps_last_failure = True  # its consumer dead-letters the message the worker failed

    def __init__(self, broker: StubBroker) -> None:
        self.broker = broker

    def read(self, queue_name: str, *, scan: int, max_bytes: int) -> Iterator[StoredDeadLetter]:
        for proxy in list(self.broker.dead_letters_by_queue[queue_name])[:scan]:
            body = proxy.encode()
            yield proxy.message_id, body, len(body), None

    def remove(self, queue_name: str, keys: Collection[str], *, scan: int) -> int:
        letters = self.broker.dead_letters_by_queue[queue_name]
        kept = [proxy for proxy in letters if proxy.message_id not in keys]
        removed = len(letters) - len(kept)
        letters[:] = kept  # in place: the broker's consumers hold this list
        return removed
