"""Brokers: made from URLs, guarded against messages that cannot run, and sent to in batches."""

from .batch import BatchFailed, enqueue_all
from .inspection import Refusal, inspect_body
from .rabbitmq_broker import EventBusRabbitmqBroker
from .redis_broker import EventBusRedisBroker, same_redis
from .urls import RABBITMQ_SCHEMES, REDIS_SCHEMES, broker_from_url

__all__ = [
    "RABBITMQ_SCHEMES",
    "REDIS_SCHEMES",
    "BatchFailed",
    "EventBusRabbitmqBroker",
    "EventBusRedisBroker",
    "Refusal",
    "broker_from_url",
    "enqueue_all",
    "inspect_body",
    "same_redis",
]
