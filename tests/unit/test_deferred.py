"""deferred(): publish() calls buffered per thread or task, sent when the block exits normally."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import pytest

from dramatiq_eventbus import EventBus, EventEncodeError
from dramatiq_eventbus.delivery import Delivery

from .handlers import HANDLERS, OrderCreated, OrderShipped


class Sent:
    """A backend that keeps each deliver() call."""

    def __init__(self) -> None:
        self.calls: list[list[Any]] = []

    def deliver(self, deliveries: Sequence[Delivery]) -> None:
        self.calls.append([(d.handler.handler_class.__name__, d.event) for d in deliveries])


@pytest.fixture
def sent(bus: EventBus) -> Sent:
    backend = Sent()
    bus.configure(handlers={OrderShipped: HANDLERS[OrderShipped]}, broker="stub", backend=backend)
    return backend


def test_a_block_sends_its_events_together_when_it_exits(bus: EventBus, sent: Sent) -> None:
    with bus.deferred():
        bus.publish(OrderShipped("1"))
        bus.publish(OrderShipped("2"))
        assert sent.calls == []
    assert sent.calls == [[("NotifyHandler", OrderShipped("1")), ("NotifyHandler", OrderShipped("2"))]]


def test_an_exception_drops_the_events(bus: EventBus, sent: Sent) -> None:
    with pytest.raises(RuntimeError), bus.deferred():
        bus.publish(OrderShipped("1"))
        raise RuntimeError("rolled back")
    bus.publish(OrderShipped("after"))
    assert sent.calls == [[("NotifyHandler", OrderShipped("after"))]]


def test_blocks_nest_and_only_the_outermost_sends(bus: EventBus, sent: Sent) -> None:
    with bus.deferred():
        with bus.deferred():
            bus.publish(OrderShipped("inner"))
        assert sent.calls == []
        bus.publish(OrderShipped("outer"))
    assert sent.calls == [[("NotifyHandler", OrderShipped("inner")), ("NotifyHandler", OrderShipped("outer"))]]


def test_a_bad_event_still_fails_at_its_publish(bus: EventBus) -> None:
    bus.configure(handlers={OrderCreated: HANDLERS["tests.unit.handlers:OrderCreated"]}, broker="stub")
    with bus.deferred(), pytest.raises(EventEncodeError):
        bus.publish(OrderCreated("1", Decimal("1"), extra={"x": object()}))  # type: ignore[dict-item]


def test_other_threads_are_not_deferred_and_child_tasks_share_the_block(bus: EventBus, sent: Sent) -> None:
    async def in_a_task() -> None:
        bus.publish(OrderShipped("task"))

    with bus.deferred():
        thread = threading.Thread(target=bus.publish, args=(OrderShipped("thread"),))
        thread.start()
        thread.join()
        assert sent.calls == [[("NotifyHandler", OrderShipped("thread"))]]

    async def main() -> None:
        with bus.deferred():
            await asyncio.create_task(in_a_task())  # a task copies the context: deferred with its parent
            assert len(sent.calls) == 1
        assert len(sent.calls) == 2

    asyncio.run(main())


class Transaction:
    """A stand-in for a database transaction's buffer, offered to the bus as an interceptor."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self.open = False
        self.events: list[object] = []
        self.deliveries: list[Delivery] = []
        self.metadata: list[Any] = []

    def find(self) -> Transaction | None:
        return self if self.open else None

    def published(self, events: Sequence[object], deliveries: Sequence[Delivery], metadata: Sequence[Any] = ()) -> None:
        self.events.extend(events)
        self.deliveries.extend(deliveries)
        self.metadata.extend(metadata)

    def commit(self) -> None:
        self.open = False
        self.bus.hand_over(self.events, self.deliveries, self.metadata)


def test_a_block_inside_a_transaction_hands_its_events_to_the_transaction(bus: EventBus, sent: Sent) -> None:
    transaction = Transaction(bus)
    bus.add_interceptor(transaction.find)
    transaction.open = True
    with bus.deferred():
        bus.publish(OrderShipped("1"))
        assert transaction.events == []
    assert transaction.events == [OrderShipped("1")]
    assert sent.calls == []
    transaction.commit()
    assert sent.calls == [[("NotifyHandler", OrderShipped("1"))]]


def test_a_transaction_inside_a_block_keeps_its_events_until_it_commits(bus: EventBus, sent: Sent) -> None:
    transaction = Transaction(bus)
    bus.add_interceptor(transaction.find)
    with bus.deferred():
        transaction.open = True
        bus.publish(OrderShipped("in the transaction"))
        transaction.open = False  # rolled back: its events are dropped, not the block's
        transaction.events.clear()
        bus.publish(OrderShipped("in the block"))
    assert sent.calls == [[("NotifyHandler", OrderShipped("in the block"))]]
    bus.remove_interceptor(transaction.find)
