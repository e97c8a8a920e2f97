"""One OpenTelemetry trace across processes: a real ``dramatiq`` worker on real Redis and real RabbitMQ.

The test process publishes inside a span of its own, traced by an InMemorySpanExporter; the
worker (tests/contrib/traced_handlers.py, with a secret key: the trace context travels signed)
traces itself and appends each span it ends to a file as a JSON line. One trace must go
request → send → process → send (the follow-up, in the handler) → process. The RabbitMQ worker
is a slow variant (``-m slow``; see tests/integration/support.py BROKERS_RABBITMQ_SLOW).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

import dramatiq_eventbus
from dramatiq_eventbus.contrib.opentelemetry import EventBusInstrumentor
from tests.contrib import traced_handlers
from tests.contrib.traced_handlers import span_line
from tests.integration.support import BROKERS_RABBITMQ_SLOW, WAIT, Deployment, deployed, require, unique
from tests.support.worker_process import wait_for

TRACED_HANDLERS = "tests.contrib.traced_handlers:HANDLERS"
SECRET_KEY = "tracing-tests-key-0123456789abcdef"


@pytest.fixture(scope="module", params=BROKERS_RABBITMQ_SLOW)
def deployment(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    log_dir = tmp_path_factory.mktemp(f"tracing-workers-{request.param}")
    with ExitStack() as stack:
        # The worker copies the environment as it starts; this process keeps its own (untraced) import.
        with mock.patch.dict(os.environ, {traced_handlers.SPANS_VAR: str(spans_file(log_dir))}):
            made = stack.enter_context(
                deployed(
                    request.param,
                    log_dir,
                    "eventbus_it_tracing",
                    threads=2,
                    handlers=TRACED_HANDLERS,
                    secret_key=SECRET_KEY,
                )
            )
        yield made


def spans_file(log_dir: Path) -> Path:
    return log_dir / "spans.jsonl"


def worker_spans(deployment: Deployment, trace_id: str) -> list[dict[str, Any]]:
    try:
        lines = spans_file(deployment.log_dir).read_text().splitlines()
    except FileNotFoundError:
        return []
    # A line being written may be read half: only whole lines count.
    spans = []
    for line in lines:
        try:
            spans.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return [span for span in spans if span["trace_id"] == trace_id]


def test_one_trace_from_the_request_through_both_hops_across_processes(deployment: Deployment) -> None:
    require(deployment.broker)
    deployment.configure_publisher()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = EventBusInstrumentor()
    instrumentor.instrument(tracer_provider=provider)  # the default bus, which configure_publisher() configured
    try:
        with provider.get_tracer("test").start_as_current_span("POST /requests", kind=SpanKind.SERVER):
            event_id = dramatiq_eventbus.publish(traced_handlers.Requested(unique("tracing")))
    finally:
        instrumentor.uninstrument()
    local = {span["name"]: span for span in map(span_line, exporter.get_finished_spans())}
    assert set(local) == {"POST /requests", "send Requested"}
    request, send = local["POST /requests"], local["send Requested"]
    trace_id = request["trace_id"]

    def ended() -> list[dict[str, Any]] | None:
        spans = worker_spans(deployment, trace_id)
        # All three: the follow-up's handler, on another thread, may end before the span of the
        # handler that published it does.
        names = {span["name"] for span in spans}
        return spans if {"process Requested", "send FollowedUp", "process FollowedUp"} <= names else None

    spans = wait_for(
        ended,
        timeout=WAIT,
        describe=lambda: (
            f"The worker's spans of the trace: {worker_spans(deployment, trace_id)}.{deployment.worker.log_tail()}"
        ),
    )
    remote = {span["name"]: span for span in spans}
    assert len(remote) == len(spans) == 3, spans
    process, follow_up, follow_up_process = (
        remote["process Requested"],
        remote["send FollowedUp"],
        remote["process FollowedUp"],
    )
    # One trace, with every link: publish ← request; consumer ← producer; follow-up ← consumer; ...
    assert send["trace_id"] == trace_id
    assert send["parent_id"] == request["span_id"]
    assert process["parent_id"] == send["span_id"]
    assert follow_up["parent_id"] == process["span_id"]
    assert follow_up_process["parent_id"] == follow_up["span_id"]
    assert [s["kind"] for s in (request, send, process, follow_up, follow_up_process)] == [
        "SERVER",
        "PRODUCER",
        "CONSUMER",
        "PRODUCER",
        "CONSUMER",
    ]
    # Each side in its own process, naming the broker it used.
    assert {s["pid"] for s in spans} != {os.getpid()} and len({s["pid"] for s in spans}) == 1
    assert {s["attributes"]["messaging.system"] for s in (send, *spans)} == {deployment.broker}
    assert process["attributes"]["eventbus.event_id"] == send["attributes"]["eventbus.event_id"] == event_id
    assert follow_up["attributes"]["eventbus.causation_id"] == event_id
    assert follow_up_process["attributes"]["messaging.message.conversation_id"] == event_id
    assert {s["attributes"]["eventbus.outcome"] for s in (process, follow_up_process)} == {"success"}
    assert all(s["status"] == "UNSET" for s in (send, *spans))
