"""OpenTelemetry tracing (dramatiq_eventbus.contrib.opentelemetry) on a StubBroker with an in-process worker.

Spans go to the SDK's InMemorySpanExporter of a TracerProvider of the test's own (the global
provider is left alone); the propagator is the global default, W3C trace context and baggage.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from dramatiq_eventbus import EventBus, EventContext, Handler
from dramatiq_eventbus.contrib.opentelemetry import EventBusInstrumentor, TracingInstrument
from dramatiq_eventbus.errors import AlreadyHandled, EventEncodeError, HandlerFailed
from dramatiq_eventbus.handler import Error
from dramatiq_eventbus.metadata import TRACE_CONTEXT, EventMetadata, new_metadata
from dramatiq_eventbus.registry import HandlerSpec
from dramatiq_eventbus.testing import stub_worker

#: What each handler saw as the current span: (handler, outcome, span id, trace id).
SEEN: list[tuple[str, str, int, int]] = []
BUS: list[EventBus] = []


@dataclass(frozen=True)
class Placed:
    order_id: str
    outcome: str = "ok"

    def partition_key(self) -> str:
        return self.order_id


@dataclass(frozen=True)
class Shipped:
    order_id: str


@dataclass(frozen=True)
class Unwanted:
    """No handler is registered for it."""


def seen(handler: str, outcome: str) -> None:
    context = trace.get_current_span().get_span_context()
    SEEN.append((handler, outcome, context.span_id, context.trace_id))


class Billing(Handler):
    """Publishes Shipped, the follow-up, when it succeeds."""

    def handle_event(self, event: Placed) -> Error | None:
        seen("billing", event.outcome)
        if event.outcome == "error":
            return Error("no money")
        if event.outcome == "raise":
            raise RuntimeError("boom")
        if event.outcome == "duplicate":
            raise AlreadyHandled("Billing", "e1")
        BUS[0].publish(Shipped(event.order_id))
        return None


class Picky(Handler):
    def interested(self, event: Placed) -> bool:
        return event.outcome == "picky"

    def handle_event(self, event: Placed) -> None:
        seen("picky", event.outcome)


class Shipping(Handler):
    def handle_event(self, event: Shipped) -> None:
        seen("shipping", "ok")


class AsyncShipping(Handler):
    async def handle_event(self, event: Shipped) -> None:
        seen("async shipping", "ok")


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def configured(*shipping: type[Handler]) -> EventBus:
    bus = EventBus().configure(
        handlers={Placed: [Billing, Picky], Shipped: list(shipping or [Shipping])},
        broker="stub",
        default_actor_options={"max_retries": 0},
    )
    BUS[:] = [bus]
    SEEN.clear()
    return bus


@pytest.fixture
def bus(provider: TracerProvider) -> Iterator[EventBus]:
    bus = configured()
    instrumentor = EventBusInstrumentor()
    instrumentor.instrument(bus=bus, tracer_provider=provider)
    try:
        yield bus
    finally:
        instrumentor.uninstrument()


def spans(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    found = {span.name: span for span in exporter.get_finished_spans()}
    assert len(found) == len(exporter.get_finished_spans()), [s.name for s in exporter.get_finished_spans()]
    return found


def parent_of(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def span_id(span: ReadableSpan) -> int:
    context = span.get_span_context()
    assert context is not None
    return context.span_id


def trace_id(span: ReadableSpan) -> int:
    context = span.get_span_context()
    assert context is not None
    return context.trace_id


def run(bus: EventBus, *events: object, raises: type[BaseException] | None = None) -> None:
    with stub_worker(bus) as worker:
        bus.publish(list(events))
        if raises is None:
            worker.drain()
        else:
            with pytest.raises(raises):
                worker.drain()


def test_one_trace_from_the_request_through_a_handler_its_follow_up_and_the_follow_up_s_handler(
    bus: EventBus, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    with provider.get_tracer("test").start_as_current_span("GET /orders", kind=SpanKind.SERVER):
        run(bus, Placed("o1"))
    found = spans(exporter)
    assert set(found) == {"GET /orders", "send Placed", "process Placed", "send Shipped", "process Shipped"}
    request, send, process = found["GET /orders"], found["send Placed"], found["process Placed"]
    follow_up, follow_up_process = found["send Shipped"], found["process Shipped"]
    assert len({trace_id(span) for span in found.values()}) == 1
    assert parent_of(send) == span_id(request)
    assert parent_of(process) == span_id(send)
    assert parent_of(follow_up) == span_id(process)  # published in the handler, whose span is current
    assert parent_of(follow_up_process) == span_id(follow_up)
    assert [s.kind for s in (send, process, follow_up, follow_up_process)] == [
        SpanKind.PRODUCER,
        SpanKind.CONSUMER,
        SpanKind.PRODUCER,
        SpanKind.CONSUMER,
    ]
    # Each handler ran with its own consumer span current.
    assert sorted(SEEN) == sorted(
        [
            ("billing", "ok", span_id(process), trace_id(process)),
            ("shipping", "ok", span_id(follow_up_process), trace_id(follow_up_process)),
        ]
    )
    # The producer span ended as publish() returned, before the handler ran.
    assert send.end_time is not None and process.start_time is not None and send.end_time <= process.start_time


def test_the_spans_carry_the_messaging_conventions_and_the_bus_s_metadata(
    bus: EventBus, exporter: InMemorySpanExporter
) -> None:
    with stub_worker(bus) as worker:
        event_id = bus.publish(Placed("o1"))
        worker.drain()
    found = spans(exporter)
    send = found["send Placed"].attributes
    process = found["process Placed"].attributes
    follow_up = found["send Shipped"].attributes
    follow_up_process = found["process Shipped"].attributes
    assert send is not None and process is not None and follow_up is not None and follow_up_process is not None
    wire = f"{__name__}:Placed"
    assert dict(send) == {
        "messaging.system": "dramatiq",  # a StubBroker
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": wire,
        "messaging.message.conversation_id": event_id,
        "eventbus.event_type": wire,
        "eventbus.event_id": event_id,
        "eventbus.handler_count": 1,
        "eventbus.handlers": (f"{__name__}.Billing",),
        "eventbus.not_interested_count": 1,  # Picky
        "eventbus.partition_key": "o1",
    }
    message_id = process["messaging.message.id"]
    assert isinstance(message_id, str) and message_id
    assert dict(process) == {
        "messaging.system": "dramatiq",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": wire,
        "messaging.consumer.group.name": f"{__name__}.Billing",
        "messaging.message.id": message_id,
        "messaging.message.conversation_id": event_id,
        "eventbus.event_type": wire,
        "eventbus.event_id": event_id,
        "eventbus.handler": f"{__name__}.Billing",
        "eventbus.attempt": 1,
        "eventbus.partition_key": "o1",
        "eventbus.outcome": "success",
    }
    # The follow-up is correlated with the first event and caused by it.
    assert follow_up["messaging.message.conversation_id"] == event_id
    assert follow_up["eventbus.causation_id"] == event_id
    assert "eventbus.partition_key" not in follow_up
    assert follow_up_process["eventbus.causation_id"] == event_id
    assert follow_up_process["eventbus.event_id"] == follow_up["eventbus.event_id"]
    assert follow_up_process["eventbus.outcome"] == "success"
    assert all(span.status.status_code is StatusCode.UNSET for span in found.values())


def test_a_batch_has_a_producer_span_per_event_and_an_event_no_handler_wants_has_one_too(
    bus: EventBus, exporter: InMemorySpanExporter
) -> None:
    bus.publish([Placed("a", "picky"), Placed("b", "error"), Unwanted()])
    sends = [span for span in exporter.get_finished_spans() if span.kind is SpanKind.PRODUCER]
    assert [span.name for span in sends] == ["send Placed", "send Placed", "send Unwanted"]
    assert [dict(span.attributes or {})["eventbus.publish.batch_size"] for span in sends] == [3, 3, 3]
    assert [dict(span.attributes or {})["eventbus.handler_count"] for span in sends] == [2, 1, 0]
    assert [dict(span.attributes or {})["eventbus.not_interested_count"] for span in sends] == [0, 1, 0]


@pytest.mark.parametrize(
    ("outcome", "exception"), [("error", HandlerFailed), ("raise", RuntimeError)], ids=["Error", "raise"]
)
def test_a_failed_run_is_recorded_on_its_span(
    bus: EventBus, exporter: InMemorySpanExporter, outcome: str, exception: type[Exception]
) -> None:
    run(bus, Placed("o1", outcome), raises=exception)
    process = spans(exporter)["process Placed"]
    attributes = dict(process.attributes or {})
    assert attributes["eventbus.outcome"] == "failure"
    assert attributes["error.type"] == f"{exception.__module__}.{exception.__qualname__}"
    assert process.status.status_code is StatusCode.ERROR
    assert process.status.description and (
        "no money" in process.status.description or "boom" in process.status.description
    )
    (recorded,) = [e for e in process.events if e.name == "exception"]
    assert str(dict(recorded.attributes or {})["exception.type"]).endswith(exception.__qualname__)


def test_a_run_an_inbox_found_done_is_a_duplicate_not_an_error(bus: EventBus, exporter: InMemorySpanExporter) -> None:
    run(bus, Placed("o1", "duplicate"))
    process = spans(exporter)["process Placed"]
    assert dict(process.attributes or {})["eventbus.outcome"] == "duplicate"
    assert process.status.status_code is StatusCode.UNSET
    assert not process.events


def test_a_failed_publish_ends_its_producer_spans_with_the_error(bus: EventBus, exporter: InMemorySpanExporter) -> None:
    with pytest.raises(EventEncodeError):
        bus.publish([Placed("o1"), Placed("o2", object())])  # type: ignore[arg-type]
    sends = exporter.get_finished_spans()
    assert len(sends) == 2
    for span in sends:
        assert span.status.status_code is StatusCode.ERROR
        assert dict(span.attributes or {})["error.type"] == "dramatiq_eventbus.errors.EventEncodeError"
        assert [e.name for e in span.events] == ["exception"]


def test_the_trace_context_is_the_producer_span_s_in_w3c_form_with_the_baggage(
    bus: EventBus, exporter: InMemorySpanExporter
) -> None:
    from dramatiq.brokers.stub import StubBroker
    from dramatiq.message import Message

    token = otel_context.attach(baggage.set_baggage("tenant", "acme"))
    try:
        bus.publish(Placed("o1"))
    finally:
        otel_context.detach(token)
    broker = bus.broker
    assert isinstance(broker, StubBroker)
    (body,) = [body for q in broker.queues.values() for body in q.queue]
    carried = Message.decode(body).options[TRACE_CONTEXT]
    (send,) = exporter.get_finished_spans()
    context = send.get_span_context()
    assert context is not None
    traceparent = f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    assert carried == {"traceparent": traceparent, "baggage": "tenant=acme"}


def test_an_entry_a_worker_would_refuse_is_left_out_alone(bus: EventBus, provider: TracerProvider) -> None:
    token = otel_context.attach(baggage.set_baggage("big", "x" * 2000))
    try:
        instrument = TracingInstrument(bus, provider)
        carried = instrument.before_publish(Placed("o1"), new_metadata(), (), (), None)
    finally:
        otel_context.detach(token)
    assert carried is not None and set(carried) == {"traceparent"}


def spec_of(bus: EventBus, handler: type[Handler]) -> HandlerSpec:
    return next(spec for spec in bus.config.registry.handlers_for(Placed) if spec.handler_class is handler)


def context_with(trace_context: Any) -> EventContext:
    return EventContext(
        event_id="e1",
        correlation_id="c1",
        causation_id=None,
        published_at=datetime.now(UTC),
        attempt=2,
        handler="h",
        partition_key=None,
        message_id="m1",
        trace_context=trace_context,
    )


@pytest.mark.parametrize(
    "forged",
    [
        {"traceparent": "garbage"},
        {"traceparent": "00-" + "0" * 32 + "-" + "0" * 16 + "-01"},  # the invalid all-zero ids
        {"traceparent": "ff-" + "a" * 32 + "-" + "b" * 16 + "-01"},  # the forbidden version
        {"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01-extra" * 100},
        {"tracestate": "=,=,,", "baggage": "%%%;;==,,"},
        {},
        None,
    ],
)
def test_a_forged_trace_context_starts_a_new_trace_and_never_raises(
    bus: EventBus, provider: TracerProvider, exporter: InMemorySpanExporter, forged: Any
) -> None:
    instrument = TracingInstrument(bus, provider)
    worker_span = provider.get_tracer("test").start_as_current_span("the worker's own")
    with worker_span, instrument.handling(spec_of(bus, Billing), Placed("o1"), context_with(forged)):
        current = trace.get_current_span()
    process = spans(exporter)["process Placed"]
    assert process.parent is None  # not the worker's span, nor anything forged
    assert current.get_span_context() == process.get_span_context()
    assert dict(process.attributes or {})["eventbus.attempt"] == 2


def test_a_message_without_metadata_gets_a_root_span_with_what_is_known(
    bus: EventBus, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    instrument = TracingInstrument(bus, provider)
    with instrument.handling(spec_of(bus, Billing), Placed("o1"), None):
        pass
    process = spans(exporter)["process Placed"]
    assert process.parent is None
    assert dict(process.attributes or {})["eventbus.handler"] == f"{__name__}.Billing"
    assert "eventbus.event_id" not in dict(process.attributes or {})


def test_an_async_handler_runs_in_its_consumer_span(provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    bus = configured(AsyncShipping)
    instrumentor = EventBusInstrumentor()
    instrumentor.instrument(bus=bus, tracer_provider=provider)
    try:
        run(bus, Placed("o1"))
    finally:
        instrumentor.uninstrument()
    found = spans(exporter)
    process = found["process Shipped"]
    assert parent_of(process) == span_id(found["send Shipped"])
    assert ("async shipping", "ok", span_id(process), trace_id(process)) in SEEN
    assert dict(process.attributes or {})["eventbus.outcome"] == "success"


def test_uninstrument_takes_the_instrument_off_the_bus(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    bus = configured()
    instrumentor = EventBusInstrumentor()
    assert instrumentor.instrumentation_dependencies() == ("dramatiq-eventbus",)
    assert not bus.instruments.active
    instrumentor.instrument(bus=bus, tracer_provider=provider)
    try:
        (instrument,) = bus.instruments.active
        assert isinstance(instrument, TracingInstrument)
        assert EventBusInstrumentor() is instrumentor and instrumentor.instruments == (instrument,)
    finally:
        instrumentor.uninstrument()
    assert bus.instruments.active == ()
    run(bus, Placed("o1"))
    assert exporter.get_finished_spans() == ()
    assert len(SEEN) == 2  # the handlers ran, untraced


def test_the_default_bus_is_instrumented_when_none_is_given() -> None:
    import dramatiq_eventbus

    instrumentor = EventBusInstrumentor()
    instrumentor.instrument()
    try:
        assert [type(i) for i in dramatiq_eventbus.default_bus.instruments.active] == [TracingInstrument]
    finally:
        instrumentor.uninstrument()
    assert not any(isinstance(i, TracingInstrument) for i in dramatiq_eventbus.default_bus.instruments.active)


def metadata(event_id: str) -> EventMetadata:
    return EventMetadata(event_id, 0, event_id, None)


def test_producer_spans_whose_after_publish_never_comes_are_ended_not_kept(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    bus = configured()
    instrument = TracingInstrument(bus, provider, max_pending=2)
    for n in range(5):
        instrument.before_publish(Placed(str(n)), metadata(f"e{n}"), (), (), None)
    assert len(instrument._pending) == 2
    abandoned = [dict(span.attributes or {})["eventbus.event_id"] for span in exporter.get_finished_spans()]
    assert abandoned == ["e0", "e1", "e2"]
    instrument.after_publish([metadata("e3"), metadata("e0")], None)  # e0 was ended already: ignored
    assert len(exporter.get_finished_spans()) == 4
    assert all(dict(s.attributes or {}).get("eventbus.publish.abandoned") for s in exporter.get_finished_spans()[:3])
    instrument.end_pending()
    assert not instrument._pending and len(exporter.get_finished_spans()) == 5

    aging = TracingInstrument(bus, provider, pending_seconds=0.0)
    aging.before_publish(Placed("a"), metadata("old"), (), (), None)
    aging.before_publish(Placed("b"), metadata("new"), (), (), None)
    assert list(aging._pending) == ["new"]


def test_concurrent_publishers_end_every_span_and_keep_none(bus: EventBus, exporter: InMemorySpanExporter) -> None:
    (instrument,) = bus.instruments.active
    assert isinstance(instrument, TracingInstrument)

    def publish_many() -> None:
        for n in range(100):
            bus.publish([Placed(str(n)), Unwanted()])

    threads = [threading.Thread(target=publish_many) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sends = exporter.get_finished_spans()
    assert len(sends) == 8 * 100 * 2
    assert len({dict(span.attributes or {})["eventbus.event_id"] for span in sends}) == len(sends)
    assert not instrument._pending


def test_the_entry_point_names_the_instrumentor() -> None:
    (found,) = [ep for ep in entry_points(group="opentelemetry_instrumentor") if ep.name == "dramatiq_eventbus"]
    assert found.load() is EventBusInstrumentor


def test_the_core_never_imports_it_and_without_opentelemetry_it_says_what_to_install() -> None:
    script = textwrap.dedent(
        """
        import sys
        import dramatiq_eventbus, dramatiq_eventbus.cli, dramatiq_eventbus.testing, dramatiq_eventbus.contrib
        assert "dramatiq_eventbus.contrib.opentelemetry" not in sys.modules
        sys.modules["opentelemetry"] = None  # as if it were not installed
        try:
            import dramatiq_eventbus.contrib.opentelemetry
        except ImportError as exc:
            print(exc)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert "pip install 'dramatiq-eventbus[opentelemetry]'" in result.stdout


def test_opentelemetry_instrument_instruments_the_default_bus() -> None:
    script = Path(sys.executable).with_name("opentelemetry-instrument")
    if not script.exists():
        pytest.skip("no opentelemetry-instrument beside this interpreter")
    check = "import dramatiq_eventbus as e; print([type(i).__name__ for i in e.default_bus.instruments.active])"
    result = subprocess.run(
        [str(script), sys.executable, "-c", check],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={
            **os.environ,
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
        },
    )
    assert result.stdout.strip() == "['TracingInstrument']", result.stderr
