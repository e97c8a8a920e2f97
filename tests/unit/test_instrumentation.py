"""Instruments: the seam that traces and metrics watch publish() calls and handler runs through."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.message import Message

from dramatiq_eventbus import EventBus, EventContext, EventMetadata, Handler, Instrument
from dramatiq_eventbus.brokers import EventBusRedisBroker
from dramatiq_eventbus.brokers.inspection import Refusal, log_dead_lettered
from dramatiq_eventbus.errors import AlreadyHandled, EventEncodeError, HandlerFailed, InterestedFailed
from dramatiq_eventbus.handler import Error
from dramatiq_eventbus.metadata import MAX_TRACE_VALUE_CHARACTERS, TRACE_CONTEXT, option_problem
from dramatiq_eventbus.registry import HandlerSpec
from dramatiq_eventbus.signing import Signer
from dramatiq_eventbus.testing import stub_worker

from ..support.servers import require_redis

KEY = "k" * 32
SPAN: ContextVar[str | None] = ContextVar("span", default=None)
RUNS: list[tuple[str, str | None, str | None]] = []


@dataclass(frozen=True)
class Placed:
    order_id: str
    outcome: str = "ok"

    def partition_key(self) -> str:
        return self.order_id


@dataclass(frozen=True)
class Lonely:
    """No handler is registered for it."""

    n: int


class Billing(Handler):
    def handle_event(self, event: Placed) -> Error | None:
        RUNS.append(("billing", event.outcome, SPAN.get()))
        if event.outcome == "error":
            return Error("no money")
        if event.outcome == "raise":
            raise RuntimeError("boom")
        if event.outcome == "duplicate":
            raise AlreadyHandled("tests.Billing", "e1")
        return None


class AsyncBilling(Handler):
    async def handle_event(self, event: Placed) -> None:
        RUNS.append(("async", event.outcome, SPAN.get()))


class Picky(Handler):
    def interested(self, event: Placed) -> bool:
        return event.outcome == "picky"

    def handle_event(self, event: Placed) -> None:
        RUNS.append(("picky", event.outcome, SPAN.get()))


class Recorder(Instrument):
    """Records every hook call; gives a trace context; sets SPAN around handler runs."""

    def __init__(self, trace_context: Mapping[str, str] | None = None) -> None:
        self.trace_context = {"traceparent": "00-abc-def-01"} if trace_context is None else trace_context
        self.published: list[tuple[Any, ...]] = []
        self.after: list[tuple[list[str], BaseException | None]] = []
        self.runs: list[tuple[str, str | None, BaseException | None]] = []
        self.refusals: list[tuple[str, str]] = []

    def before_publish(
        self,
        event: object,
        metadata: EventMetadata,
        handlers: Sequence[HandlerSpec],
        not_interested: Sequence[HandlerSpec],
        partition_key: str | None,
    ) -> Mapping[str, str] | None:
        self.published.append(
            (event, metadata.event_id, [h.name for h in handlers], [h.name for h in not_interested], partition_key)
        )
        return self.trace_context

    def after_publish(self, metadata: Sequence[EventMetadata], exception: BaseException | None) -> None:
        self.after.append(([m.event_id for m in metadata], exception))

    @contextmanager
    def _run(self, handler: HandlerSpec, context: EventContext | None) -> Iterator[None]:
        token = SPAN.set(f"span of {handler.handler_class.__name__}")
        trace = None if context is None or context.trace_context is None else context.trace_context["traceparent"]
        try:
            yield
        except BaseException as exc:
            self.runs.append((handler.handler_class.__name__, trace, exc))
            raise
        else:
            self.runs.append((handler.handler_class.__name__, trace, None))
        finally:
            SPAN.reset(token)

    def handling(self, handler: HandlerSpec, event: object, context: EventContext | None) -> Any:
        return self._run(handler, context)

    def refused(self, queue_name: str, reason: str) -> None:
        self.refusals.append((queue_name, reason))


class Broken(Instrument):
    """Raises in every hook."""

    def before_publish(self, *args: Any) -> Mapping[str, str] | None:
        raise RuntimeError("before")

    def after_publish(self, *args: Any) -> None:
        raise RuntimeError("after")

    def handling(self, *args: Any) -> Any:
        raise RuntimeError("handling")


@pytest.fixture(autouse=True)
def clear() -> None:
    RUNS.clear()


def queued(broker: StubBroker) -> list[Message[Any]]:
    return [Message.decode(body) for q in broker.queues.values() for body in q.queue]


def a_bus(*handlers: type[Handler], **options: Any) -> EventBus:
    return EventBus().configure(handlers={Placed: list(handlers)}, broker="stub", **options)


def test_before_publish_sees_each_event_its_handlers_and_key_and_its_trace_context_travels_signed() -> None:
    bus = a_bus(Billing, Picky, secret_key=KEY)
    recorder = Recorder()
    bus.add_instrument(recorder)
    event_id = bus.publish(Placed("o1"))
    ((event, seen_id, handlers, not_interested, key),) = recorder.published
    assert (event, seen_id, key) == (Placed("o1"), event_id, "o1")
    assert handlers == [f"{__name__}.Billing"]
    assert not_interested == [f"{__name__}.Picky"]
    assert recorder.after == [([event_id], None)]
    broker = bus.broker
    assert isinstance(broker, StubBroker)
    (message,) = queued(broker)
    assert message.options[TRACE_CONTEXT] == {"traceparent": "00-abc-def-01"}
    signer = Signer((KEY.encode(),))
    assert signer.problem(message) is None
    message.options[TRACE_CONTEXT] = {"traceparent": "00-forged-01"}
    assert signer.problem(message) is not None  # the signature covers it
    del message.options[TRACE_CONTEXT]
    assert signer.problem(message) is not None  # and its removal


def test_an_event_no_handler_wants_is_seen_too_and_every_event_of_a_failed_call_is_ended() -> None:
    bus = EventBus().configure(handlers={Placed: [Billing]}, broker="stub")
    recorder = Recorder()
    bus.add_instrument(recorder)
    bus.publish(Lonely(1))
    assert recorder.published[0][2:] == ([], [], None)
    with pytest.raises(EventEncodeError):
        bus.publish([Placed("o2"), Placed("o3", object())])  # type: ignore[arg-type]
    ids, exception = recorder.after[-1]
    assert len(ids) == 2 and isinstance(exception, EventEncodeError)


def test_after_publish_hears_of_an_interested_that_raised() -> None:
    class Raising(Handler):
        def interested(self, event: Placed) -> bool:
            raise ValueError("no")

        def handle_event(self, event: Placed) -> None: ...

    bus = a_bus(Raising)
    recorder = Recorder()
    bus.add_instrument(recorder)
    with pytest.raises(InterestedFailed):
        bus.publish(Placed("o3"))
    assert isinstance(recorder.after[-1][1], InterestedFailed)


def test_handling_wraps_each_run_in_a_worker_and_sees_its_outcome() -> None:
    bus = a_bus(Billing, default_actor_options={"max_retries": 0})
    recorder = Recorder()
    bus.add_instrument(recorder)
    with stub_worker(bus) as worker:
        bus.publish([Placed("a"), Placed("b", "error"), Placed("c", "raise"), Placed("d", "duplicate")])
        raised = set()
        for _ in range(3):  # drain() raises one handler's exception at a time
            try:
                worker.drain()
            except (HandlerFailed, RuntimeError) as exc:
                raised.add(type(exc))
        assert raised == {HandlerFailed, RuntimeError}
        dead = {m.args[0]["order_id"] for m in worker.dead_letters}  # type: ignore[index]
    # The handler ran inside what the instrument's handling() entered.
    assert sorted(RUNS) == sorted([("billing", o, "span of Billing") for o in ("ok", "error", "raise", "duplicate")])
    outcomes = {type(exc).__name__ if exc else None for _, _, exc in recorder.runs}
    assert outcomes == {None, "HandlerFailed", "RuntimeError", "AlreadyHandled"}
    assert all(trace == "00-abc-def-01" for _, trace, _ in recorder.runs)
    assert dead == {"b", "c"}  # the duplicate was acknowledged as a success, not dead-lettered


def test_an_async_handler_runs_inside_handling_in_its_own_task() -> None:
    bus = a_bus(AsyncBilling)
    recorder = Recorder()
    bus.add_instrument(recorder)
    with stub_worker(bus) as worker:
        bus.publish(Placed("a"))
        worker.drain()
    assert RUNS == [("async", "ok", "span of AsyncBilling")]
    assert recorder.runs == [("AsyncBilling", "00-abc-def-01", None)]


def test_an_instrument_that_raises_fails_neither_publish_nor_the_handler(caplog: pytest.LogCaptureFixture) -> None:
    bus = a_bus(Billing)
    bus.add_instrument(Broken())
    recorder = Recorder()
    bus.add_instrument(recorder)
    with caplog.at_level(logging.ERROR, logger="dramatiq_eventbus.instrumentation"), stub_worker(bus) as worker:
        bus.publish(Placed("a"))
        worker.drain()
    assert RUNS == [("billing", "ok", "span of Billing")]
    assert recorder.runs == [("Billing", "00-abc-def-01", None)]
    failed = {
        r.getMessage().split(" failed in ")[1].split(";")[0] for r in caplog.records if " failed in " in r.getMessage()
    }
    assert failed == {"before_publish", "after_publish", "handling"}


def test_a_trace_context_a_worker_would_refuse_is_left_out_and_said(caplog: pytest.LogCaptureFixture) -> None:
    bus = a_bus(Billing)
    bus.add_instrument(Recorder({"baggage": "x" * (MAX_TRACE_VALUE_CHARACTERS + 1)}))
    with caplog.at_level(logging.ERROR):
        bus.publish(Placed("a"))
    broker = bus.broker
    assert isinstance(broker, StubBroker)
    (message,) = queued(broker)
    assert TRACE_CONTEXT not in message.options
    assert any("published without one" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "forged",
    [
        "00-abc",
        ["traceparent", "x"],
        {"traceparent": 1},
        {"traceparent": "a\nb"},
        {"": "x"},
        {f"k{n}": "v" for n in range(9)},
        {"tracestate": "v" * (MAX_TRACE_VALUE_CHARACTERS + 1)},
    ],
)
def test_a_worker_refuses_a_forged_trace_context(forged: object) -> None:
    assert option_problem({TRACE_CONTEXT: forged}) is not None


def test_instruments_are_checked_added_once_and_removed() -> None:
    bus = a_bus(Billing)
    recorder = Recorder()
    with pytest.raises(TypeError, match=r"subclass of dramatiq_eventbus\.Instrument"):
        bus.add_instrument(object())  # type: ignore[arg-type]
    bus.add_instrument(recorder)
    bus.add_instrument(recorder)
    bus.publish(Placed("a"))
    assert len(recorder.published) == 1
    bus.remove_instrument(recorder)
    bus.publish(Placed("b"))
    assert len(recorder.published) == 1


@pytest.mark.redis
def test_a_consumer_s_refusal_reaches_the_instruments() -> None:
    broker = EventBusRedisBroker(url=require_redis())
    try:
        bus = EventBus().configure(handlers={Placed: [Billing]}, broker=broker)
        recorder = Recorder()
        bus.add_instrument(recorder)
        log_dead_lettered(broker, "events", Refusal("its body is not JSON"))
        assert recorder.refusals == [("events", "its body is not JSON")]
    finally:
        broker.close()
