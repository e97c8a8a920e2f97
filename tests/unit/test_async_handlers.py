"""``async def handle_event``, end to end in process: Dramatiq's worker on a StubBroker, the inline
backend, the mailbox's inline mode, run_event and stub_worker; with results, retries, time limits
and ordering as for sync handlers. And ``interested`` stays synchronous.

The handlers here are the test module's own; a real ``dramatiq`` worker runs async handlers in
tests/integration/test_async_handlers.py.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import threading
import time
import warnings
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from dramatiq.asyncio import EventLoopThread
from dramatiq.message import Message
from dramatiq.middleware import AsyncIO, TimeLimitExceeded

from dramatiq_eventbus import ConfigurationError, Error, EventBus, Handler, HandlerFailed
from dramatiq_eventbus.handler import handler_name
from dramatiq_eventbus.testing import Outcome, recording, run_event, stub_worker

from ..support.journal import Journal
from .conftest import FAST_RETRIES

JOURNAL = Journal()
DEAD_LETTERS_LOGGER = "dramatiq_eventbus.middleware.dead_letters.DeadLetterReasons"
SECRET = "an async test key, long enough"


@dataclass(frozen=True)
class Noted:
    text: str


@dataclass(frozen=True)
class Step:
    key: str
    seq: int
    keyed: bool = True

    def partition_key(self) -> str | None:
        return self.key if self.keyed else None


class AsyncInvoicing(Handler):
    async def handle_event(self, event: Noted) -> str:
        await asyncio.sleep(0)  # a real await: the coroutine must be driven, not just created
        JOURNAL.add("invoicing", event)
        JOURNAL.add("invoicing.thread", threading.current_thread())
        JOURNAL.add("invoicing.loop", asyncio.get_running_loop())
        return f"invoice {event.text}"


class SyncAuditing(Handler):
    def handle_event(self, event: Noted) -> None:
        JOURNAL.add("auditing", event)


class AsyncRefusing(Handler):
    actor_options = {"max_retries": 2}

    async def handle_event(self, event: Noted) -> Error:
        await asyncio.sleep(0)
        JOURNAL.add("refusing", event)
        return Error(f"ledger locked for {event.text}")


class AsyncRaising(Handler):
    actor_options = {"max_retries": 1}

    async def handle_event(self, event: Noted) -> None:
        await asyncio.sleep(0)
        JOURNAL.add("raising", event)
        raise RuntimeError(f"boom on {event.text}")


class AsyncFlaky(Handler):
    """Fails its first attempt, succeeds on the retry."""

    actor_options = {"max_retries": 3}

    async def handle_event(self, event: Noted) -> str:
        await asyncio.sleep(0)
        JOURNAL.add("flaky", event)
        if len(JOURNAL.of("flaky")) == 1:
            raise RuntimeError("the first attempt fails")
        return "done"


class AsyncSlow(Handler):
    actor_options = {"time_limit": 200, "max_retries": 0}

    async def handle_event(self, event: Noted) -> None:
        JOURNAL.add("slow.started", event)
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            JOURNAL.add("slow.cancelled", event)
            raise
        JOURNAL.add("slow.finished", event)


class AsyncStepper(Handler):
    """Earlier steps take longer: run concurrently, later ones would finish first."""

    async def handle_event(self, event: Step) -> None:
        started = time.monotonic()
        await asyncio.sleep(0.03 * (5 - event.seq))
        JOURNAL.add("stepper", (event.key, event.seq, started, time.monotonic()))


class AsyncInterested(Handler):
    async def interested(self, event: Noted) -> bool:  # type: ignore[override]
        return True

    async def handle_event(self, event: Noted) -> None:
        JOURNAL.add("async-interested", event)


async def _invoice(event: Noted) -> None:
    JOURNAL.add("hidden", event)


class HidesItsCoroutine(Handler):
    """A plain def that returns a coroutine, as a decorator that is not async-aware would make."""

    actor_options = {"max_retries": 0}

    def handle_event(self, event: Noted) -> Coroutine[Any, Any, None]:
        return _invoice(event)


@pytest.fixture(autouse=True)
def clean_journal() -> None:
    JOURNAL.clear()


@pytest.fixture(autouse=True)
def no_coroutine_left_unawaited() -> Iterator[None]:
    """Fail a test whose code left a coroutine never awaited: the very warning of the bug."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
        gc.collect()
    unawaited = [str(w.message) for w in caught if "was never awaited" in str(w.message)]
    assert unawaited == []


