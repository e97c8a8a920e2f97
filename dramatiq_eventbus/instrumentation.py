"""Instruments: what watches a bus's publish() calls and handler runs, for traces and metrics.

An :class:`Instrument` is to the bus what a Dramatiq middleware is to a broker: a class
whose hooks are no-ops until overridden, added to a bus with :meth:`EventBus.add_instrument
<dramatiq_eventbus.EventBus.add_instrument>`. The OpenTelemetry and Prometheus integrations
in ``dramatiq_eventbus.contrib`` are instruments; the core imports neither.

Without instruments, publish() and the actor body pay one check of an empty tuple.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from typing import TYPE_CHECKING

from .metadata import EventContext, EventMetadata, trace_context_problem

if TYPE_CHECKING:
    from .registry import HandlerSpec


class Instrument:
    """Watches a bus. Override the hooks you need; each one here does nothing.

    A hook runs on the path it watches: keep it cheap, and let it raise nothing (what one
    raises is logged and ignored, so that a broken exporter never fails a publish() or a
    handler).
    """

    def before_publish(
        self,
        event: object,
        metadata: EventMetadata,
        handlers: Sequence[HandlerSpec],
        not_interested: Sequence[HandlerSpec],
        partition_key: str | None,
    ) -> Mapping[str, str] | None:
        """Called by publish() for each event, once its handlers were asked, before anything is sent.

        Parameters:
          event(object): The event.
          metadata(EventMetadata): Its id, time, correlation and causation.
          handlers(Sequence[HandlerSpec]): The handlers that will get it (empty: none wants it).
          not_interested(Sequence[HandlerSpec]): The registered handlers whose ``interested`` said no.
          partition_key(str | None): Its partition key.

        Returns:
          Mapping[str, str] | None: Entries for the event's trace context (e.g. W3C
          ``traceparent``), carried in its messages to every handler, signed with them, and
          given back to :meth:`handling` in the worker; None adds nothing.
        """
        return None

    def after_publish(self, metadata: Sequence[EventMetadata], exception: BaseException | None) -> None:
        """Called once a publish() call handed its events over, or failed to.

        "Handed over" is sent to the broker, or taken by what holds them back: a
        ``deferred()`` block, an open transaction or outbox, a test mailbox.

        Parameters:
          metadata(Sequence[EventMetadata]): Each event's metadata, in the call's order, with the
            trace context the instruments added; a call that failed early has events that never
            reached :meth:`before_publish`.
          exception(BaseException | None): What failed the call, or None.
        """

    def handling(
        self, handler: HandlerSpec, event: object, context: EventContext | None
    ) -> AbstractContextManager[object] | None:
        """Called in a worker as a handler is about to run; the context manager returned is
        entered around the run, in the thread or task that runs it (so what it makes current,
        such as a span, is current in the handler).

        The run ends in the context manager's exit: without an exception for a success, with
        the handler's exception (:class:`~.errors.HandlerFailed` for an ``Error`` result), or
        with :class:`~.errors.AlreadyHandled` when an inbox found the event handled already
        (the message is then acknowledged as a success). Whether a failure is retried or
        dead-lettered is Dramatiq's to decide afterwards: a Dramatiq middleware sees that.

        Parameters:
          handler(HandlerSpec): The handler.
          event(object): The decoded event.
          context(EventContext | None): The event's context (None for a message sent without metadata).

        Returns:
          AbstractContextManager | None: Entered around the run; None watches nothing.
        """
        return None

    def refused(self, queue_name: str, reason: str) -> None:
        """Called when a consumer of the bus's brokers refused a message before any actor saw it
        (too large, unreadable, unsigned, for an unknown actor...) and dead-lettered it.

        Parameters:
          queue_name(str): The queue it came from.
          reason(str): Why, escaped and bounded.
        """


class Instruments:
    """A bus's instruments, and the calls of each hook on all of them.

    Read without a lock: :attr:`active` is a tuple replaced whole, so a publish() sees the
    instruments before or after a change, never half of one.
    """

    def __init__(self) -> None:
        self.logger = logging.getLogger(f"{__name__}.{type(self).__name__}")
        self.active: tuple[Instrument, ...] = ()
        self._lock = threading.Lock()

    def add(self, instrument: Instrument) -> None:
        """Add ``instrument``; adding one already there does nothing.

        Raises:
          TypeError: It is not an :class:`Instrument`.
        """
        if not isinstance(instrument, Instrument):
            raise TypeError(
                f"an instrument must be an instance of a subclass of dramatiq_eventbus.Instrument, "
                f"not {type(instrument).__qualname__}"
            )
        with self._lock:
            if instrument not in self.active:
                self.active = (*self.active, instrument)

    def remove(self, instrument: Instrument) -> None:
        """Remove ``instrument``; one not there is ignored."""
        with self._lock:
            self.active = tuple(i for i in self.active if i is not instrument)

    def before_publish(
        self,
        event: object,
        metadata: EventMetadata,
        handlers: Sequence[HandlerSpec],
        not_interested: Sequence[HandlerSpec],
        partition_key: str | None,
    ) -> EventMetadata:
        """Call every instrument's ``before_publish``; return ``metadata`` with the trace context they gave."""
        trace_context: dict[str, str] = {}
        for instrument in self.active:
            try:
                entries = instrument.before_publish(event, metadata, handlers, not_interested, partition_key)
            except Exception:
                self.logger.exception("%r failed in before_publish; the event is published without it", instrument)
                continue
            if entries:
                trace_context.update(entries)
        if not trace_context:
            return metadata
        problem = trace_context_problem(trace_context)
        if problem is not None:
            # A worker would refuse the message: published without it, and said so.
            self.logger.error("The trace context the instruments gave %s; the event is published without one", problem)
            return metadata
        return metadata._replace(trace_context=trace_context)

    def after_publish(self, metadata: Sequence[EventMetadata], exception: BaseException | None) -> None:
        """Call every instrument's ``after_publish``."""
        for instrument in self.active:
            try:
                instrument.after_publish(metadata, exception)
            except Exception:
                self.logger.exception("%r failed in after_publish", instrument)

    def handling(
        self, handler: HandlerSpec, event: object, context: EventContext | None
    ) -> AbstractContextManager[object]:
        """The instruments' context managers around one handler run, entered in order."""
        active = self.active
        if not active:
            return _NOTHING
        return self._handling(active, handler, event, context)

    @contextmanager
    def _handling(
        self, active: tuple[Instrument, ...], handler: HandlerSpec, event: object, context: EventContext | None
    ) -> Iterator[None]:
        with ExitStack() as stack:
            for instrument in active:
                try:
                    entered = instrument.handling(handler, event, context)
                    if entered is not None:
                        stack.enter_context(_guarded(self.logger, instrument, entered))
                except Exception:
                    self.logger.exception("%r failed in handling; the handler runs without it", instrument)
            yield

    def refused(self, queue_name: str, reason: str) -> None:
        """Call every instrument's ``refused``."""
        for instrument in self.active:
            try:
                instrument.refused(queue_name, reason)
            except Exception:
                self.logger.exception("%r failed in refused", instrument)


_NOTHING: AbstractContextManager[object] = nullcontext()


@contextmanager
def _guarded(logger: logging.Logger, instrument: Instrument, entered: AbstractContextManager[object]) -> Iterator[None]:
    """``entered``, with what its exit raises logged instead of replacing the handler's outcome."""
    entered.__enter__()
    try:
        yield
    except BaseException as exc:
        try:
            entered.__exit__(type(exc), exc, exc.__traceback__)
        except Exception:
            logger.exception("%r failed at the end of a handler run", instrument)
        # Raised whether or not the instrument suppressed it: an instrument never decides a run's outcome.
        raise
    else:
        try:
            entered.__exit__(None, None, None)
        except Exception:
            logger.exception("%r failed at the end of a handler run", instrument)
