"""OpenTelemetry tracing of a bus: a PRODUCER span per published event, a CONSUMER span per handler run.

Switch it on with ``EventBusInstrumentor().instrument()`` (or run the process under
``opentelemetry-instrument``, which finds the instrumentor through its entry point), in
every publisher and every worker. Each event's producer span is injected, with the globally
configured propagator (W3C ``traceparent`` and ``tracestate`` by default), into the event's
trace context, which travels signed in each of its messages; each handler run's consumer
span is its child, and is current while the handler runs, so that what the handler does
(a query, an HTTP call, a publish()) is traced inside it. One trace thus goes from the
request that published an event through every handler, the events they publish and
their handlers.

The spans follow the OpenTelemetry messaging semantic conventions; what the bus adds
goes under ``eventbus.*``. See docs/guides/observability.md.

Needs the ``opentelemetry`` extra: ``pip install 'dramatiq-eventbus[opentelemetry]'``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Collection, Mapping, Sequence
from contextvars import Token
from types import TracebackType
from typing import TYPE_CHECKING, Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]  # its module is all "type: ignore"
    from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, TracerProvider
except ImportError as missing:  # pragma: no cover - checked by a test that hides opentelemetry
    raise ImportError(
        "dramatiq_eventbus.contrib.opentelemetry needs OpenTelemetry: "
        "pip install 'dramatiq-eventbus[opentelemetry]'"
        f" ({missing})"
    ) from missing

from ..codecs.names import type_name
from ..errors import AlreadyHandled
from ..instrumentation import Instrument
from ..metadata import MAX_TRACE_ENTRIES, MAX_TRACE_NAME_CHARACTERS, MAX_TRACE_VALUE_CHARACTERS

if TYPE_CHECKING:
    from ..bus import EventBus
    from ..metadata import EventContext, EventMetadata
    from ..registry import HandlerSpec

__all__ = ["EventBusInstrumentor", "TracingInstrument"]

logger = logging.getLogger(__name__)

# Semantic conventions (messaging is still "development" there: the names are spelled out here
# rather than imported from opentelemetry.semconv._incubating, whose module paths move).
MESSAGING_SYSTEM = "messaging.system"
MESSAGING_OPERATION_TYPE = "messaging.operation.type"
MESSAGING_OPERATION_NAME = "messaging.operation.name"
MESSAGING_DESTINATION_NAME = "messaging.destination.name"
MESSAGING_CONSUMER_GROUP_NAME = "messaging.consumer.group.name"
MESSAGING_MESSAGE_ID = "messaging.message.id"
MESSAGING_CONVERSATION_ID = "messaging.message.conversation_id"
ERROR_TYPE = "error.type"

# What the bus adds.
EVENT_TYPE = "eventbus.event_type"
EVENT_ID = "eventbus.event_id"
CAUSATION_ID = "eventbus.causation_id"
PARTITION_KEY = "eventbus.partition_key"
HANDLER = "eventbus.handler"
HANDLERS = "eventbus.handlers"
HANDLER_COUNT = "eventbus.handler_count"
NOT_INTERESTED_COUNT = "eventbus.not_interested_count"
BATCH_SIZE = "eventbus.publish.batch_size"
ATTEMPT = "eventbus.attempt"
OUTCOME = "eventbus.outcome"
ABANDONED = "eventbus.publish.abandoned"

#: The ``messaging.system`` of a broker, by the Dramatiq broker class it is (or derives from).
_SYSTEMS = {"RabbitmqBroker": "rabbitmq", "RedisBroker": "redis"}
#: The ``messaging.system`` of any other broker (the StubBroker of tests...).
DEFAULT_SYSTEM = "dramatiq"


def _version() -> str | None:
    try:
        from importlib.metadata import version

        return version("dramatiq-eventbus")
    except Exception:  # pragma: no cover - running from a checkout that is not installed
        return None


class TracingInstrument(Instrument):
    """The instrument that traces one bus; :class:`EventBusInstrumentor` adds and removes it.

    Add it yourself (``bus.add_instrument(TracingInstrument(bus))``) to trace a bus other
    than the default one without the instrumentor.

    A producer span lives from ``before_publish`` to ``after_publish``, kept meanwhile by
    event id. A span whose ``after_publish`` never came (the instrument removed during the
    call) is ended once ``max_pending`` others wait, or once it is ``pending_seconds`` old,
    with ``eventbus.publish.abandoned`` set: nothing is kept for ever.

    Parameters:
      bus(EventBus): The bus it traces, asked for its broker (``messaging.system``).
      tracer_provider(TracerProvider | None): Where its tracer comes from; the global one if None.
      max_pending(int): The most producer spans waiting for their ``after_publish``.
      pending_seconds(float): How long one may wait.
    """

    def __init__(
        self,
        bus: EventBus,
        tracer_provider: TracerProvider | None = None,
        *,
        max_pending: int = 10_000,
        pending_seconds: float = 300.0,
    ) -> None:
        self.bus = bus
        self.tracer: Tracer = trace.get_tracer(__name__, _version(), tracer_provider)
        self.max_pending = max_pending
        self.pending_seconds = pending_seconds
        self._pending: OrderedDict[str, tuple[Span, float]] = OrderedDict()
        self._lock = threading.Lock()
        self._names: dict[type, tuple[str, str]] = {}
        self._systems: dict[type, str] = {}

    # -- publishing ---------------------------------------------------------------------------

    def before_publish(
        self,
        event: object,
        metadata: EventMetadata,
        handlers: Sequence[HandlerSpec],
        not_interested: Sequence[HandlerSpec],
        partition_key: str | None,
    ) -> Mapping[str, str] | None:
        short, wire = self._event_names(type(event))
        attributes = self._messaging("send", wire)
        attributes[MESSAGING_CONVERSATION_ID] = metadata.correlation_id
        attributes[EVENT_ID] = metadata.event_id
        attributes[HANDLER_COUNT] = len(handlers)
        attributes[NOT_INTERESTED_COUNT] = len(not_interested)
        if handlers:
            attributes[HANDLERS] = [spec.name for spec in handlers]
        if partition_key is not None:
            attributes[PARTITION_KEY] = partition_key
        if metadata.causation_id is not None:
            attributes[CAUSATION_ID] = metadata.causation_id
        # A child of whatever span is current (the request's, the handler's); not made current.
        span = self.tracer.start_span(f"send {short}", kind=SpanKind.PRODUCER, attributes=attributes)
        now = time.monotonic()
        with self._lock:
            self._pending[metadata.event_id] = (span, now)
            expired = self._expired(now)
        for old in expired:
            old.set_attribute(ABANDONED, True)
            old.end()
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        return _bounded(carrier)

    def after_publish(self, metadata: Sequence[EventMetadata], exception: BaseException | None) -> None:
        spans = []
        with self._lock:
            for meta in metadata:
                found = self._pending.pop(meta.event_id, None)
                if found is not None:
                    spans.append(found[0])
        for span in spans:
            if len(metadata) > 1:
                span.set_attribute(BATCH_SIZE, len(metadata))
            if exception is not None:
                _failed(span, exception)
            span.end()

    def _expired(self, now: float) -> list[Span]:
        """Pop the spans waiting too long, or beyond ``max_pending``; the lock is held."""
        pending = self._pending
        expired = []
        while pending:
            event_id, (span, started) = next(iter(pending.items()))
            if len(pending) <= self.max_pending and now - started <= self.pending_seconds:
                break
            del pending[event_id]
            expired.append(span)
        return expired

    def end_pending(self) -> None:
        """End every producer span still waiting for its ``after_publish`` (on uninstrument)."""
        with self._lock:
            spans = [span for span, _ in self._pending.values()]
            self._pending.clear()
        for span in spans:
            span.set_attribute(ABANDONED, True)
            span.end()

    # -- handling -----------------------------------------------------------------------------

    def handling(self, handler: HandlerSpec, event: object, context: EventContext | None) -> _ConsumerSpan:
        short, wire = self._event_names(type(event))
        attributes = self._messaging("process", wire)
        attributes[MESSAGING_CONSUMER_GROUP_NAME] = handler.name
        attributes[HANDLER] = handler.name
        parent = otel_context.Context()  # a message without a trace context starts a new trace
        if context is not None:
            attributes[EVENT_ID] = context.event_id
            attributes[MESSAGING_CONVERSATION_ID] = context.correlation_id
            attributes[ATTEMPT] = context.attempt
            if context.causation_id is not None:
                attributes[CAUSATION_ID] = context.causation_id
            if context.message_id is not None:
                attributes[MESSAGING_MESSAGE_ID] = context.message_id
            if context.partition_key is not None:
                attributes[PARTITION_KEY] = context.partition_key
            if context.trace_context:
                parent = _extracted(context.trace_context)
        span = self.tracer.start_span(f"process {short}", context=parent, kind=SpanKind.CONSUMER, attributes=attributes)
        return _ConsumerSpan(span, trace.set_span_in_context(span, parent))

    # -- names --------------------------------------------------------------------------------

    def _messaging(self, operation: str, wire_name: str) -> dict[str, Any]:
        """The attributes both kinds of span start with."""
        return {
            MESSAGING_SYSTEM: self._system(),
            MESSAGING_OPERATION_TYPE: operation,
            MESSAGING_OPERATION_NAME: operation,
            MESSAGING_DESTINATION_NAME: wire_name,
            EVENT_TYPE: wire_name,
        }

    def _event_names(self, cls: type) -> tuple[str, str]:
        """The class's short name (for span names) and its wire name (for attributes)."""
        names = self._names.get(cls)
        if names is None:
            names = self._names[cls] = (cls.__qualname__, _wire_name(self.bus, cls))
        return names

    def _system(self) -> str:
        try:
            broker_class = type(self.bus.broker)
        except Exception:
            return DEFAULT_SYSTEM
        system = self._systems.get(broker_class)
        if system is None:
            system = next((_SYSTEMS[c.__name__] for c in broker_class.__mro__ if c.__name__ in _SYSTEMS), None)
            system = self._systems[broker_class] = system or DEFAULT_SYSTEM
        return system


