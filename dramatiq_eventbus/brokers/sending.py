"""Sending all the messages of one publish() together.

A fan-out to ten handlers should not cost ten round trips. The bus's brokers send a
batch with :meth:`enqueue_many` (:class:`BatchSending`): on Redis one Lua script call,
which also makes the fan-out all-or-nothing; on RabbitMQ every message published, then
their confirms awaited together. Any other Dramatiq broker (a StubBroker, one made
elsewhere) gets its messages one by one from :func:`enqueue_each`. Every message passes
through the broker's ``enqueue`` middleware hooks, as with ``broker.enqueue``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from dramatiq.broker import Broker
from dramatiq.message import Message

#: Sends a batch of messages, or raises BatchFailed.
Send = Callable[[Sequence[Message[Any]]], None]


class BatchFailed(Exception):
    """Sending a batch failed after ``sent`` of its messages were accepted by the broker.

    Parameters:
      sent(int): How many messages, from the start of the batch, the broker accepted.
      cause(BaseException): What failed.
      accepted(frozenset[int] | None): The positions of every message the broker accepted,
        when they need not be the first ``sent`` ones (RabbitMQ confirms each message on
        its own); None means exactly the first ``sent``.
    """

    def __init__(self, sent: int, cause: BaseException, accepted: frozenset[int] | None = None) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.sent = sent
        self.cause = cause
        self.accepted = frozenset(range(sent)) if accepted is None else accepted


@runtime_checkable
class BatchSending(Protocol):
    """A broker that sends a batch of messages in fewer round trips than one per message."""

    def enqueue_many(self, messages: Sequence[Message[Any]]) -> None:
        """Enqueue ``messages``, each through the ``enqueue`` hooks.

        Raises:
          BatchFailed: Naming which messages were accepted before the failure.
        """


def sender_for(broker: Broker) -> Send:
    """How to send a batch on ``broker``: its own ``enqueue_many``, or one message at a time."""
    if isinstance(broker, BatchSending):
        return broker.enqueue_many
    return lambda messages: enqueue_each(broker, messages)


def enqueue_each(broker: Broker, messages: Sequence[Message[Any]]) -> None:
    """Enqueue ``messages`` one by one.

    Raises:
      BatchFailed: Saying how many were sent before the failure.
    """
    for index, message in enumerate(messages):
        try:
            broker.enqueue(message)
        except Exception as exc:  # Dramatiq, redis-py and pika errors share no base class
            raise BatchFailed(index, exc) from exc


def emit_before_enqueue(broker: Broker, messages: Sequence[Message[Any]]) -> None:
    """Every ``before_enqueue`` hook first: a middleware that refuses one message stops the batch unsent."""
    for message in messages:
        try:
            broker.emit_before("enqueue", message, None)
        except Exception as exc:
            raise BatchFailed(0, exc) from exc
