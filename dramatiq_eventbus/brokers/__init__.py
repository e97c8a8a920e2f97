"""Brokers: made from URLs, and sent to in batches."""

from .batch import BatchFailed, enqueue_all
from .urls import RABBITMQ_SCHEMES, REDIS_SCHEMES, broker_from_url

__all__ = ["RABBITMQ_SCHEMES", "REDIS_SCHEMES", "BatchFailed", "broker_from_url", "enqueue_all"]
