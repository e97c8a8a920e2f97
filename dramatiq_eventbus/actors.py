"""Handlers as Dramatiq actors, and the actor body every backend shares.

Each handler class becomes one actor named after its import path, declared when
configure() runs, so that a publisher and a ``dramatiq`` worker that load the same
configuration agree on every name. The body is: decode, handle, map the result.

A handler whose ``handle_event`` is an ``async def`` gets an actor whose function is a
coroutine function, which Dramatiq runs on the event loop of its AsyncIO middleware (the
bus adds it to the broker then); elsewhere (inline, the test mailbox, run_event) its
coroutine is run to completion in the caller.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import threading
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import dramatiq
from dramatiq.broker import Broker

from .codecs import Codec, JSONValue, type_name
from .delivery import Delivery
from .errors import AlreadyHandled, ConfigurationError, EventDecodeError, HandlerFailed
from .handler import Error
from .instrumentation import Instruments
from .metadata import EventContext, context_for, running
from .registry import HandlerSpec, Registry
from .routing import Queues
from .untrusted import REASON_CHARACTERS, escaped

logger = logging.getLogger("dramatiq_eventbus.actors")

T = TypeVar("T")


def handle_payload(spec: HandlerSpec, codec: Codec, payload: JSONValue, context: EventContext | None = None) -> Any:
    """Decode ``payload`` and give it to the handler; return what it returned.

    Parameters:
      spec(HandlerSpec): The handler.
      codec(Codec): The bus's codec.
      payload(JSONValue): The encoded event.
      context(EventContext | None): What :func:`~.metadata.current_context` returns while the handler runs.

    Raises:
      EventDecodeError: The payload cannot be decoded. Never worth a retry.
      HandlerFailed: The handler returned ``Error(reason)``.
      Exception: Whatever the handler raised.
    """
    event = codec.decode(payload)
    with running(context):
        return call_handler(spec, event)


def delivery_context(delivery: Delivery, *, attempt: int = 1, message_id: str | None = None) -> EventContext | None:
    """The context a handler runs in for ``delivery``; None for a delivery built without metadata.

    Parameters:
      delivery(Delivery): The event, its handler and its metadata.
      attempt(int): 1 for the first try.
      message_id(str | None): The message's id, where one was sent.
    """
    if delivery.metadata is None:
        return None
    return context_for(
        delivery.metadata,
        handler=delivery.handler.name,
        partition_key=delivery.partition_key,
        attempt=attempt,
        message_id=message_id,
    )


# The context of each message a worker thread is about to run, by its payload: the actor is
# called with the payload only (``actor(*message.args)``), and an async handler's coroutine runs
# on Dramatiq's loop thread, where nothing the worker thread set in its context variables is
# seen. The payload object is the one message.args holds, so its identity finds its message.
_received: dict[int, tuple[object, EventContext]] = {}
_received_lock = threading.Lock()


def expect_message(payload: object, context: EventContext) -> None:
    """Note that the actor called next with ``payload`` (that very object) runs in ``context``."""
    with _received_lock:
        _received[id(payload)] = (payload, context)


def forget_message(payload: object) -> None:
    """Forget what :func:`expect_message` noted of ``payload``, once its message is done."""
    with _received_lock:
        found = _received.get(id(payload))
        if found is not None and found[0] is payload:
            del _received[id(payload)]


def _context_of(payload: object) -> EventContext | None:
    found = _received.get(id(payload))
    return found[1] if found is not None and found[0] is payload else None


def call_handler(spec: HandlerSpec, event: object) -> Any:
    """Give a decoded event to the handler from synchronous code, turning an ``Error`` result
    into HandlerFailed; an async handler is run to completion (see :func:`handled`).

    Parameters:
      spec(HandlerSpec): The handler.
      event(object): The decoded event.

    Raises:
      HandlerFailed: The handler returned ``Error(reason)``.
      Exception: Whatever the handler raised.
    """
    return _checked(spec, handled(spec.instance, event))


def _checked(spec: HandlerSpec, result: Any) -> Any:
    if isinstance(result, Error):
        raise HandlerFailed(spec.handler_class.__qualname__, result.reason)
    return result


def is_async_handler(handler: object) -> bool:
    """Whether ``handler``'s ``handle_event`` is a coroutine function (an ``async def``).

    The same test Dramatiq makes of an actor's function (``inspect.iscoroutinefunction``).

    Parameters:
      handler(object): A handler instance or class.
    """
    return inspect.iscoroutinefunction(getattr(handler, "handle_event", None))


def handled(handler: Any, event: object) -> Any:
    """Call ``handler.handle_event(event)`` from synchronous code; return what it returned.

    An ``async def handle_event`` is run to completion (see :func:`run_to_completion`). A
    plain ``def`` that returns a coroutine (say, wrapped by a decorator that hid the
    ``async``) is an error rather than a coroutine silently never run.

    Parameters:
      handler(Any): The handler instance.
      event(object): The event it is given.

    Raises:
      TypeError: A plain ``def handle_event`` returned a coroutine.
      Exception: Whatever the handler raised.
    """
    try:
        return _handled(handler, event)
    except AlreadyHandled:
        return None  # an inbox found the event handled already, and said so: a success, to acknowledge


def _handled(handler: Any, event: object) -> Any:
    """:func:`handled`, letting an :class:`~.errors.AlreadyHandled` through (to an instrument)."""
    handle_event = handler.handle_event
    if inspect.iscoroutinefunction(handle_event):
        return run_to_completion(handle_event(event))
    result = handle_event(event)
    if inspect.iscoroutine(result):
        # Closed, never run: running it would make a worker differ from the other paths, where
        # Dramatiq decides at declaration whether an actor is async.
        result.close()
        raise TypeError(
            f"{type(handler).__qualname__}.handle_event returned a coroutine, but it is a plain def, so the bus "
            "does not await it: declare it async def handle_event (a decorator on it must keep it a coroutine "
            "function, as inspect.iscoroutinefunction sees it)"
        )
    return result


def run_to_completion(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run an async handler's coroutine to its end from synchronous code, and return its result.

    For the inline backend, the test mailbox's inline mode and run_event. On a thread with
    no running event loop, it runs on a new loop (``asyncio.run``). On a thread whose loop
    is running (publish() or run_event() called from a coroutine), that loop cannot run it
    until the caller returns, so it runs on a new loop in a thread of its own, with a copy
    of the caller's context variables, while the caller waits as it would for a sync
    handler. Either way the handler is not on the caller's loop, as in a worker, where it
    runs on Dramatiq's loop thread: it must not use objects bound to another loop.

    Parameters:
      coroutine(Coroutine): The coroutine ``handle_event(event)`` returned.

    Raises:
      Exception: Whatever the coroutine raised.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    context = contextvars.copy_context()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="eventbus-async-handler") as pool:
        return pool.submit(context.run, asyncio.run, coroutine).result()


def declare_actors(
    broker: Broker, registry: Registry, codec: Codec, queues: Queues, instruments: Instruments
) -> dict[str, dramatiq.Actor[Any, Any]]:
    """Declare one actor per handler on ``broker``, replacing any earlier ones of the same name.

    When a handler is async, Dramatiq's AsyncIO middleware is added to ``broker`` too (once).

    Parameters:
      broker(Broker): Where to declare them.
      registry(Registry): The handlers.
      codec(Codec): The bus's codec.
      queues(Queues): The bus's queues.
      instruments(Instruments): The bus's instruments, which watch each handler run.

    Raises:
      ConfigurationError: This Dramatiq does not run an async handler's actor as a coroutine.
    """
    broker.declare_queue(queues.default)
    broker.declare_queue(queues.partitioned)
    if any(is_async_handler(spec.instance) for spec in registry.handlers):
        # Imported here: the middleware package imports this module.
        from .middleware import install_asyncio

        install_asyncio(broker)
    return {
        spec.name: _declare_actor(broker, _body(spec, codec, registry, instruments), queues)
        for spec in registry.handlers
    }


def _body(
    spec: HandlerSpec, codec: Codec, registry: Registry, instruments: Instruments
) -> SyncHandlerActor | AsyncHandlerActor:
    kind = AsyncHandlerActor if is_async_handler(spec.instance) else SyncHandlerActor
    return kind(spec, codec, registry.events_of(spec), instruments)


class HandlerActor:
    """The function behind a handler's actor: decode the payload, handle it, map the result.

    A class rather than a closure so that middleware can tell the bus's actors apart
    from other actors on the same broker (see :func:`handler_actor`). This base holds what
    both kinds share; :class:`SyncHandlerActor` and :class:`AsyncHandlerActor` are called.

    Parameters:
      spec(HandlerSpec): The handler.
      codec(Codec): The bus's codec.
      event_classes(frozenset[type]): The event classes the handler is registered for: a
        message may carry any event class of the bus, and only these may reach the handler.
      instruments(Instruments): The bus's instruments, which watch each run.
    """

    def __init__(
        self, spec: HandlerSpec, codec: Codec, event_classes: frozenset[type], instruments: Instruments
    ) -> None:
        self.spec = spec
        self.codec = codec
        self.event_classes = event_classes
        self.instruments = instruments
        # Dramatiq names the actor's logger after these.
        self.__module__ = spec.handler_class.__module__
        self.__name__ = spec.handler_class.__qualname__

    def received(self, payload: JSONValue) -> object:
        """The event ``payload`` carries, refused unless this handler is registered for its class.

        Parameters:
          payload(JSONValue): The message's one argument.

        Raises:
          EventDecodeError: It cannot be decoded, or carries another handler's event.
        """
        # An EventDecodeError is in the actor's ``throws``: Dramatiq dead-letters it without
        # retries, and the DeadLetterReasons middleware logs it with the reason.
        event = self.codec.decode(payload)
        if type(event) not in self.event_classes:
            # A forged or misrouted message: another handler's event, or a signed payload replayed.
            raise EventDecodeError(f"{self.__name__} is not a handler of {type_name(type(event))}")
        return event

    def log_failure(self, failure: HandlerFailed) -> None:
        """Log a handler's ``Error(reason)`` in one line, escaped.

        Parameters:
          failure(HandlerFailed): What the ``Error`` was turned into.
        """
        # The handler's reason may quote the event, which a forged message controls.
        logger.warning("%s", escaped(str(failure), REASON_CHARACTERS))


class SyncHandlerActor(HandlerActor):
    """The actor function of a handler whose ``handle_event`` is a plain ``def``."""

    def __call__(self, payload: JSONValue) -> None:
        event = self.received(payload)
        context = _context_of(payload)
        try:
            with running(context), self.instruments.handling(self.spec, event, context):
                _checked(self.spec, _handled(self.spec.instance, event))
        except AlreadyHandled:
            return  # an inbox found the event handled already, and said so: a success, to acknowledge
        except HandlerFailed as exc:
            self.log_failure(exc)
            raise
        # The result is dropped on purpose: Dramatiq warns about non-None results without a
        # result backend, and a handler's return value is only meaningful to run_event().


class AsyncHandlerActor(HandlerActor):
    """The actor function of a handler whose ``handle_event`` is an ``async def``.

    Dramatiq gets the bound ``__call__``, not the instance: it runs an actor on its AsyncIO
    event loop when ``inspect.iscoroutinefunction`` is true of the actor's function, which
    it is of a bound coroutine method and not of an instance whose ``__call__`` is one.
    Dramatiq then blocks the worker thread until the coroutine ends, so the middleware
    (retries, time limits, ordering) sees the message as it sees a sync one.
    """

    async def __call__(self, payload: JSONValue) -> None:
        event = self.received(payload)
        context = _context_of(payload)
        try:
            # Set in this coroutine's own task context: concurrent handlers on the loop each see theirs.
            with running(context), self.instruments.handling(self.spec, event, context):
                _checked(self.spec, await self.spec.instance.handle_event(event))
        except AlreadyHandled:
            return  # an inbox found the event handled already, and said so: a success, to acknowledge
        except HandlerFailed as exc:
            self.log_failure(exc)
            raise


def handler_actor(actor: dramatiq.Actor[Any, Any] | None) -> HandlerActor | None:
    """The bus's body behind ``actor``, or None for another actor (or None).

    Parameters:
      actor(dramatiq.Actor | None): An actor of a broker.
    """
    fn: Any = getattr(actor, "fn", None)
    # An async handler's actor holds Dramatiq's async_to_sync wrapper of the bound __call__.
    fn = getattr(fn, "__wrapped__", fn)
    fn = getattr(fn, "__self__", fn)
    return fn if isinstance(fn, HandlerActor) else None


def is_handler_actor(broker: Broker, actor_name: str) -> bool:
    """Whether ``actor_name`` is one of the bus's handler actors on ``broker``.

    Parameters:
      broker(Broker): The broker.
      actor_name(str): The name a message gives.
    """
    return handler_actor(broker.actors.get(actor_name)) is not None


def _declare_actor(
    broker: Broker, body: SyncHandlerActor | AsyncHandlerActor, queues: Queues
) -> dramatiq.Actor[Any, Any]:
    spec = body.spec
    # Configuring again replaces the actor; Dramatiq refuses to declare a name twice.
    broker.actors.pop(spec.name, None)
    fn: Callable[..., Any] = body.__call__ if isinstance(body, AsyncHandlerActor) else body
    actor: dramatiq.Actor[Any, Any] = dramatiq.Actor(
        fn,
        broker=broker,
        actor_name=spec.name,
        queue_name=queues.default,
        priority=spec.priority,
        options=_with_decode_errors_thrown(spec.actor_options),
    )
    if isinstance(body, AsyncHandlerActor) and actor.fn is fn:
        # Dramatiq called it as a plain function: each message would make a coroutine and drop it.
        broker.actors.pop(spec.name, None)
        raise ConfigurationError(
            f"handler {spec.name}: this version of Dramatiq does not run a coroutine function as an async "
            "actor, so its async def handle_event would never run"
        )
    return actor


def _with_decode_errors_thrown(options: Mapping[str, Any]) -> dict[str, Any]:
    """Add EventDecodeError to ``throws``, so Dramatiq's Retries dead-letters it at once."""
    throws = options.get("throws") or ()
    if isinstance(throws, type):
        throws = (throws,)
    return {**options, "throws": (EventDecodeError, *throws)}