def _asyncio_middleware(bus: EventBus) -> list[AsyncIO]:
    return [m for m in bus.broker.middleware if isinstance(m, AsyncIO)]


# -- Dramatiq's worker on a StubBroker --------------------------------------------------------------


def test_an_async_handler_runs_on_dramatiq_s_event_loop_in_the_worker(bus: EventBus, drain: Callable[[], None]) -> None:
    bus.configure(handlers={Noted: [AsyncInvoicing, SyncAuditing]}, broker="stub")
    bus.publish(Noted("1"))
    drain()
    assert JOURNAL.of("invoicing") == [Noted("1")]
    assert JOURNAL.of("auditing") == [Noted("1")]
    # Dramatiq's AsyncIO middleware ran it, on its one event-loop thread, not in the worker thread.
    (thread,) = JOURNAL.of("invoicing.thread")
    assert isinstance(thread, EventLoopThread)
    assert bus.broker.dead_letters == []


def test_the_bus_installs_dramatiq_s_asyncio_middleware_once_and_only_for_async_handlers(bus: EventBus) -> None:
    bus.configure(handlers={Noted: [SyncAuditing]}, broker="stub")
    assert _asyncio_middleware(bus) == []
    bus.reconfigure(handlers={Noted: [AsyncInvoicing, SyncAuditing]})
    assert len(_asyncio_middleware(bus)) == 1
    bus.reconfigure(handlers={Noted: [AsyncInvoicing, AsyncRefusing]})
    assert len(_asyncio_middleware(bus)) == 1
    # Dramatiq itself saw a coroutine function: its actor wraps it to run on the loop thread.
    actor = bus.config.actors[handler_name(AsyncInvoicing)]
    assert actor.fn is not actor.fn.__wrapped__  # type: ignore[attr-defined]


def test_an_error_from_an_async_handler_is_retried_then_dead_lettered_with_its_reason(
    bus: EventBus, drain: Callable[[], None], caplog: pytest.LogCaptureFixture
) -> None:
    bus.configure(handlers={Noted: [AsyncRefusing]}, broker="stub", default_actor_options=FAST_RETRIES)
    with caplog.at_level(logging.WARNING):
        bus.publish(Noted("1"))
        drain()
    assert JOURNAL.of("refusing") == [Noted("1")] * 3  # max_retries 2: three attempts
    (dead,) = bus.broker.dead_letters
    assert isinstance(dead._exception, HandlerFailed)
    assert str(dead._exception) == "AsyncRefusing.handle_event failed: ledger locked for 1"
    assert "ledger locked for 1" in dead.options["traceback"]
    failures = [r for r in caplog.records if r.getMessage() == "AsyncRefusing.handle_event failed: ledger locked for 1"]
    assert len(failures) == 3
    # The dead-letter middleware knows the async actor for one of the bus's handlers.
    (dead_line,) = [r.getMessage() for r in caplog.records if r.name == DEAD_LETTERS_LOGGER]
    assert dead_line.startswith(f"Dead-lettered message '{dead.message_id}': {handler_name(AsyncRefusing)} for ")
    assert dead_line.endswith(
        "after 3 attempt(s): HandlerFailed: AsyncRefusing.handle_event failed: ledger locked for 1"
    )


def test_an_exception_from_an_async_handler_is_retried(bus: EventBus, drain: Callable[[], None]) -> None:
    bus.configure(handlers={Noted: [AsyncFlaky, AsyncRaising]}, broker="stub", default_actor_options=FAST_RETRIES)
    bus.publish(Noted("1"))
    drain()
    assert JOURNAL.of("flaky") == [Noted("1")] * 2
    assert JOURNAL.of("raising") == [Noted("1")] * 2  # max_retries 1
    (dead,) = bus.broker.dead_letters
    assert dead.actor_name == handler_name(AsyncRaising)
    assert "RuntimeError: boom on 1" in dead.options["traceback"]


