"""run_event(): one event through one handler, in the caller, as a worker would run it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ..actors import handled
from ..bus import EventBus
from ..errors import HandlerFailed
from ..handler import Error, handler_name
from ..metadata import EventContext, context_for, new_metadata, running
from ..partition import partition_key
from ..registry import import_string, refuse_async_interested
from ._codec import codec_for

Status = Literal["processed", "not_interested", "failed"]


@dataclass(frozen=True)
class Outcome:
    """What a handler did with an event in :func:`run_event`.

    Build one with :meth:`processed`, :meth:`not_interested` or :meth:`failed` and
    compare with ``==``: ``assert run_event(event, Handler) == Outcome.processed(42)``.

    Parameters:
      status(str): ``"processed"``, ``"not_interested"`` or ``"failed"``.
      result(Any): What ``handle_event`` returned, when processed (None for no value).
      reason(Any): The ``Error``'s reason, when failed.
    """

    status: Status
    result: Any = None
    reason: Any = None

    @classmethod
    def processed(cls, result: Any = None) -> Outcome:
        """The handler handled the event and returned ``result``."""
        return cls("processed", result=result)

    @classmethod
    def not_interested(cls) -> Outcome:
        """The handler's ``interested`` said no; ``handle_event`` was not called."""
        return cls("not_interested")

    @classmethod
    def failed(cls, reason: Any) -> Outcome:
        """The handler returned ``Error(reason)``."""
        return cls("failed", reason=reason)

    def __repr__(self) -> str:
        if self.status == "processed":
            return f"Outcome.processed({self.result!r})"
        if self.status == "failed":
            return f"Outcome.failed({self.reason!r})"
        return "Outcome.not_interested()"


def run_event(
    event: object,
    handler: type | str,
    *,
    check: bool = False,
    bus: EventBus | None = None,
    context: EventContext | None = None,
) -> Outcome:
    """Run ``event`` through one handler, synchronously, in the caller.

    The event first makes the round trip through the bus's configured codec, so an event
    that could not reach a worker fails here too, even for a handler that is not
    interested (a typed codec is extended to an event class no handler is wired to yet;
    before configure(), a typed codec for the event's class is used). Then, as in
    production, ``interested`` sees the event as published and ``handle_event`` the
    decoded copy. Exceptions from the handler propagate. An ``async def handle_event`` is
    run to completion, also when run_event() is called from a coroutine (on a loop of its
    own, in another thread, while the caller waits).

    Parameters:
      event(object): The event.
      handler(type | str): The handler class, or its ``"pkg.module:Name"`` import path.
      check(bool): Raise HandlerFailed for an ``Error(reason)`` result instead of
        returning ``Outcome.failed(reason)``.
      bus(EventBus | None): The bus whose codec to use; the default bus if None.
      context(EventContext | None): What :func:`~dramatiq_eventbus.current_context` returns
        while the handler runs. Default: a new event id, correlated and caused as a publish()
        here would be, attempt 1, the handler's name, the event's partition key, and no message id.

    Returns:
      Outcome: ``Outcome.processed(result)``, ``Outcome.not_interested()`` or ``Outcome.failed(reason)``.

    Raises:
      HandlerFailed: With ``check``, for an ``Error(reason)`` result:
        ``FinanceEventHandler.handle_event failed: <reason>``.
      ConfigurationError: The handler's ``interested`` is an ``async def``.
      TypeError: A plain ``def handle_event`` returned a coroutine.
    """
    if bus is None:
        from .. import default_bus

        bus = default_bus
    handler_class = _handler_class(handler)
    instance = _instance(bus, handler_class)
    codec = codec_for(bus, type(event))
    received = codec.decode(codec.encode(event))
    interested = getattr(instance, "interested", None)
    refuse_async_interested(handler_name(handler_class), interested)  # as configure() does
    if interested is not None and not interested(event):
        return Outcome.not_interested()
    if context is None:
        context = context_for(new_metadata(), handler=handler_name(handler_class), partition_key=partition_key(event))
    # An async handle_event is awaited to its end, in this thread or, called from a coroutine, another.
    with running(context):
        result = handled(instance, received)
    if isinstance(result, Error):
        if check:
            raise HandlerFailed(handler_class.__qualname__, result.reason)
        return Outcome.failed(result.reason)
    return Outcome.processed(result)


def _instance(bus: EventBus, handler_class: type) -> Any:
    """The handler as the bus makes it: its configured instance, else one from its
    ``handler_factory``, else the class called with no arguments."""
    if bus.is_configured:
        config = bus.config
        for spec in config.registry.handlers:
            if spec.handler_class is handler_class:
                return spec.instance
        factory = config.arguments.get("handler_factory")
        if factory is not None:
            return factory(handler_class)
    return handler_class()


def _handler_class(handler: type | str) -> type:
    resolved = import_string(handler) if isinstance(handler, str) else handler
    if not isinstance(resolved, type) or not callable(getattr(resolved, "handle_event", None)):
        raise TypeError(f"handler must be a handler class or its 'pkg.module:Name' path, not {handler!r}")
    return resolved
