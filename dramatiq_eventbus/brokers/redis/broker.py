"""The Redis broker the bus makes from a URL: Dramatiq's RedisBroker, with the bus's consumer
and a batch send."""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Sequence
from typing import Any

from dramatiq import Middleware, Worker
from dramatiq.broker import Broker, MessageProxy
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis
from dramatiq.message import Message

from ...metadata import uuid7
from ..hooks import OverriddenHooksOnly
from ..inspection import MessageCheck, RefusalListener
from ..limits import DEFAULT_MAX_MESSAGE_BYTES, check_sendable, smallest_checked
from ..sending import BatchFailed, emit_before_enqueue, emit_enqueue_hooks, encoded_all
from . import scripts, upstream
from .consumer import FetchHook, Holdings, RedisConsumer
from .keys import RedisKeys
from .scripts import ThreadConnections


class EventBusRedisBroker(OverriddenHooksOnly, RedisBroker):
    """Dramatiq's RedisBroker with a consumer that never strands a prefetched batch.

    It takes RedisBroker's arguments, and keeps its keys, enqueue path and dead-letter
    queues; see :mod:`.consumer` for what its consumer changes. Its middleware hooks run
    as Dramatiq's do, skipping those that do nothing (:class:`~..hooks.OverriddenHooksOnly`).
    Use it wherever a RedisBroker is made for you (``DRAMATIQ_BROKER["BROKER"]`` in
    django_dramatiq, ``DRAMATIQ_BROKER`` in flask-dramatiq) to keep the promises of a
    bus-made broker.

    Parameters:
      **kwargs: Passed to :class:`dramatiq.brokers.redis.RedisBroker`.
    """

    def __init__(self, **kwargs: Any) -> None:
        upstream.warn_if_broken()
        super().__init__(**kwargs)  # type: ignore[no-untyped-call]
        self.logger = logging.getLogger(f"{__name__}.{type(self).__name__}")
        self.keys = RedisKeys(self.namespace)
        #: Each thread's connection to this broker's Redis, on which the bus's scripts run.
        self.thread_connections = ThreadConnections(self.client)
        for name in ("fetch", "ack_many", "enqueue_many"):
            _script(self, name, self.thread_connections)
        #: The largest message its consumers read; configure(max_message_bytes=...) sets it.
        self.max_message_bytes = DEFAULT_MAX_MESSAGE_BYTES
        #: What the bus checks of each message its consumers read (its signature...); configure() sets it.
        self.message_check: MessageCheck | None = None
        #: Told of each message its consumers refuse; configure() sets it to the bus's instruments.
        self.refusal_listener: RefusalListener | None = None
        #: Set by the bus's ordering when its lanes live in this broker's Redis.
        self.fetch_hook: FetchHook | None = None
        self._holdings: dict[str, Holdings] = {}
        self._holdings_lock = threading.Lock()
        #: True once its worker shuts down: its consumers then wait no longer than the worker timeout.
        self.stopping = False
        self._consumers: weakref.WeakSet[RedisConsumer] = weakref.WeakSet()
        self.add_middleware(_StopWaiting())

    @property
    def consumer_class(self) -> type[RedisConsumer]:
        return RedisConsumer

    def holdings(self, queue_name: str, consumer: RedisConsumer) -> Holdings:
        """What this process holds of ``queue_name``, shared by its consumers of it; ``consumer`` is
        one more of them (:func:`stop_waiting` wakes it)."""
        with self._holdings_lock:
            self._consumers.add(consumer)
            return self._holdings.setdefault(queue_name, Holdings())

    def consumers(self) -> list[RedisConsumer]:
        """Its consumers still in memory."""
        with self._holdings_lock:
            return list(self._consumers)

    @property
    def tend_interval(self) -> float:
        """Seconds between a consumer's heartbeat-and-maintenance calls."""
        return min(max(float(self.heartbeat_timeout) / 4000, 0.25), 15.0)

    def enqueue_many(self, messages: Sequence[Message[Any]]) -> None:
        """See :func:`enqueue_many`."""
        enqueue_many(self, messages, self.keys, max_bytes=self.max_message_bytes, connections=self.thread_connections)

    def keep_dead_letter(self, message: MessageProxy) -> None:
        """See :func:`keep_dead_letter`."""
        keep_dead_letter(self, message)


def stop_waiting(broker: EventBusRedisBroker) -> None:
    """Wake the broker's waiting consumers, which from now on wait no longer than the worker timeout.

    An idle consumer that holds nothing waits up to :data:`.consumer.IDLE_WAIT_TIMEOUTS` worker
    timeouts at once; Dramatiq's worker stops its consumer threads between two of their waits,
    so without this its shutdown would take that long.
    """
    broker.stopping = True
    for consumer in broker.consumers():
        consumer.unblock()


