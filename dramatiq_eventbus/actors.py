"""Handlers as Dramatiq actors, and the actor body every backend shares.

Each handler class becomes one actor named after its import path, declared when
configure() runs, so that a publisher and a ``dramatiq`` worker that load the same
configuration agree on every name. The body is: decode, handle, map the result.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import dramatiq
from dramatiq.broker import Broker

from .codecs import Codec, JSONValue
from .errors import EventDecodeError, HandlerFailed
from .handler import Error
from .registry import HandlerSpec, Registry
from .routing import Queues

logger = logging.getLogger("dramatiq_eventbus.actors")


def handle_payload(spec: HandlerSpec, codec: Codec, payload: JSONValue) -> Any:
    """Decode ``payload`` and give it to the handler; return what it returned.

    Raises:
      EventDecodeError: The payload cannot be decoded. Never worth a retry.
      HandlerFailed: The handler returned ``Error(reason)``.
      Exception: Whatever the handler raised.
    """
    event = codec.decode(payload)
    return call_handler(spec, event)


def call_handler(spec: HandlerSpec, event: object) -> Any:
    """Give a decoded event to the handler, turning an ``Error`` result into HandlerFailed."""
    result = spec.instance.handle_event(event)
    if isinstance(result, Error):
        raise HandlerFailed(spec.handler_class.__qualname__, result.reason)
    return result


def declare_actors(
    broker: Broker, registry: Registry, codec: Codec, queues: Queues
) -> dict[str, dramatiq.Actor[Any, Any]]:
    """Declare one actor per handler on ``broker``, replacing any earlier ones of the same name."""
    broker.declare_queue(queues.default)
    broker.declare_queue(queues.partitioned)
    return {spec.name: _declare_actor(broker, spec, codec, queues) for spec in registry.handlers}


def _declare_actor(broker: Broker, spec: HandlerSpec, codec: Codec, queues: Queues) -> dramatiq.Actor[Any, Any]:
    def run(payload: JSONValue) -> None:
        try:
            handle_payload(spec, codec, payload)
        except EventDecodeError as exc:
            logger.error("Dead-lettering a message for %s: its event cannot be decoded: %s", spec.name, exc)
            raise
        except HandlerFailed as exc:
            logger.warning("%s", exc)
            raise
        # The result is dropped on purpose: Dramatiq warns about non-None results without a
        # result backend, and a handler's return value is only meaningful to run_event().

    run.__module__ = spec.handler_class.__module__
    run.__qualname__ = run.__name__ = spec.handler_class.__qualname__
    # Configuring again replaces the actor; Dramatiq refuses to declare a name twice.
    broker.actors.pop(spec.name, None)
    return dramatiq.Actor(
        run,
        broker=broker,
        actor_name=spec.name,
        queue_name=queues.default,
        priority=spec.priority,
        options=_with_decode_errors_thrown(spec.actor_options),
    )


def _with_decode_errors_thrown(options: Mapping[str, Any]) -> dict[str, Any]:
    """Add EventDecodeError to ``throws``, so Dramatiq's Retries dead-letters it at once."""
    throws = options.get("throws") or ()
    if isinstance(throws, type):
        throws = (throws,)
    return {**options, "throws": (EventDecodeError, *throws)}
