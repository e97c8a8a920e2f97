"""Sending all the messages of one publish() together.

A fan-out to ten handlers should not cost ten round trips. On Redis, the messages go in
one MULTI/EXEC pipeline, which also makes the fan-out all-or-nothing. Elsewhere they are
sent one by one, and a failure says which were sent. Every message still passes through
the broker's ``enqueue`` middleware hooks, as with ``broker.enqueue``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import uuid4

from dramatiq.broker import Broker
from dramatiq.common import current_millis
from dramatiq.message import Message


class BatchFailed(Exception):
    """Sending a batch failed after ``sent`` of its messages were accepted by the broker.

    Parameters:
      sent(int): How many messages, from the start of the batch, the broker accepted.
      cause(BaseException): What failed.
    """

    def __init__(self, sent: int, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.sent = sent
        self.cause = cause


def enqueue_all(broker: Broker, messages: Sequence[Message[Any]]) -> None:
    """Enqueue ``messages`` on ``broker``, in one round trip where the broker allows it.

    Raises:
      BatchFailed: Naming how many messages were accepted before the failure.
    """
    if len(messages) > 1 and _is_redis(broker):
        _enqueue_redis_pipeline(broker, messages)
        return
    for index, message in enumerate(messages):
        try:
            broker.enqueue(message)
        except Exception as exc:  # Dramatiq, redis-py and pika errors share no base class
            raise BatchFailed(index, exc) from exc


def _is_redis(broker: Broker) -> bool:
    from dramatiq.brokers.redis import RedisBroker

    return isinstance(broker, RedisBroker)


def _enqueue_redis_pipeline(broker: Any, messages: Sequence[Message[Any]]) -> None:
    """What ``RedisBroker.enqueue`` does per message, with every dispatch in one transaction.

    This leans on RedisBroker's dispatch script and its arguments (Dramatiq 2.x); the
    tests on a real Redis check that a worker consumes what it writes.
    """
    prepared = []
    for message in messages:
        message = message.copy(options={"redis_message_id": str(uuid4())})
        broker.emit_before("enqueue", message, None)
        prepared.append(message)
    dispatch = broker.scripts["dispatch"]
    pipe = broker.client.pipeline(transaction=True)
    timestamp = current_millis()
    for message in prepared:
        args = [
            "enqueue",
            timestamp,
            message.queue_name,
            broker.broker_id,
            broker.heartbeat_timeout,
            broker.dead_message_ttl,
            0,  # no queue maintenance inside a publisher's transaction
            broker._max_unpack_size(),
            message.options["redis_message_id"],
            message.encode(),
        ]
        dispatch(args=args, keys=[broker.namespace], client=pipe)
    try:
        pipe.execute()
    except Exception as exc:
        raise BatchFailed(0, exc) from exc  # MULTI/EXEC: none of them was written
    for message in prepared:
        broker.emit_after("enqueue", message, None)
