"""Brokers from configuration: a URL, ``"stub"``, or a Broker used as it is."""

from __future__ import annotations

from urllib.parse import urlsplit

from dramatiq.broker import Broker
from dramatiq.brokers.stub import StubBroker

from ..errors import ConfigurationError

#: RabbitMQ serves higher broker priorities first; the bus declares its queues with this maximum.
RABBITMQ_MAX_PRIORITY = 10

REDIS_SCHEMES = ("redis", "rediss", "unix")
RABBITMQ_SCHEMES = ("amqp", "amqps")


def broker_from_url(url: str, *, redis_heartbeat_seconds: float | None = None) -> Broker:
    """Make a Dramatiq broker from a URL.

    ``redis://``, ``rediss://`` and ``unix://`` give a RedisBroker; ``amqp://`` and
    ``amqps://`` a RabbitmqBroker with publisher confirms on and queues declared with a
    max priority of 10; ``"stub"`` a StubBroker for tests and demos.

    ``redis_heartbeat_seconds`` sets a RedisBroker's heartbeat timeout: how long a worker
    may be silent before the messages it had taken go back to their queue.
    """
    if redis_heartbeat_seconds is not None and not (
        isinstance(redis_heartbeat_seconds, int | float) and redis_heartbeat_seconds > 0
    ):
        raise ConfigurationError(f"redis_heartbeat_seconds must be a positive number, not {redis_heartbeat_seconds!r}")
    if url == "stub":
        return StubBroker()
    scheme = urlsplit(url).scheme
    if scheme in REDIS_SCHEMES:
        from dramatiq.brokers.redis import RedisBroker

        options = {} if redis_heartbeat_seconds is None else {"heartbeat_timeout": int(redis_heartbeat_seconds * 1000)}
        return RedisBroker(url=url, **options)  # type: ignore[no-untyped-call]
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
