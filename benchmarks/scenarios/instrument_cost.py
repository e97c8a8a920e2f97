"""Scenario 12: what tracing and metrics cost per publish() and per handler run, and what they cost off.

CPU time of the calling thread, not wall time: the instruments add CPU work on the path
they watch, and CPU time is far less noisy on a shared machine than a round trip (the
thread's, so that no other thread of the process, such as the span exporter's, counts). Each figure alternates, round by
round, the same bus with the instrument added and with it removed.

- per publish(): one event to one handler on the Redis deployment (the broker's own work is
  in the Redis server, not in this process);
- per handler run: what a Dramatiq worker thread does for one message, in process on a
  StubBroker: the middleware's before and after hooks around the actor (the bus's actor body,
  with its instruments), and a no-op handler;
- off: the seam's one check, against a publish() (never instrumented and instrumented then
  removed are one code path: an empty tuple).

Tracing uses the OpenTelemetry SDK with a batch processor and an exporter that drops the
spans (what an OTLP exporter costs is its own); metrics use prometheus_client on a registry of
their own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from dramatiq.broker import MessageProxy

from dramatiq_eventbus import EventBus, Instrument
from dramatiq_eventbus.delivery import Delivery
from dramatiq_eventbus.metadata import new_metadata

from ..runner import Context, Result, log, side_by_side
from ..workload import Noop, OrderPlaced, make_event

US = 1e6


def run(ctx: Context) -> list[Result]:
    log("  instrument cost")
    instruments = _instruments()
    if not instruments:
        note = "not measured: install the extras (pip install -e '.[dev]') for OpenTelemetry and prometheus_client"
        nan = float("nan")
        return [Result("12", "tracing and metrics", "-", "µs", nan, nan, "off", nan, note=note)]
    sizes = ctx.sizes
    rounds = sizes.instrument_rounds  # 7: these figures have no target, and make bench must stay under 10 minutes
    results: list[Result] = []
    broker = ctx.brokers[0]
    publishing = ctx.shared.deployment(broker)
    event = make_event(OrderPlaced)
    stub = EventBus().configure(handlers={OrderPlaced: [Noop]}, broker="stub")
    worker_run = _worker_run(stub, event)
    try:
        for name, make in instruments.items():
            with _installed(publishing.bus, make) as toggle:
                results.append(
                    _row(
                        f"publish() to 1 handler, {name}",
                        broker,
                        toggle,
                        lambda: publishing.bus.publish(event),
                        sizes.publishes,
                        rounds,
                        publishing.empty_queues,
                    )
                )
            with _installed(stub, make) as toggle:
                results.append(_row(f"handler run, {name}", "-", toggle, worker_run, sizes.free_publishes // 4, rounds))
        results.append(_seam_off(publishing.bus, event, sizes.publishes, rounds, publishing.empty_queues))
    finally:
        stub.broker.close()
    for result in results:
        result.rounds = rounds
    return results


def _instruments() -> dict[str, Callable[[EventBus], Instrument]]:
    """The instruments to measure, by name, as makers for a bus; those whose extra is missing left out."""
    found: dict[str, Callable[[EventBus], Instrument]] = {}
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

        from dramatiq_eventbus.contrib.opentelemetry import TracingInstrument

        class Dropping(SpanExporter):
            def export(self, spans: Any) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(Dropping()))
        found["traced"] = lambda bus: TracingInstrument(bus, provider)
    except ImportError:
        pass
    try:
        from prometheus_client import CollectorRegistry

        from dramatiq_eventbus.contrib.prometheus import EventBusMetrics

        found["with metrics"] = lambda bus: EventBusMetrics(bus, registry=CollectorRegistry())
    except ImportError:
        pass
    return found


@contextmanager
def _installed(bus: EventBus, make: Callable[[EventBus], Instrument]) -> Iterator[Callable[[bool], None]]:
    """A switch that adds the instrument to ``bus`` (True) or removes it (False); removed at the end."""
    instrument: Any = make(bus)
    # The metrics install a Dramatiq middleware beside the instrument: their install() adds both.
    add = getattr(instrument, "install", None) or (lambda: bus.add_instrument(instrument))
    remove = getattr(instrument, "uninstall", None) or (lambda: bus.remove_instrument(instrument))

    def toggle(on: bool) -> None:
        (add if on else remove)()

    try:
        yield toggle
    finally:
        remove()


def _worker_run(bus: EventBus, event: object) -> Callable[[], None]:
    """One message as a worker thread runs it: hooks before, the actor, hooks after."""
    config = bus.config
    (spec,) = config.registry.handlers_for(type(event))
    payload = config.codec.encode(event)
    delivery = Delivery(spec, event, payload, None, config.queues.default, new_metadata())
    backend: Any = config.backend
    message = backend.message_for(delivery)
    actor = config.actors[spec.name]
    broker = config.broker

    def one() -> None:
        proxy = MessageProxy(message)
        broker.emit_before("process_message", proxy)
        result = actor(*proxy.args)
        broker.emit_after("process_message", proxy, result=result)

    return one


def _cpu_per_call(call: Callable[[], object], calls: int, after: Callable[[], None] | None = None) -> float:
    started = time.thread_time()
    for _ in range(calls):
        call()
    seconds = (time.thread_time() - started) / calls
    if after is not None:
        after()
    return seconds * US


def _row(
    title: str,
    broker: str,
    toggle: Callable[[bool], None],
    call: Callable[[], object],
    calls: int,
    rounds: int,
    after: Callable[[], None] | None = None,
) -> Result:
    def measured(on: bool) -> Callable[[], float]:
        def one_round() -> float:
            toggle(on)
            return _cpu_per_call(call, calls, after)

        return one_round

    for _ in range(min(calls, 50)):  # warm caches, connections and the instrument's own
        call()
    on, off, ratio, _ = side_by_side(measured(True), measured(False), rounds)
    return Result(
        "12",
        title,
        broker,
        "µs CPU",
        on,
        off,
        "the same, off",
        ratio,
        note=f"{title}: +{on - off:.1f} µs CPU each",
    )


def _seam_off(bus: EventBus, event: object, calls: int, rounds: int, after: Callable[[], None]) -> Result:
    """What an uninstrumented publish() pays for the seam: one check, against the whole call."""
    instruments = bus.instruments
    checks = 1_000_000

    def seam() -> float:
        started = time.thread_time()
        for _ in range(checks):
            if instruments.active:
                raise AssertionError("the bus has an instrument")
        return (time.thread_time() - started) / checks * US

    def publish() -> float:
        return _cpu_per_call(lambda: bus.publish(event), calls, after)

    check, publish_cpu, ratio, _ = side_by_side(seam, publish, rounds)
    return Result(
        "12",
        "instruments off: the seam's check per publish()",
        "-",
        "µs CPU",
        check,
        publish_cpu,
        "one publish() to 1 handler",
        ratio,
        note=f"off, publish() pays {check * 1000:.0f} ns for the seam: {ratio:.2%} of its CPU time",
    )
