"""publish_async(): publish()'s semantics, with the broker I/O off the event loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine, Sequence
from decimal import Decimal
from typing import Any, TypeVar

import pytest
from dramatiq import Message
from dramatiq.brokers.stub import StubBroker

import dramatiq_eventbus as eventbus
from dramatiq_eventbus import (
    ConfigurationError,
    EventBus,
    EventEncodeError,
    Handler,
    Instrument,
    InterestedFailed,
    PublishError,
    correlation,
)
from dramatiq_eventbus.delivery import Delivery
from dramatiq_eventbus.testing import EventMailbox, assert_event_published, set_event_bus_mode

from .handlers import HANDLERS, JOURNAL, NotifyHandler, OrderCreated, OrderShipped

T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def queued(broker: Any, queue: str) -> list[Message[Any]]:
    assert isinstance(broker, StubBroker)
    return [Message.decode(data) for data in list(broker.queues[queue].queue)]


class Slow:
    """A backend whose deliver() takes ``seconds``, as a slow broker would, and keeps its calls."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.calls: list[tuple[list[object], int]] = []  # the events, and the thread that sent them

    def deliver(self, deliveries: Sequence[Delivery]) -> None:
        time.sleep(self.seconds)
        self.calls.append(([d.event for d in deliveries], threading.get_ident()))


class InterestedRaises(Handler):
    def interested(self, event: Any) -> bool:
        raise RuntimeError("no idea")

    def handle_event(self, event: Any) -> None:
        return None


@pytest.fixture
def configured(bus: EventBus) -> EventBus:
    JOURNAL.clear()
    return bus.configure(handlers=HANDLERS, broker="stub")


def test_the_same_ids_and_messages_as_publish(configured: EventBus) -> None:
    event_id = run(configured.publish_async(OrderCreated("1", Decimal("5"))))
    assert isinstance(event_id, str)
    messages = queued(configured.broker, "events")
    assert [m.actor_name for m in messages] == [
        "tests.unit.handlers.FinanceHandler",
        "tests.unit.handlers.NotifyHandler",
        "tests.unit.handlers.AuditHandler",
    ]
    assert {m.options["event_id"] for m in messages} == {event_id}
    # Made as publish() makes them: the same arguments, only the id differs.
    configured.publish(OrderCreated("1", Decimal("5")))
    after = queued(configured.broker, "events")[3:]
    assert [m.args for m in after] == [m.args for m in messages]


def test_a_list_or_tuple_gives_a_list_of_ids_in_order_also_for_uninteresting_events(configured: EventBus) -> None:
    ids = run(configured.publish_async([OrderShipped("a"), OrderCreated("0", Decimal("0")), OrderShipped("b")]))
    assert isinstance(ids, list) and len(ids) == 3 and len(set(ids)) == 3
    assert run(configured.publish_async((OrderShipped("c"),))) == [
        queued(configured.broker, "events_partitioned")[-1].options["event_id"]
    ]
    assert run(configured.publish_async([])) == []


@pytest.mark.parametrize("value", [None, "OrderCreated", 3, {"order_id": "1"}, [OrderShipped("1"), [1]]])
def test_builtin_values_are_a_type_error(configured: EventBus, value: Any) -> None:
    with pytest.raises(TypeError, match=r"^publish\(\) takes an event object"):
        run(configured.publish_async(value))
    assert queued(configured.broker, "events_partitioned") == []


def test_an_interested_that_raises_sends_nothing(bus: EventBus) -> None:
    bus.configure(handlers={OrderShipped: [NotifyHandler, InterestedRaises]}, broker="stub")
    with pytest.raises(InterestedFailed):
        run(bus.publish_async([OrderShipped("1"), OrderShipped("2")]))
    assert queued(bus.broker, "events_partitioned") == []


def test_an_event_that_cannot_be_encoded_sends_nothing(configured: EventBus) -> None:
    bad = OrderCreated("2", Decimal("1"), extra={"x": object()})  # type: ignore[dict-item]
    with pytest.raises(EventEncodeError):
        run(configured.publish_async([OrderCreated("1", Decimal("1")), bad]))
    assert queued(configured.broker, "events") == []


def test_a_broker_failure_is_the_same_publish_error(bus: EventBus) -> None:
    class FailsOnThird(StubBroker):
        count = 0

        def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
            self.count += 1
            if self.count == 3:
                raise ConnectionError("connection reset")
            return super().enqueue(message, delay=delay)

    bus.configure(handlers=HANDLERS, broker=FailsOnThird())
    with pytest.raises(PublishError) as raised:
        run(bus.publish_async(OrderCreated("1", Decimal("1"))))
    assert raised.value.unsent == ("tests.unit.handlers.AuditHandler",)
    assert "2 of 3 messages are known to be sent" in str(raised.value)


def test_before_configure_it_says_to_call_configure(bus: EventBus) -> None:
    with pytest.raises(ConfigurationError, match="not configured"):
        run(bus.publish_async(OrderShipped("1")))


def test_the_loop_keeps_running_during_a_slow_send(bus: EventBus) -> None:
    backend = Slow(0.3)
    bus.configure(handlers={OrderShipped: [NotifyHandler]}, broker="stub", backend=backend)

    async def ticks_during(publishing: Coroutine[Any, Any, object]) -> int:
        ticks = 0
        done = False

        async def ticker() -> None:
            nonlocal ticks
            while not done:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)  # the ticker starts
        await publishing
        done = True
        await task
        return ticks

    async def blocking() -> object:
        return bus.publish(OrderShipped("sync"))

    assert run(ticks_during(bus.publish_async(OrderShipped("async")))) >= 10  # ~30 in 0.3 s
    assert run(ticks_during(blocking())) <= 1  # what the test would see if publish_async blocked
    assert backend.calls[0][1] != threading.get_ident()


