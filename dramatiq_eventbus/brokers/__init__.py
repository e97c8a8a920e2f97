"""Brokers: made from URLs, guarded against messages that cannot run, and sent to in batches.

Each broker the bus knows has a package of its own (:mod:`.redis`, :mod:`.rabbitmq`) that
owns everything it knows of its upstream. The bus's brokers are public under stable
names, for settings that name a broker class (django_dramatiq, flask-dramatiq):
``dramatiq_eventbus.brokers.EventBusRedisBroker`` and
``dramatiq_eventbus.brokers.EventBusRabbitmqBroker``.
"""

from . import rabbitmq, redis
from .inspection import Refusal, inspect_body
from .rabbitmq import EventBusRabbitmqBroker
from .redis import EventBusRedisBroker, RedisLaneStore
from .sending import BatchFailed, BatchSending, enqueue_each
from .support import BrokerSupport, support_for
from .urls import RABBITMQ_SCHEMES, REDIS_SCHEMES, broker_from_url

#: What the broker clients raise when a broker fails or cannot be reached (a socket error too).
BROKER_ERRORS: tuple[type[Exception], ...] = (*redis.CLIENT_ERRORS, *rabbitmq.CLIENT_ERRORS, OSError)

__all__ = [
    "BROKER_ERRORS",
    "RABBITMQ_SCHEMES",
    "REDIS_SCHEMES",
    "BatchFailed",
    "BatchSending",
    "BrokerSupport",
    "EventBusRabbitmqBroker",
    "EventBusRedisBroker",
    "RedisLaneStore",
    "Refusal",
    "broker_from_url",
    "enqueue_each",
    "inspect_body",
    "support_for",
]
