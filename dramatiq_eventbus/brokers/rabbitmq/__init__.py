"""Everything the bus knows of RabbitMQ: its broker, consumer and batch publisher.

Dramatiq's and pika's private names are reached through :mod:`.upstream` only.
"""

import pika.exceptions

from .broker import MAX_PRIORITY, EventBusRabbitmqBroker, enqueue_many
from .consumer import DeliveryHook
from .dead_letters import RabbitmqDeadLetters

#: What pika raises when RabbitMQ fails or cannot be reached.
CLIENT_ERRORS: tuple[type[Exception], ...] = (pika.exceptions.AMQPError,)

__all__ = [
    "CLIENT_ERRORS",
    "MAX_PRIORITY",
    "DeliveryHook",
    "EventBusRabbitmqBroker",
    "RabbitmqDeadLetters",
    "enqueue_many",
]
