"""The RabbitMQ broker the bus makes from a URL: Dramatiq's, with a consumer that inspects each delivery.

Dramatiq's RabbitMQ consumer already rejects an envelope it cannot decode (RabbitMQ then
moves it to ``<queue>.XQ``), but logs a traceback for it, and hands the worker envelopes
with fields of the wrong type or for an actor it does not know, which fail later with
tracebacks far from their cause. This consumer runs every delivery through
:func:`~.inspection.inspect_body` and rejects what it refuses with one log line.

It also sends its acks in batches. Dramatiq's consumer hands each ack to pika's I/O loop
as a callback of its own, and pika then flushes the socket once per ack: about half of
a worker's CPU time with no-op handlers. Here the acks that arrive before the loop runs
go out together, with one flush. An ack still leaves when Dramatiq's would, on the
consumer's next turn of the loop; if the connection dies first, RabbitMQ redelivers
the message, as it would have with an ack lost in flight.
"""

from __future__ import annotations

import logging
import threading

import pika.exceptions
from dramatiq.broker import MessageProxy
from dramatiq.brokers.rabbitmq import RabbitmqBroker, _RabbitmqConsumer, _RabbitmqMessage
from dramatiq.common import q_name
from dramatiq.errors import ConnectionClosed

from .inspection import Refusal, inspect_body, log_dead_lettered

logger = logging.getLogger("dramatiq_eventbus.brokers")


class EventBusRabbitmqBroker(RabbitmqBroker):
    """Dramatiq's RabbitmqBroker with a consumer that dead-letters undecodable or unrunnable deliveries.

    Parameters:
      **kwargs: Passed to :class:`dramatiq.brokers.rabbitmq.RabbitmqBroker`.
    """

    @property
    def consumer_class(self) -> type[_RabbitmqConsumer]:
        return _GuardedRabbitmqConsumer


class _GuardedRabbitmqConsumer(_RabbitmqConsumer):
    def __init__(self, broker: RabbitmqBroker, queue_name: str, prefetch: int, timeout: int) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)  # type: ignore[no-untyped-call]
        self._unsent_acks: list[int] = []
        self._acks_lock = threading.Lock()

    def ack(self, message: MessageProxy) -> None:
        try:
            self.known_tags.remove(message._tag)
        except KeyError:
            logger.warning("Failed to ack message %s: not in known tags.", message.message_id)
            return
        with self._acks_lock:
            self._unsent_acks.append(message._tag)
            first = len(self._unsent_acks) == 1
        if first:
            try:
                self.connection.add_callback_threadsafe(self._send_acks)
            except (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError) as exc:
                raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]

    def _send_acks(self) -> None:
        """Run by pika's I/O loop: every ack since the last run, then one flush."""
        with self._acks_lock:
            tags, self._unsent_acks = self._unsent_acks, []
        for tag in tags:
            self.channel._impl.basic_ack(delivery_tag=tag)
        self.channel._flush_output()

    def __next__(self) -> MessageProxy | None:
        # Dramatiq's own __next__, with inspect_body() in place of a bare Message.decode().
        try:
            method, _properties, body = next(self.iterator)
            if method is None:
                return None
        except (AssertionError, pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError) as exc:
            if getattr(exc, "reply_code", None) == 404:
                # The queue vanished: declare it again when the consumer restarts.
                self.broker.queues_pending.add(q_name(self.queue_name))
            raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]
        inspected = inspect_body(self.broker, body)
        if isinstance(inspected, Refusal):
            log_dead_lettered(self.queue_name, inspected)
            # requeue=False: the queue's dead-letter exchange routes it to <queue>.XQ.
            self._nack(method.delivery_tag)  # type: ignore[no-untyped-call]
            return None
        self.known_tags.add(method.delivery_tag)
        return _RabbitmqMessage(method.redelivered, method.delivery_tag, inspected)  # type: ignore[no-untyped-call]