def test_deferred_in_the_callers_task_takes_its_events_without_a_thread(bus: EventBus) -> None:
    backend = Slow()
    bus.configure(handlers={OrderShipped: [NotifyHandler]}, broker="stub", backend=backend)

    async def main() -> None:
        with bus.deferred():
            await bus.publish_async(OrderShipped("1"))
            await bus.publish_async([OrderShipped("2")])
            assert backend.calls == []
        assert backend.calls == [([OrderShipped("1"), OrderShipped("2")], threading.get_ident())]

    run(main())


def test_deferred_async_sends_off_the_loop_and_drops_on_an_exception(bus: EventBus) -> None:
    backend = Slow()
    bus.configure(handlers={OrderShipped: [NotifyHandler]}, broker="stub", backend=backend)

    async def main() -> None:
        with pytest.raises(RuntimeError):
            async with bus.deferred_async():
                await bus.publish_async(OrderShipped("dropped"))
                raise RuntimeError("the request failed")
        async with bus.deferred_async():
            async with bus.deferred_async():  # nested: only the outermost sends
                await bus.publish_async(OrderShipped("1"))
            bus.publish(OrderShipped("2"))  # publish() joins the same buffer
            await asyncio.to_thread(bus.publish, OrderShipped("3"))  # as a sync endpoint in a thread
            assert backend.calls == []
        assert [events for events, _ in backend.calls] == [[OrderShipped("1"), OrderShipped("2"), OrderShipped("3")]]
        assert backend.calls[0][1] != threading.get_ident()

    run(main())


def test_each_task_has_its_own_deferred_block(bus: EventBus) -> None:
    backend = Slow()
    bus.configure(handlers={OrderShipped: [NotifyHandler]}, broker="stub", backend=backend)

    async def request(name: str, fails: bool) -> None:
        async with bus.deferred_async():
            await bus.publish_async(OrderShipped(name))
            await asyncio.sleep(0.01)  # the other request runs meanwhile
            if fails:
                raise RuntimeError(name)

    async def main() -> None:
        await asyncio.gather(request("ok", False), request("failed", True), return_exceptions=True)

    run(main())
    assert [events for events, _ in backend.calls] == [[OrderShipped("ok")]]


def test_an_interceptor_is_asked_on_the_callers_thread(bus: EventBus) -> None:
    """An interceptor may keep its open transaction per thread: it is asked where the caller runs."""
    backend = Slow()
    bus.configure(handlers={OrderShipped: [NotifyHandler]}, broker="stub", backend=backend)
    taken: list[object] = []

    class PerThread:
        thread = threading.get_ident()

        def published(self, events: Sequence[object], deliveries: Sequence[Delivery], metadata: Any = ()) -> None:
            taken.extend(events)

    def find() -> PerThread | None:
        return PerThread() if threading.get_ident() == PerThread.thread else None

    bus.add_interceptor(find)
    try:
        run(bus.publish_async(OrderShipped("1")))
    finally:
        bus.remove_interceptor(find)
    assert taken == [OrderShipped("1")]
    assert backend.calls == []


def test_the_correlation_of_the_callers_block_and_task(configured: EventBus) -> None:
    async def request(request_id: str) -> str:
        with correlation(request_id):
            await asyncio.sleep(0.01)  # interleaved with the other request
            event_id = await configured.publish_async(OrderShipped(request_id))
        return event_id

    async def main() -> list[str]:
        return list(await asyncio.gather(request("req-a"), request("req-b")))

    ids = run(main())
    messages = queued(configured.broker, "events_partitioned")
    assert {m.options["event_id"]: m.options.get("correlation_id") for m in messages} == {
        ids[0]: "req-a",
        ids[1]: "req-b",
    }


def test_the_mailbox_records_module_level_publish_async(event_bus: EventMailbox) -> None:
    eventbus.configure(handlers=HANDLERS, broker="stub")
    set_event_bus_mode("strict")

    async def main() -> None:
        with correlation("req-7"):
            await eventbus.publish_async(OrderShipped("1"))
        async with eventbus.deferred_async():
            await eventbus.publish_async(OrderShipped("2"))

    run(main())
    assert_event_published(OrderShipped, order_id="1", correlation_id="req-7")
    assert_event_published(OrderShipped, order_id="2")


def test_instruments_see_the_call_end_after_the_send_with_its_error(bus: EventBus) -> None:
    class FailingBackend:
        def deliver(self, deliveries: Sequence[Delivery]) -> None:
            time.sleep(0.01)
            ended.append("send")
            raise ConnectionError("down")

    class Watch(Instrument):
        def before_publish(self, event: object, metadata: Any, *rest: Any) -> None:
            ended.append(f"before {metadata.event_id == metadata.correlation_id}")

        def after_publish(self, metadata: Sequence[Any], exception: BaseException | None) -> None:
            ended.append(f"after {type(exception).__name__}")

    ended: list[str] = []
    bus.configure(handlers={OrderShipped: [NotifyHandler]}, broker="stub", backend=FailingBackend())
    bus.add_instrument(Watch())
    with pytest.raises(ConnectionError):
        run(bus.publish_async(OrderShipped("1")))
    assert ended == ["before True", "send", "after ConnectionError"]
