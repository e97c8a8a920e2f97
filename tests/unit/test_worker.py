"""The actor body in a real Dramatiq Worker on a StubBroker: decode, handle, map the result."""

from __future__ import annotations

import logging
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from dramatiq.message import Message

from dramatiq_eventbus import EventBus, HandlerFailed

from .conftest import FAST_RETRIES
from .handlers import (
    HANDLERS,
    JOURNAL,
    FailingWithError,
    Line,
    NotifyHandler,
    OrderCreated,
    OrderShipped,
    Raising,
)

DEAD_LETTERS_LOGGER = "dramatiq_eventbus.middleware.dead_letters.DeadLetterReasons"


@pytest.fixture(autouse=True)
def clean_journal() -> None:
    JOURNAL.clear()


def test_every_interested_handler_runs_once_with_the_event_intact(bus: EventBus, drain: Callable[[], None]) -> None:
    bus.configure(handlers=HANDLERS, broker="stub")
    event = OrderCreated("1", Decimal("100.10"), lines=[Line("a", 2)], extra={"k": 1}, note=None, paid=True)
    bus.publish(event)
    drain()
    for name in ("finance", "notify", "audit"):
        (received,) = JOURNAL.of(name)
        assert received == event
        assert type(received) is OrderCreated
        assert type(received.total) is Decimal and type(received.lines[0]) is Line
    assert bus.broker.dead_letters == []


def test_an_error_result_is_retried_then_dead_lettered_with_its_reason(
    bus: EventBus, drain: Callable[[], None], caplog: pytest.LogCaptureFixture
) -> None:
    bus.configure(handlers={OrderShipped: [FailingWithError]}, broker="stub", default_actor_options=FAST_RETRIES)
    with caplog.at_level(logging.WARNING):
        bus.publish(OrderShipped("1"))
        drain()
    assert len(JOURNAL.of("error")) == 3  # max_retries 2: three attempts
    (dead,) = bus.broker.dead_letters
    assert isinstance(dead._exception, HandlerFailed)
    assert str(dead._exception) == "FailingWithError.handle_event failed: ledger locked"
    assert "ledger locked" in dead.options["traceback"]
    assert dead.options["retries"] == 3
    failures = [r for r in caplog.records if r.getMessage() == "FailingWithError.handle_event failed: ledger locked"]
    assert len(failures) == 3  # one line per attempt, no traceback into the bus's internals
    assert all(r.exc_info is None for r in failures)
    (dead_line,) = [r.getMessage() for r in caplog.records if r.name == DEAD_LETTERS_LOGGER]
    assert dead_line == (
        f"Dead-lettered message '{dead.message_id}': tests.unit.handlers.FailingWithError for "
        f"'tests.unit.handlers:OrderShipped' (partition key '1', event '{dead.options['event_id']}') "
        "after 3 attempt(s): "
        "HandlerFailed: FailingWithError.handle_event failed: ledger locked"
    )


def test_an_exception_is_retried_then_dead_lettered(bus: EventBus, drain: Callable[[], None]) -> None:
    bus.configure(handlers={OrderShipped: [Raising]}, broker="stub", default_actor_options=FAST_RETRIES)
    bus.publish(OrderShipped("1"))
    drain()
    assert len(JOURNAL.of("raising")) == 2  # max_retries 1
    (dead,) = bus.broker.dead_letters
    assert isinstance(dead._exception, RuntimeError)
    assert "RuntimeError: boom" in dead.options["traceback"]


def test_the_default_is_five_attempts(bus: EventBus, drain: Callable[[], None]) -> None:
    class FailsAlways(FailingWithError):
        actor_options: dict[str, Any] = {}

    bus.configure(handlers={OrderShipped: [FailsAlways]}, broker="stub", default_actor_options=FAST_RETRIES)
    bus.publish(OrderShipped("1"))
    drain()
    assert len(JOURNAL.of("error")) == 5
    assert len(bus.broker.dead_letters) == 1


def test_one_handler_failing_does_not_affect_another(bus: EventBus, drain: Callable[[], None]) -> None:
    bus.configure(handlers={OrderShipped: [Raising, NotifyHandler]}, broker="stub", default_actor_options=FAST_RETRIES)
    bus.publish(OrderShipped("1"))
    drain()
    assert JOURNAL.of("notify") == [OrderShipped("1")]
    assert len(bus.broker.dead_letters) == 1


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ({"$type": "os:system", "command": "touch /tmp/x"}, "unknown type 'os:system'"),
        ({"$type": "tests.unit.handlers:OrderShipped", "order_id": "1", "evil": 1}, "has no field 'evil'"),
        ({"$type": "tests.unit.handlers:OrderShipped"}, "order_id"),
        ({"$pickle": "gASV"}, "$pickle"),
    ],
)
def test_an_undecodable_event_is_dead_lettered_at_once_with_one_clear_line(
    bus: EventBus, drain: Callable[[], None], caplog: pytest.LogCaptureFixture, payload: Any, problem: str
) -> None:
    bus.configure(handlers={OrderShipped: [NotifyHandler]}, broker="stub", default_actor_options=FAST_RETRIES)
    actor_name = "tests.unit.handlers.NotifyHandler"
    bad = Message(queue_name="events", actor_name=actor_name, args=(payload,), kwargs={}, options={})
    bus.broker.enqueue(bad)
    bus.publish(OrderShipped("good"))  # a good message behind the bad one still gets through
    with caplog.at_level(logging.INFO):
        drain()
    assert JOURNAL.of("notify") == [OrderShipped("good")]
    (dead,) = bus.broker.dead_letters
    assert dead.message_id == bad.message_id
    assert "retries" not in dead.options  # no retry was spent on it
    about_messages = ("dramatiq_eventbus.actors", DEAD_LETTERS_LOGGER)
    lines = [r.getMessage() for r in caplog.records if r.name in about_messages and r.levelno >= logging.WARNING]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"Dead-lettered message '{bad.message_id}': {actor_name} for an unknown event")
    assert "after 1 attempt(s): EventDecodeError: " in lines[0]
    assert problem in lines[0]


def test_a_handler_is_never_given_an_event_class_it_is_not_registered_for(
    bus: EventBus, drain: Callable[[], None], caplog: pytest.LogCaptureFixture
) -> None:
    # OrderShipped is an event class of this bus (NotifyHandler's), but not FinanceHandler's.
    bus.configure(handlers=HANDLERS, broker="stub", default_actor_options=FAST_RETRIES)
    actor_name = "tests.unit.handlers.FinanceHandler"
    payload = bus.config.codec.encode(OrderShipped("forged"))
    forged = Message(queue_name="events", actor_name=actor_name, args=(payload,), kwargs={}, options={})
    bus.broker.enqueue(forged)
    with caplog.at_level(logging.INFO):
        drain()
    assert JOURNAL.of("finance") == []
    (dead,) = bus.broker.dead_letters
    assert dead.message_id == forged.message_id
    assert "retries" not in dead.options
    (line,) = [r.getMessage() for r in caplog.records if r.name == DEAD_LETTERS_LOGGER]
    assert "EventDecodeError: FinanceHandler is not a handler of tests.unit.handlers:OrderShipped" in line
