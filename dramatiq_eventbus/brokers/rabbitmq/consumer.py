"""The bus's RabbitMQ consumer: Dramatiq's, inspecting each delivery and acking in batches.

Dramatiq's RabbitMQ consumer already rejects an envelope it cannot decode (RabbitMQ then
moves it to ``<queue>.XQ``), but logs a traceback for it, and hands the worker envelopes
with fields of the wrong type or for an actor it does not know, which fail later with
tracebacks far from their cause. This consumer runs every delivery through
:func:`~..inspection.inspect_body` and rejects what it refuses with one log line.

It also sends its acks in batches. Dramatiq's consumer hands each ack to pika's I/O loop
as a callback of its own, and pika then flushes the socket once per ack: about half of
a worker's CPU time with no-op handlers. Here the acks that arrive before the loop runs
go out together, with one flush. An ack still leaves when Dramatiq's would, on the
consumer's next turn of the loop; if the connection dies first, RabbitMQ redelivers
the message, as it would have with an ack lost in flight.
"""

from __future__ import annotations

import threading

import pika.exceptions
from dramatiq.broker import MessageProxy
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.common import q_name
from dramatiq.errors import ConnectionClosed

from ...untrusted import shown
from ..inspection import Refusal, inspect_delivery, log_dead_lettered
from . import upstream


class RabbitmqConsumer(upstream.UpstreamConsumer):
    """Consumes one queue of an :class:`~.broker.EventBusRabbitmqBroker`; see the module's docstring.

    Parameters:
      broker(RabbitmqBroker): The broker.
      queue_name(str): The queue.
      prefetch(int): RabbitMQ's prefetch count for this consumer's channel.
      timeout(int): How long (ms) an iteration waits for a delivery.
    """

    def __init__(self, broker: RabbitmqBroker, queue_name: str, prefetch: int, timeout: int) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)  # type: ignore[no-untyped-call]
        self._unsent_acks: list[int] = []
        self._acks_lock = threading.Lock()

    def ack(self, message: MessageProxy) -> None:
        tag = upstream.delivery_tag(message)
        try:
            self.known_tags.remove(tag)
        except KeyError:
            self.logger.warning("Failed to ack message %s: not in known tags.", shown(message.message_id))
            return
        with self._acks_lock:
            self._unsent_acks.append(tag)
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
            upstream.ack_unflushed(self.channel, tag)
        upstream.flush(self.channel)

    def __next__(self) -> MessageProxy | None:
        # Dramatiq's own __next__, with inspect_body() in place of a bare Message.decode().
        try:
            method, _properties, body = next(self.iterator)
            if method is None:
                return None
        except (AssertionError, pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError) as exc:
            if getattr(exc, "reply_code", None) == 404:
                # The queue vanished: declare it again when the consumer restarts.
                upstream.queues_to_declare(self.broker).add(q_name(self.queue_name))
            raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]
        inspected = inspect_delivery(self.broker, self.queue_name, body)
        if isinstance(inspected, Refusal):
            log_dead_lettered(self.broker, self.queue_name, inspected)
            # Not requeued: the queue's dead-letter exchange routes it to <queue>.XQ.
            upstream.reject(self, method.delivery_tag)
            return None
        self.known_tags.add(method.delivery_tag)
        return upstream.delivery(method.redelivered, method.delivery_tag, inspected)