def test_an_unsigned_message_for_an_async_handler_is_refused_when_the_bus_has_a_key(
    bus: EventBus, drain: Callable[[], None]
) -> None:
    bus.configure(handlers={Noted: [AsyncInvoicing]}, broker="stub", secret_key=SECRET)
    forged = Message(
        queue_name=bus.config.queues.default,
        actor_name=handler_name(AsyncInvoicing),
        args=(bus.config.codec.encode(Noted("forged")),),
        kwargs={},
        options={},
    )
    bus.broker.enqueue(forged)
    bus.publish(Noted("genuine"))
    drain()
    assert JOURNAL.of("invoicing") == [Noted("genuine")]
    (dead,) = bus.broker.dead_letters
    assert dead.message_id == forged.message_id


def _overlapping(spans: list[tuple[float, float]]) -> bool:
    spans = sorted(spans)
    return any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans))


def test_async_handlers_keep_each_partition_key_in_order_while_unkeyed_events_run_at_once(
    bus: EventBus, drain: Callable[[], None]
) -> None:
    bus.configure(handlers={Step: [AsyncStepper]}, broker="stub")
    bus.publish([Step(key, seq) for seq in range(5) for key in ("a", "b")])
    drain()
    seen = JOURNAL.of("stepper")
    for key in ("a", "b"):
        mine = [entry for entry in seen if entry[0] == key]
        assert [seq for _, seq, _, _ in mine] == [0, 1, 2, 3, 4]
        assert not _overlapping([(started, ended) for _, _, started, ended in mine])
    # The control: without keys the same handler runs several events at once, later ones first.
    JOURNAL.clear()
    bus.publish([Step("c", seq, keyed=False) for seq in range(5)])
    drain()
    unkeyed = JOURNAL.of("stepper")
    assert [seq for _, seq, _, _ in unkeyed] != [0, 1, 2, 3, 4]
    assert _overlapping([(started, ended) for _, _, started, ended in unkeyed])


# -- the inline backend and the mailbox's inline mode ----------------------------------------------


def test_the_inline_backend_runs_an_async_handler_to_completion(bus: EventBus) -> None:
    bus.configure(handlers={Noted: [AsyncInvoicing, SyncAuditing]}, broker="stub", backend="inline")
    bus.publish(Noted("1"))
    assert JOURNAL.of("invoicing") == [Noted("1")]
    assert JOURNAL.of("auditing") == [Noted("1")]


def test_the_inline_backend_raises_an_async_handler_s_error_and_exception(bus: EventBus) -> None:
    bus.configure(handlers={Noted: [AsyncRefusing]}, broker="stub", backend="inline")
    with pytest.raises(HandlerFailed, match=r"^AsyncRefusing\.handle_event failed: ledger locked for 1$"):
        bus.publish(Noted("1"))
    bus.configure(handlers={Noted: [AsyncRaising]}, broker="stub", backend="inline")
    with pytest.raises(RuntimeError, match="boom on 2"):
        bus.publish(Noted("2"))


def test_the_inline_backend_runs_an_async_handler_from_inside_a_running_event_loop(bus: EventBus) -> None:
    bus.configure(handlers={Noted: [AsyncInvoicing]}, broker="stub", backend="inline")

    async def an_async_view() -> asyncio.AbstractEventLoop:
        bus.publish(Noted("1"))
        # Done before publish() returned, as a sync handler would be.
        assert JOURNAL.of("invoicing") == [Noted("1")]
        return asyncio.get_running_loop()

    callers_loop = asyncio.run(an_async_view())
    # On a loop of its own: the caller's is busy waiting for publish() to return.
    (handlers_loop,) = JOURNAL.of("invoicing.loop")
    assert handlers_loop is not callers_loop


def test_the_mailbox_s_inline_mode_runs_async_handlers(bus: EventBus) -> None:
    bus.configure(handlers={Noted: [AsyncInvoicing, AsyncRefusing]}, broker="stub")
    with recording(bus) as mailbox:
        mailbox.set_mode("inline")
        with pytest.raises(HandlerFailed, match="ledger locked for 1"):
            bus.publish(Noted("1"))
    assert JOURNAL.of("invoicing") == [Noted("1")]
    assert JOURNAL.of("refusing") == [Noted("1")]


# -- run_event ---------------------------------------------------------------------------------------


