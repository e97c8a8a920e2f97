"""Everything the bus knows of RabbitMQ: its broker, consumer and batch publisher.

Dramatiq's and pika's private names are reached through :mod:`.upstream` only.
"""

from .broker import MAX_PRIORITY, EventBusRabbitmqBroker, enqueue_many
from .consumer import DeliveryHook
from .dead_letters import RabbitmqDeadLetters

__all__ = ["MAX_PRIORITY", "DeliveryHook", "EventBusRabbitmqBroker", "RabbitmqDeadLetters", "enqueue_many"]
