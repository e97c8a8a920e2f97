"""dramatiq-eventbus: an internal event bus on Dramatiq.

A context publishes a domain event; each handler registered for the event's class, in
any context, gets its own Dramatiq message, processed, retried and prioritized on its own.

The module-level functions use one default :class:`EventBus`, whose broker also becomes
Dramatiq's global broker, so that ``dramatiq your.module`` finds the handlers' actors
after importing a module that calls configure().
"""

from __future__ import annotations

from typing import Any

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
    InterestedFailed,
    PublishError,
)
from .handler import Error, Handler
from .instrumentation import Instrument
from .metadata import EventContext, EventContextFilter, EventMetadata, correlation, current_context
from .partition import partition_key

__all__ = [
    "Backend",
    "Codec",
    "ConfigurationError",
    "Error",
    "EventBus",
    "EventBusError",
    "EventContext",
    "EventContextFilter",
    "EventDecodeError",
    "EventEncodeError",
    "EventMetadata",
    "Handler",
    "HandlerFailed",
    "Instrument",
    "InterestedFailed",
    "PublishError",
    "configure",
    "configure_from_env",
    "correlation",
    "current_context",
    "default_bus",
    "deferred",
    "deferred_async",
    "partition_key",
    "publish",
    "publish_async",
    "register_type",
]

#: The bus behind the module-level functions; the library's only mutable global.
default_bus = EventBus(sets_global_broker=True)

configure = default_bus.configure
publish = default_bus.publish
publish_async = default_bus.publish_async
deferred = default_bus.deferred
deferred_async = default_bus.deferred_async
register_type = default_bus.register_type


def configure_from_env(**overrides: Any) -> EventBus:
    """Configure the default bus from the ``EVENTBUS_*`` environment variables.

    Keyword ``overrides`` win over the environment, and give what no variable can, such as
    ``handler_factory``. See the README for every variable.
    """
    return configure(**{**environment.arguments_from_env(), **overrides})
