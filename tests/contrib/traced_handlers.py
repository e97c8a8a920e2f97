"""Handlers for the tracing test's ``dramatiq`` worker, which traces itself with OpenTelemetry.

The worker imports this module through ``EVENTBUS_HANDLERS=tests.contrib.traced_handlers:HANDLERS``
(see tests/contrib/test_opentelemetry_workers.py). With :data:`SPANS_VAR` set, as it is in the
worker only, importing it makes an SDK TracerProvider the global one (an InMemorySpanExporter,
and a processor that appends every span to the file the variable names, as one JSON line,
when the span ends: nothing waits for a shutdown that a SIGTERM may cut short) and instruments
the default bus, as ``opentelemetry-instrument`` would.

Two hops: ``Requested``'s handler publishes ``FollowedUp``, whose handler does nothing.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import dramatiq_eventbus
from dramatiq_eventbus import Handler
from dramatiq_eventbus.contrib.opentelemetry import EventBusInstrumentor

#: The file the worker's spans are appended to, one JSON line each.
SPANS_VAR = "TRACED_HANDLERS_SPANS_FILE"  # not EVENTBUS_*: WorkerProcess drops those it inherits


def span_line(span: ReadableSpan) -> dict[str, Any]:
    """What a test needs of a finished span."""
    context = span.get_span_context()
    assert context is not None
    return {
        "name": span.name,
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent_id": None if span.parent is None else f"{span.parent.span_id:016x}",
        "kind": span.kind.name,
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
        "pid": os.getpid(),
    }


class JsonLines(SpanProcessor):
    """Appends each span as it ends to ``path``, one JSON line, flushed at once."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.Lock()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        line = json.dumps(span_line(span), default=str) + "\n"
        with self.lock, open(self.path, "a", encoding="utf-8") as out:
            out.write(line)

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def set_up_tracing(path: str) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider.add_span_processor(JsonLines(path))
    trace.set_tracer_provider(provider)
    EventBusInstrumentor().instrument()  # the default bus, the global provider
    return exporter


@dataclass(frozen=True)
class Requested:
    tag: str


@dataclass(frozen=True)
class FollowedUp:
    tag: str


class RequestHandler(Handler):
    def handle_event(self, event: Requested) -> None:
        dramatiq_eventbus.publish(FollowedUp(event.tag))


class FollowUpHandler(Handler):
    def handle_event(self, event: FollowedUp) -> None:
        pass


HANDLERS = {Requested: [RequestHandler], FollowedUp: [FollowUpHandler]}

#: The worker's in-memory spans (None outside the worker).
EXPORTER = set_up_tracing(os.environ[SPANS_VAR]) if os.environ.get(SPANS_VAR) else None
