"""The Dramatiq backend: one message per delivery, enqueued on the bus's broker."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dramatiq.broker import Broker
from dramatiq.message import Message

from ..codecs import type_name
from ..delivery import Delivery
from ..errors import PublishError

#: RabbitMQ serves higher broker priorities first; the bus declares its queues with this maximum.
RABBITMQ_MAX_PRIORITY = 10


class DramatiqBackend:
    """Enqueues each delivery as a Dramatiq message for its handler's actor.

    The event travels as the message's only argument, already encoded by the codec, so
    the envelope stays plain JSON. Each message's options carry the event's type name
    and partition key, and on a broker with queue priorities, the handler's priority.

    Parameters:
      broker(Broker): Where to enqueue.
    """

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._priorities = getattr(broker, "max_priority", None) is not None

    def message_for(self, delivery: Delivery) -> Message[Any]:
        options: dict[str, Any] = {
            "event_type": type_name(type(delivery.event)),
            "partition_key": delivery.partition_key,
        }
        if self._priorities:
            # The bus's priority is 0-9 with 0 most urgent; RabbitMQ serves the highest number first.
            options["broker_priority"] = 9 - delivery.handler.priority
        return Message(
            queue_name=delivery.queue_name,
            actor_name=delivery.handler.name,
            args=(delivery.payload,),
            kwargs={},
            options=options,
        )

    def deliver(self, deliveries: Sequence[Delivery]) -> None:
        messages = [self.message_for(delivery) for delivery in deliveries]
        for index, message in enumerate(messages):
            try:
                self.broker.enqueue(message)
            except Exception as exc:  # Dramatiq, redis-py and pika errors share no base class
                raise _publish_error(messages, index, exc) from exc


def _publish_error(messages: Sequence[Message[Any]], failed_at: int, exc: BaseException) -> PublishError:
    sent = tuple(m.actor_name for m in messages[:failed_at])
    unsent = tuple(m.actor_name for m in messages[failed_at:])
    return PublishError(
        f"the broker failed while publishing ({type(exc).__name__}: {exc}); "
        f"{len(sent)} of {len(messages)} messages were sent" + (f" (to {', '.join(sent)})" if sent else ""),
        sent=sent,
        unsent=unsent,
    )