class _ConsumerSpan:
    """A handler run's span, current in the run, ended with its outcome."""

    __slots__ = ("context", "span", "token")

    def __init__(self, span: Span, context: otel_context.Context) -> None:
        self.span = span
        self.context = context
        self.token: Token[otel_context.Context] | None = None

    def __enter__(self) -> Span:
        self.token = otel_context.attach(self.context)
        return self.span

    def __exit__(
        self, kind: type[BaseException] | None, exception: BaseException | None, traceback: TracebackType | None
    ) -> None:
        span = self.span
        try:
            if exception is None:
                span.set_attribute(OUTCOME, "success")
            elif isinstance(exception, AlreadyHandled):
                span.set_attribute(OUTCOME, "duplicate")  # acknowledged as a success
            else:
                span.set_attribute(OUTCOME, "failure")
                _failed(span, exception)
        finally:
            span.end()
            if self.token is not None:
                otel_context.detach(self.token)


def _failed(span: Span, exception: BaseException) -> None:
    cls = type(exception)
    span.set_attribute(ERROR_TYPE, f"{cls.__module__}.{cls.__qualname__}")
    span.record_exception(exception)
    span.set_status(Status(StatusCode.ERROR, str(exception)[:1024]))


def _extracted(trace_context: Mapping[str, str]) -> otel_context.Context:
    """The context a message's trace context carries; an empty one (a new trace) if it is garbage.

    A worker has checked the trace context's shape (see metadata.trace_context_problem), not
    its contents, which a publisher without the secret key may have written.
    """
    try:
        return propagate.extract(trace_context, context=otel_context.Context())
    except Exception:
        logger.debug("A message's trace context could not be read; its handler run starts a new trace", exc_info=True)
        return otel_context.Context()


