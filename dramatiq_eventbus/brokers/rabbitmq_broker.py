"""The RabbitMQ broker the bus makes from a URL: Dramatiq's, with a consumer that inspects each delivery.

Dramatiq's RabbitMQ consumer already rejects an envelope it cannot decode (RabbitMQ then
moves it to ``<queue>.XQ``), but logs a traceback for it, and hands the worker envelopes
with fields of the wrong type or for an actor it does not know, which fail later with
tracebacks far from their cause. This consumer runs every delivery through
:func:`~.inspection.inspect_body` and rejects what it refuses with one log line.
"""

from __future__ import annotations

import pika.exceptions
from dramatiq.broker import MessageProxy
from dramatiq.brokers.rabbitmq import RabbitmqBroker, _RabbitmqConsumer, _RabbitmqMessage
from dramatiq.common import q_name
from dramatiq.errors import ConnectionClosed

from .inspection import Refusal, inspect_body, log_dead_lettered


class EventBusRabbitmqBroker(RabbitmqBroker):
    """Dramatiq's RabbitmqBroker with a consumer that dead-letters undecodable or unrunnable deliveries.

    Parameters:
      **kwargs: Passed to :class:`dramatiq.brokers.rabbitmq.RabbitmqBroker`.
    """

    @property
    def consumer_class(self) -> type[_RabbitmqConsumer]:
        return _GuardedRabbitmqConsumer


class _GuardedRabbitmqConsumer(_RabbitmqConsumer):
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
