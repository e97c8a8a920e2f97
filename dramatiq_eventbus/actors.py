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

from .codecs import Codec, JSONValue, type_name
from .errors import EventDecodeError, HandlerFailed
from .handler import Error
from .registry import HandlerSpec, Registry
from .routing import Queues
from .untrusted import REASON_CHARACTERS, escaped

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
    return {
        spec.name: _declare_actor(broker, HandlerActor(spec, codec, registry.events_of(spec)), queues)
        for spec in registry.handlers
    }


class HandlerActor:
    """The function behind a handler's actor: decode the payload, handle it, map the result.

    A class rather than a closure so that middleware can tell the bus's actors apart
    from other actors on the same broker.

    Parameters:
      spec(HandlerSpec): The handler.
      codec(Codec): The bus's codec.
      event_classes(frozenset[type]): The event classes the handler is registered for: a
        message may carry any event class of the bus, and only these may reach the handler.
    """

    def __init__(self, spec: HandlerSpec, codec: Codec, event_classes: frozenset[type]) -> None:
        self.spec = spec
        self.codec = codec
        self.event_classes = event_classes
        # Dramatiq names the actor's logger after these.
        self.__module__ = spec.handler_class.__module__
        self.__name__ = spec.handler_class.__qualname__

    def __call__(self, payload: JSONValue) -> None:
        # An EventDecodeError is in the actor's ``throws``: Dramatiq dead-letters it without
        # retries, and the DeadLetterReasons middleware logs it with the reason.
        event = self.codec.decode(payload)
        if type(event) not in self.event_classes:
            # A forged or misrouted message: another handler's event, or a signed payload replayed.
            raise EventDecodeError(f"{self.__name__} is not a handler of {type_name(type(event))}")
        try:
            call_handler(self.spec, event)
        except HandlerFailed as exc:
            # The handler's reason may quote the event, which a forged message controls.
            logger.warning("%s", escaped(str(exc), REASON_CHARACTERS))
            raise
        # The result is dropped on purpose: Dramatiq warns about non-None results without a
        # result backend, and a handler's return value is only meaningful to run_event().


def is_handler_actor(broker: Broker, actor_name: str) -> bool:
    """Whether ``actor_name`` is one of the bus's handler actors on ``broker``."""
    actor = broker.actors.get(actor_name)
    return actor is not None and isinstance(actor.fn, HandlerActor)


def _declare_actor(broker: Broker, body: HandlerActor, queues: Queues) -> dramatiq.Actor[Any, Any]:
    spec = body.spec
    # Configuring again replaces the actor; Dramatiq refuses to declare a name twice.
    broker.actors.pop(spec.name, None)
    return dramatiq.Actor(
        body,
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