def test_run_event_awaits_an_async_handler(bus: EventBus) -> None:
    assert run_event(Noted("1"), AsyncInvoicing, bus=bus) == Outcome.processed("invoice 1")
    path = "tests.unit.test_async_handlers:AsyncRefusing"
    assert run_event(Noted("2"), path, bus=bus) == Outcome.failed("ledger locked for 2")
    with pytest.raises(HandlerFailed, match=r"^AsyncRefusing\.handle_event failed: ledger locked for 3$"):
        run_event(Noted("3"), AsyncRefusing, bus=bus, check=True)
    with pytest.raises(RuntimeError, match="boom on 4"):
        run_event(Noted("4"), AsyncRaising, bus=bus)


def test_run_event_works_in_an_async_test(bus: EventBus) -> None:
    async def an_async_test() -> Outcome:
        return run_event(Noted("1"), AsyncInvoicing, bus=bus)

    assert asyncio.run(an_async_test()) == Outcome.processed("invoice 1")


def test_run_event_refuses_an_async_interested(bus: EventBus) -> None:
    with pytest.raises(ConfigurationError, match="interested is an async def"):
        run_event(Noted("1"), AsyncInterested, bus=bus)
    assert JOURNAL.of("async-interested") == []


# -- stub_worker ---------------------------------------------------------------------------------------


def test_stub_worker_runs_async_handlers_and_raises_their_errors(bus: EventBus) -> None:
    bus.configure(handlers={Noted: [AsyncInvoicing, AsyncRefusing]}, broker="stub")
    with stub_worker(bus) as worker:
        bus.publish(Noted("1"))
        with pytest.raises(HandlerFailed, match="ledger locked for 1"):
            worker.drain()
    assert JOURNAL.of("invoicing") == [Noted("1")]
    assert JOURNAL.of("refusing") == [Noted("1")] * 3


def test_stub_worker_applies_time_limits_to_async_handlers(bus: EventBus) -> None:
    bus.configure(handlers={Noted: [AsyncSlow]}, broker="stub")
    started = time.monotonic()
    with stub_worker(bus) as worker:
        bus.publish(Noted("1"))
        with pytest.raises(TimeLimitExceeded):
            worker.drain()
    assert time.monotonic() - started < 10
    assert JOURNAL.of("slow.started") == [Noted("1")]
    assert JOURNAL.of("slow.cancelled") == [Noted("1")]  # the coroutine was cancelled, not left running
    assert JOURNAL.of("slow.finished") == []


def test_async_handlers_configured_while_a_stub_worker_runs_run_too(bus: EventBus) -> None:
    bus.configure(handlers={Noted: [SyncAuditing]}, broker="stub")
    with stub_worker(bus) as worker:
        # The worker booted without an event loop: none of its handlers needed one then.
        bus.reconfigure(handlers={Noted: [AsyncInvoicing, SyncAuditing]})
        bus.publish(Noted("1"))
        worker.drain()
    assert JOURNAL.of("invoicing") == [Noted("1")]
    assert JOURNAL.of("auditing") == [Noted("1")]


# -- what is refused -----------------------------------------------------------------------------------


def test_an_async_interested_is_a_configuration_error_that_says_why(bus: EventBus) -> None:
    with pytest.raises(ConfigurationError) as caught:
        bus.configure(handlers={Noted: [AsyncInterested]}, broker="stub")
    message = str(caught.value)
    assert f"{handler_name(AsyncInterested)}.interested is an async def" in message
    assert "synchronously in the publisher" in message
    assert "plain def" in message


def test_a_plain_def_that_returns_a_coroutine_fails_loudly_instead_of_silently(
    bus: EventBus, drain: Callable[[], None]
) -> None:
    bus.configure(handlers={Noted: [HidesItsCoroutine]}, broker="stub", backend="inline")
    with pytest.raises(TypeError, match=r"HidesItsCoroutine.handle_event returned a coroutine.*async def"):
        bus.publish(Noted("1"))
    with pytest.raises(TypeError, match="returned a coroutine"):
        run_event(Noted("2"), HidesItsCoroutine, bus=bus)
    bus.configure(handlers={Noted: [HidesItsCoroutine]}, broker="stub")
    bus.publish(Noted("3"))
    drain()
    (dead,) = bus.broker.dead_letters
    assert "returned a coroutine" in dead.options["traceback"]
    assert JOURNAL.of("hidden") == []