class _StopWaiting(Middleware):
    """Calls :func:`stop_waiting` when the broker's worker starts to shut down (and undoes it when one boots)."""

    def after_worker_boot(self, broker: Broker, worker: Worker) -> None:
        if isinstance(broker, EventBusRedisBroker):
            broker.stopping = False

    def before_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        if isinstance(broker, EventBusRedisBroker):
            stop_waiting(broker)


def enqueue_many(
    broker: RedisBroker,
    messages: Sequence[Message[Any]],
    keys: RedisKeys | None = None,
    *,
    max_bytes: int | None = None,
    connections: ThreadConnections | None = None,
) -> None:
    """What ``broker.enqueue`` does per message, for a whole batch in one script call.

    One atomic script: a fan-out is written whole or not at all, in one round trip.
    Every message passes through the ``enqueue`` middleware hooks. Each takes a new Redis id
    into its options (a message that has one already is copied with the new one). Queue maintenance,
    which RedisBroker runs on a small share of its calls, is left to the consumers.

    Parameters:
      broker(RedisBroker): Any Dramatiq RedisBroker; its keys are Dramatiq's.
      messages(Sequence[Message]): The batch, in order.
      keys(RedisKeys | None): The broker's keys, when the caller keeps them; made if None.
      max_bytes(int | None): The consumers' ``max_message_bytes``, when they check it.
      connections(ThreadConnections | None): Where the script runs: the thread's own connection
        to the broker's Redis; the broker's client if None.

    Raises:
      BatchFailed: Nothing was written.
      EventEncodeError: A message is larger than the consumers read; nothing was written.
    """
    if not messages:
        return
    prepared = [_with_new_redis_id(message) for message in messages]
    emit_before_enqueue(broker, prepared)
    keys = RedisKeys(broker.namespace) if keys is None else keys
    args: list[Any] = [current_millis(), broker.broker_id]
    checked_above = smallest_checked(max_bytes) if max_bytes is not None else 0
    for message, body in zip(prepared, encoded_all(prepared), strict=True):
        queue = message.queue_name
        if max_bytes is not None and len(body) > checked_above:
            check_sendable(message, body, max_bytes)
        args += (keys.queue(queue), keys.messages(queue), message.options["redis_message_id"], body)
    try:
        _script(broker, "enqueue_many", connections)(keys=[keys.heartbeats], args=args)
    except Exception as exc:
        raise BatchFailed(0, exc) from exc  # one atomic script: none of them was written
    emit_enqueue_hooks(broker, "after", prepared)


def keep_dead_letter(broker: RedisBroker, message: MessageProxy) -> None:
    """Write ``message``, options included, over its stored dead letter.

    Dramatiq's Retries writes the failure into the message's options, but the dead-letter
    queue keeps the body as it was last enqueued; this keeps the last attempt's reason.
    """
    redis_id = message.options.get("redis_message_id")
    stored = RedisKeys(broker.namespace).dead_letter_messages(message.queue_name)
    if redis_id is not None and broker.client.hexists(stored, redis_id):
        broker.client.hset(stored, redis_id, message.encode())


def _script(broker: RedisBroker, name: str, connections: ThreadConnections | None) -> Any:
    """The bus's script ``name`` on ``broker``, registered once beside Dramatiq's own, run on
    ``connections`` (on the broker's client if None)."""
    script = broker.scripts.get(f"eventbus_{name}")
    if script is None:
        connections = ThreadConnections(broker.client, keep=False) if connections is None else connections
        script = broker.scripts[f"eventbus_{name}"] = scripts.register(connections, name)
    return script


def _with_new_redis_id(message: Message[Any]) -> Message[Any]:
    """``message`` with a new Redis id in its options, as RedisBroker.enqueue gives each message it sends.

    A message that holds no Redis id yet takes it in its own options, as the signer writes
    its signature there: a publish() builds its messages for this one send, and a copy of
    each was a tenth of a fan-out's CPU. One that holds an id already (sent before, or a copy
    of one that was) is copied with the new one, so no two sends share an id; ``setdefault``
    is atomic, so a message two threads send at once is taken in place by one and copied by
    the other.
    """
    redis_id = uuid7()
    if message.options.setdefault("redis_message_id", redis_id) is redis_id:
        return message
    return with_redis_id(message, redis_id)


def with_redis_id(message: Message[Any], redis_id: str) -> Message[Any]:
    """``message.copy(options={"redis_message_id": redis_id})`` as RedisBroker.enqueue does, without
    ``dataclasses.replace``, which costs more than the rest of the copy (a tenth of a fan-out's CPU)."""
    return Message(
        queue_name=message.queue_name,
        actor_name=message.actor_name,
        args=message.args,
        kwargs=message.kwargs,
        options={**message.options, "redis_message_id": redis_id},
        message_id=message.message_id,
        message_timestamp=message.message_timestamp,
    )
