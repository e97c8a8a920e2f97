"""dramatiq-eventbus: an internal event bus on Dramatiq.

A context publishes a domain event; each handler registered for the event's class, in
any context, gets its own Dramatiq message, processed, retried and prioritized on its own.

The module-level functions use one default :class:`EventBus`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dramatiq
from dramatiq.broker import Broker

from . import environment
from .backends import Backend
from .bus import EventBus
from .codecs import Codec
from .errors import (
    ConfigurationError,
    EventBusError,
    EventDecodeError,
    EventEncodeError,
    HandlerFailed,
    PublishError,
)
from .handler import Error, Handler
from .partition import partition_key
from .registry import HandlersConfig

__all__ = [
    "Backend",
    "Codec",
    "ConfigurationError",
    "Error",
    "EventBus",
    "EventBusError",
    "EventDecodeError",
    "EventEncodeError",
    "Handler",
    "HandlerFailed",
    "PublishError",
    "configure",
    "configure_from_env",
    "default_bus",
    "partition_key",
    "publish",
]

#: The bus behind the module-level functions; the library's only mutable global.
default_bus = EventBus()


def configure(
    *,
    handlers: HandlersConfig,
    broker: Broker | str | None = None,
    backend: str | Backend = "dramatiq",
    queue: str = "events",
    partitioned_queue: str = "events_partitioned",
    default_actor_options: Mapping[str, Any] | None = None,
    codec: str | Codec = "typed",
) -> EventBus:
    """Configure the default bus; see :meth:`EventBus.configure`.

    The default bus's broker also becomes Dramatiq's global broker, so that
    ``dramatiq your.module`` finds the handlers' actors after importing a module that
    calls configure().
    """
    bus = default_bus.configure(
        handlers=handlers,
        broker=broker,
        backend=backend,
        queue=queue,
        partitioned_queue=partitioned_queue,
        default_actor_options=default_actor_options,
        codec=codec,
    )
    dramatiq.set_broker(bus.broker)
    return bus


def configure_from_env(**overrides: Any) -> EventBus:
    """Configure the default bus from the ``EVENTBUS_*`` environment variables.

    Keyword ``overrides`` win over the environment. See the README for every variable.
    """
    return configure(**{**environment.arguments_from_env(), **overrides})


def publish(events: object) -> None:
    """Publish an event, or a list of events, on the default bus; see :meth:`EventBus.publish`."""
    default_bus.publish(events)
