"""Brokers from configuration: a URL, ``"stub"``, or a Broker used as it is."""

from __future__ import annotations

from urllib.parse import urlsplit

from dramatiq.broker import Broker
from dramatiq.brokers.stub import StubBroker

from .backends.dramatiq import RABBITMQ_MAX_PRIORITY
from .errors import ConfigurationError

REDIS_SCHEMES = ("redis", "rediss", "unix")
RABBITMQ_SCHEMES = ("amqp", "amqps")


def broker_from_url(url: str) -> Broker:
    """Make a Dramatiq broker from a URL.

    ``redis://``, ``rediss://`` and ``unix://`` give a RedisBroker; ``amqp://`` and
    ``amqps://`` a RabbitmqBroker with publisher confirms on and queues declared with a
    max priority of 10; ``"stub"`` a StubBroker for tests and demos.
    """
    if url == "stub":
        return StubBroker()
    scheme = urlsplit(url).scheme
    if scheme in REDIS_SCHEMES:
        from dramatiq.brokers.redis import RedisBroker

        return RedisBroker(url=url)  # type: ignore[no-untyped-call]
    if scheme in RABBITMQ_SCHEMES:
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        return RabbitmqBroker(url=url, confirm_delivery=True, max_priority=RABBITMQ_MAX_PRIORITY)
    raise ConfigurationError(
        f"broker URL {_redact(url)!r} is not supported: use redis://, rediss://, amqp://, amqps:// or 'stub'"
    )


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url