def _bounded(carrier: Mapping[str, str]) -> dict[str, str] | None:
    """The entries of ``carrier`` a worker accepts (see metadata.trace_context_problem), or None.

    An entry the bus would refuse (an overlong ``baggage``...) is left out alone, rather than
    losing the ``traceparent`` with it.
    """
    kept: dict[str, str] = {}
    for name, value in carrier.items():
        if len(kept) == MAX_TRACE_ENTRIES:
            break
        if (
            type(name) is str
            and 0 < len(name) <= MAX_TRACE_NAME_CHARACTERS
            and name.isprintable()
            and type(value) is str
            and len(value) <= MAX_TRACE_VALUE_CHARACTERS
            and value.isprintable()
        ):
            kept[name] = value
        else:
            logger.warning("The trace context entry %r does not fit in a message; it is left out", str(name)[:64])
    return kept or None


def _wire_name(bus: EventBus, cls: type) -> str:
    """The name the bus's codec gives ``cls`` on the wire (register_type may rename it)."""
    try:
        named = getattr(bus.config.codec, "wire_name", None)
        if callable(named):
            found = named(cls)
            if isinstance(found, str):
                return found
    except Exception:
        pass
    return type_name(cls)


class EventBusInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Traces a bus (the default one unless told) with OpenTelemetry.

    ``EventBusInstrumentor().instrument()`` adds a :class:`TracingInstrument` to the bus,
    ``uninstrument()`` removes it: uninstrumented, the bus has no instrument and pays nothing.
    ``opentelemetry-instrument`` calls ``instrument()`` through the ``opentelemetry_instrumentor``
    entry point of the package.

    ``instrument()`` takes:
      tracer_provider(TracerProvider | None): Where spans go; the global one if None.
      bus(EventBus | None): The bus to trace; ``dramatiq_eventbus.default_bus`` if None.
    """

    def __init__(self) -> None:
        # BaseInstrumentor is a singleton: __init__ runs on every EventBusInstrumentor() call.
        if not hasattr(self, "_added"):
            self._added: list[TracingInstrument] = []

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("dramatiq-eventbus",)

    def _instrument(self, **kwargs: Any) -> None:
        bus = kwargs.get("bus")
        if bus is None:
            from .. import default_bus

            bus = default_bus
        instrument = TracingInstrument(bus, kwargs.get("tracer_provider"))
        bus.add_instrument(instrument)
        self._added.append(instrument)

    def _uninstrument(self, **kwargs: Any) -> None:
        added, self._added = self._added, []
        for instrument in added:
            instrument.bus.remove_instrument(instrument)
            instrument.end_pending()

    @property
    def instruments(self) -> tuple[TracingInstrument, ...]:
        """The instruments ``instrument()`` added and ``uninstrument()`` will remove."""
        return tuple(self._added)
