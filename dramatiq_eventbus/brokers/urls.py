"""Brokers from configuration: a URL, ``"stub"``, or a Broker used as it is."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from dramatiq.broker import Broker
from dramatiq.brokers.stub import StubBroker

from ..errors import ConfigurationError
from .rabbitmq import MAX_PRIORITY as RABBITMQ_MAX_PRIORITY
from .rabbitmq import EventBusRabbitmqBroker
from .redis import EventBusRedisBroker

#: Below this, a worker that pauses briefly is taken for dead, and its messages run twice.
MIN_REDIS_HEARTBEAT_SECONDS = 1

REDIS_SCHEMES = ("redis", "rediss", "unix")
RABBITMQ_SCHEMES = ("amqp", "amqps")


def broker_from_url(url: str, *, redis_heartbeat_seconds: float | None = None) -> Broker:
    """Make a Dramatiq broker from a URL.

    ``redis://``, ``rediss://`` and ``unix://`` give a RedisBroker; ``amqp://`` and
    ``amqps://`` a RabbitmqBroker with publisher confirms on and queues declared with a
    max priority of 10; ``"stub"`` a StubBroker for tests and demos. The Redis and
    RabbitMQ brokers are Dramatiq's with a guarded consumer (:class:`EventBusRedisBroker`,
    :class:`EventBusRabbitmqBroker`): a message that cannot run is dead-lettered with one
    log line instead of stranding the messages fetched with it.

    ``redis_heartbeat_seconds`` sets a RedisBroker's heartbeat timeout: how long a worker
    may be silent before the messages it had taken go back to their queue (at least 1 s).

    Raises:
      ConfigurationError: An unsupported scheme, a URL the client library cannot parse, or
        a heartbeat that is not a number of seconds of at least 1.
    """
    heartbeat_ms = _heartbeat_ms(redis_heartbeat_seconds)
    if url == "stub":
        return StubBroker()
    scheme = urlsplit(url).scheme
    try:
        if scheme in REDIS_SCHEMES:
            options = {} if heartbeat_ms is None else {"heartbeat_timeout": heartbeat_ms}
            return EventBusRedisBroker(url=url, **options)
        if scheme in RABBITMQ_SCHEMES:
            return EventBusRabbitmqBroker(url=url, confirm_delivery=True, max_priority=RABBITMQ_MAX_PRIORITY)
    except (ValueError, TypeError) as exc:
        # redis-py and pika parse the URL here, and say only what part of it they disliked.
        raise ConfigurationError(f"broker URL {redact(url)!r} is not valid: {_redact_in(str(exc), url)}") from None
    raise ConfigurationError(
        f"broker URL {redact(url)!r} is not supported: use redis://, rediss://, amqp://, amqps:// or 'stub'"
    )


def _heartbeat_ms(seconds: float | None) -> int | None:
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not (isinstance(seconds, int | float) and seconds > 0):
        raise ConfigurationError(f"redis_heartbeat_seconds must be a positive number, not {seconds!r}")
    if seconds < MIN_REDIS_HEARTBEAT_SECONDS:
        raise ConfigurationError(
            f"redis_heartbeat_seconds must be at least {MIN_REDIS_HEARTBEAT_SECONDS} second, not {seconds!r}: "
            f"a live worker silent for longer (a pause, a slow Redis) would have its messages run again elsewhere"
        )
    return int(seconds * 1000)


#: Query parameters that hold secrets (redis-py and libpq take ``password=``, some brokers a token).
_SECRET_PARAMETER = re.compile(r"(?i)([?&][^=&#]*(?:pass|secret|token|key)[^=&#]*=)[^&#]*")


def redact(url: str) -> str:
    """The URL with its password, and any secret in its query string, replaced by ***, for errors and logs."""
    parts = urlsplit(url)
    if parts.password:
        url = url.replace(f":{parts.password}@", ":***@")
    return _SECRET_PARAMETER.sub(r"\1***", url)


def _redact_in(text: str, url: str) -> str:
    password = urlsplit(url).password
    return text.replace(password, "***") if password else text
