"""The mailbox behind the event_bus fixture: modes, assertions, the codec round trip, threads and tasks."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import unittest
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from dramatiq.brokers.stub import StubBroker

import dramatiq_eventbus as eventbus
from dramatiq_eventbus import EventDecodeError, EventEncodeError, HandlerFailed
from dramatiq_eventbus.codecs import TypedCodec
from dramatiq_eventbus.testing import (
    EventMailbox,
    assert_event_published,
    assert_no_pending_strict_events,
    get_event_bus_mode,
    published_events,
    recording,
    refute_event_published,
    set_event_bus_mode,
)
from dramatiq_eventbus.testing._stack import location

from .events import (
    HANDLERS,
    JOURNAL,
    Carrying,
    Exploding,
    Mailing,
    Opaque,
    OrderCancelled,
    OrderCreated,
    OrderShipped,
    PaymentFailed,
    PriorityOrderCreated,
    Refusing,
    Unwired,
)

LIBRARY = os.path.dirname(eventbus.__file__)


def next_line() -> int:
    """The line number after the caller's: where its next statement publishes."""
    return sys._getframe(1).f_lineno + 1


# -- modes -------------------------------------------------------------------------------------


def test_the_mode_starts_as_default_and_default_events_are_recorded_unchecked(event_bus: EventMailbox) -> None:
    assert get_event_bus_mode() == "default"
    eventbus.publish(OrderCreated("1"))
    assert published_events() == [OrderCreated("1")]
    assert_no_pending_strict_events()
    assert JOURNAL.entries == []  # recorded, not handled


def test_an_unknown_mode_is_a_value_error(event_bus: EventMailbox) -> None:
    with pytest.raises(ValueError, match="must be one of 'default', 'strict', 'inline', not 'lenient'"):
        set_event_bus_mode("lenient")
    assert get_event_bus_mode() == "default"


def test_leaving_strict_mode_checks_for_unasserted_events_first(event_bus: EventMailbox) -> None:
    set_event_bus_mode("strict")
    eventbus.publish(OrderCreated("1"))
    with pytest.raises(AssertionError, match=r"Unasserted events published in strict mode:\n\n  OrderCreated\("):
        set_event_bus_mode("default")
    assert get_event_bus_mode() == "strict"
    assert_event_published(OrderCreated)
    set_event_bus_mode("default")
    assert get_event_bus_mode() == "default"


def test_strict_then_default_then_strict_as_in_the_reference(event_bus: EventMailbox) -> None:
    set_event_bus_mode("strict")
    eventbus.publish(OrderCreated("1"))
    assert_event_published(OrderCreated)
    set_event_bus_mode("default")
    eventbus.publish(OrderCancelled("1"))  # not checked
    set_event_bus_mode("strict")
    eventbus.publish(OrderShipped("1"))
    assert_event_published(OrderShipped, order_id="1")
    assert published_events() == [OrderCreated("1"), OrderCancelled("1"), OrderShipped("1")]


def test_inline_mode_runs_the_interested_handlers_in_the_publisher_and_records_nothing(
    event_bus: EventMailbox,
) -> None:
    set_event_bus_mode("inline")
    eventbus.publish([OrderCreated("1"), OrderCreated("free", Decimal("0"))])
    assert JOURNAL.of("invoicing") == [OrderCreated("1")]
    assert JOURNAL.of("mailing") == [OrderCreated("1"), OrderCreated("free", Decimal("0"))]
    assert JOURNAL.threads() == {threading.get_ident()}
    assert published_events() == []


def test_inline_mode_raises_handler_failed_for_an_error_and_lets_exceptions_through(event_bus: EventMailbox) -> None:
    eventbus.configure(handlers={OrderCreated: [Refusing], OrderCancelled: [Exploding]}, broker="stub")
    set_event_bus_mode("inline")
    with pytest.raises(HandlerFailed, match=r"^Refusing.handle_event failed: ledger locked$"):
        eventbus.publish(OrderCreated("1"))
    with pytest.raises(RuntimeError, match="boom on 2"):
        eventbus.publish(OrderCancelled("2"))


def test_inline_mode_hands_handlers_the_decoded_copy(event_bus: EventMailbox) -> None:
    set_event_bus_mode("inline")
    event = OrderCreated("1")
    eventbus.publish(event)
    (received,) = JOURNAL.of("mailing")
    assert received == event and received is not event


# -- assert_event_published ----------------------------------------------------------------------


def test_assert_finds_the_oldest_matching_strict_event_by_class_and_attributes(event_bus: EventMailbox) -> None:
    set_event_bus_mode("strict")
    eventbus.publish([OrderCreated("1", Decimal("5")), OrderCreated("2", Decimal("5")), OrderCreated("3")])
    second = assert_event_published(OrderCreated, order_id="2")
    assert second == OrderCreated("2", Decimal("5"))
    assert assert_event_published(OrderCreated, total=Decimal("5")) == OrderCreated("1", Decimal("5"))
    assert assert_event_published(OrderCreated) == OrderCreated("3")
    assert event_bus.pending_strict_events() == []


def test_assert_takes_an_event_or_a_predicate(event_bus: EventMailbox) -> None:
    set_event_bus_mode("strict")
    eventbus.publish([OrderCancelled("1"), OrderCreated("2"), OrderCreated("3")])
    assert assert_event_published(OrderCreated("3")) == OrderCreated("3")
    # The predicate reads order_id and total; OrderCancelled has no total, so it does not match.
    assert assert_event_published(lambda e: e.total > 0 and e.order_id == "2") == OrderCreated("2")
    assert assert_event_published(lambda e: isinstance(e, OrderCancelled)) == OrderCancelled("1")


def test_assert_matches_the_exact_class_only(event_bus: EventMailbox) -> None:
    set_event_bus_mode("strict")
    eventbus.publish(PriorityOrderCreated("1"))
    with pytest.raises(AssertionError, match=r"No unasserted strict event matches OrderCreated\."):
        assert_event_published(OrderCreated)
    assert_event_published(PriorityOrderCreated, order_id="1")


def test_an_asserted_event_is_not_matched_twice(event_bus: EventMailbox) -> None:
    set_event_bus_mode("strict")
    eventbus.publish(OrderCreated("1"))
    assert_event_published(OrderCreated, order_id="1")
    with pytest.raises(AssertionError) as failure:
        assert_event_published(OrderCreated, order_id="1")
    assert "Strict events already asserted (1):\n  OrderCreated(order_id='1'" in str(failure.value)


def test_default_mode_events_never_match_and_the_failure_lists_both_kinds(event_bus: EventMailbox) -> None:
    eventbus.publish(OrderCreated("1"))
    set_event_bus_mode("strict")
    line = next_line()
    eventbus.publish(OrderCancelled("2"))
    with pytest.raises(AssertionError) as failure:
        assert_event_published(OrderCreated, order_id="1")
    message = str(failure.value)
    assert message.startswith("No unasserted strict event matches OrderCreated with order_id='1'.\n")
    assert "Unasserted strict events (1):\n  OrderCancelled(order_id='2', reason='changed mind')" in message
    assert f"test_mailbox.py:{line})" in message
    assert "Default-mode events, which are never asserted (call set_event_bus_mode('strict') first) (1):" in message
    assert "  OrderCreated(order_id='1', total=Decimal('10'))" in message
    assert_event_published(OrderCancelled)


def test_a_failure_with_nothing_published_says_so(event_bus: EventMailbox) -> None:
    with pytest.raises(AssertionError) as failure:
        assert_event_published(OrderCreated("1"))
    message = str(failure.value)
    assert "No unasserted strict event matches OrderCreated(order_id='1', total=Decimal('10'))." in message
    assert "Nothing was published while the mailbox was recording." in message
    assert "The mode is 'default': only events published in strict mode can be asserted." in message


def test_attribute_keywords_go_with_a_class_only(event_bus: EventMailbox) -> None:
    with pytest.raises(TypeError, match="attribute keywords \\(order_id\\) go with an event class"):
        assert_event_published(OrderCreated("1"), order_id="1")


# -- refute_event_published and published_events -----------------------------------------------


def test_refute_passes_when_nothing_matches_and_fails_on_any_recorded_event(event_bus: EventMailbox) -> None:
    eventbus.publish(OrderCreated("1"))
    set_event_bus_mode("strict")
    eventbus.publish(OrderCreated("2"))
    refute_event_published(OrderCancelled)
    refute_event_published(OrderCreated, order_id="3")
    refute_event_published(lambda e: e.order_id == "3")
    with pytest.raises(AssertionError) as failure:
        refute_event_published(OrderCreated)
    message = str(failure.value)
    assert message.startswith("Expected no event matching OrderCreated, but 2 were published:\n")
    assert "OrderCreated(order_id='1'" in message and "OrderCreated(order_id='2'" in message
    assert_event_published(OrderCreated, order_id="2")
    with pytest.raises(AssertionError, match="but 1 was published"):
        refute_event_published(OrderCreated("2"))  # asserted events still count


def test_one_publish_to_three_handlers_is_recorded_once(event_bus: EventMailbox) -> None:
    eventbus.publish(OrderCreated("1"))
    (record,) = event_bus.records
    assert record.handlers == (
        "tests.testing.events.Invoicing",
        "tests.testing.events.Mailing",
        "tests.testing.events.Auditing",
    )
    assert record.mode == "default"


def test_a_list_is_recorded_in_order_even_the_same_event_twice(event_bus: EventMailbox) -> None:
    event = OrderCreated("1")
    eventbus.publish([event, OrderCancelled("1"), event, event])
    assert published_events() == [event, OrderCancelled("1"), event, event]
    assert [len(r.handlers) for r in event_bus.records] == [3, 1, 3, 3]


def test_an_event_no_handler_wants_is_recorded_too(event_bus: EventMailbox) -> None:
    events = [PaymentFailed("1"), Unwired(1), OrderCreated("free", Decimal("0"))]
    eventbus.publish(events)
    assert published_events() == events
    set_event_bus_mode("strict")
    eventbus.publish(Unwired(2))
    assert assert_event_published(Unwired) == Unwired(2)


def test_the_published_hook_records_every_event_with_its_deliveries(event_bus: EventMailbox) -> None:
    interested = OrderCreated("1")
    deliveries = capture_deliveries([interested, interested])
    set_event_bus_mode("strict")
    event_bus.published([PaymentFailed("1"), interested, Unwired(1), interested], deliveries)
    assert published_events() == [PaymentFailed("1"), interested, Unwired(1), interested]
    assert [len(r.handlers) for r in event_bus.records] == [0, 3, 0, 3]
    assert_event_published(Unwired, value=1)
    assert_event_published(PaymentFailed)
    assert_event_published(OrderCreated)
    assert_event_published(OrderCreated)
    with pytest.raises(EventEncodeError):
        event_bus.published([Carrying(Opaque())], [])


def capture_deliveries(events: Sequence[object]) -> list[Any]:
    """The deliveries publish() makes for ``events``, caught with a backend of our own."""
    caught: list[Any] = []

    class Catcher:
        def published(self, events: Sequence[object], deliveries: Sequence[Any], metadata: Sequence[Any] = ()) -> None:
            caught.extend(deliveries)

    with eventbus.default_bus.recording_to(Catcher()):
        eventbus.publish(list(events))
    return caught


# -- the codec round trip ----------------------------------------------------------------------


def test_recorded_events_are_the_decoded_copies(event_bus: EventMailbox) -> None:
    event = OrderCreated("1", Decimal("1.50"))
    eventbus.publish(event)
    (recorded,) = published_events()
    assert recorded == event and recorded is not event
    assert type(recorded.total) is Decimal


@pytest.mark.parametrize("mode", ["default", "strict", "inline", None])
def test_an_event_the_codec_cannot_encode_fails_in_every_mode(mode: str | None) -> None:
    broker = StubBroker()
    eventbus.configure(handlers=HANDLERS, broker=broker)
    if mode is None:  # no mailbox: the configured dramatiq backend
        with pytest.raises(EventEncodeError, match=r"Carrying\.thing: cannot encode"):
            eventbus.publish([OrderCreated("1"), Carrying(Opaque())])
        assert broker.queues["events"].qsize() == 0
        return
    with recording() as mailbox:
        set_event_bus_mode(mode)
        with pytest.raises(TypeError, match=r"Carrying\.thing: cannot encode"):
            eventbus.publish([OrderCreated("1"), Carrying(Opaque())])
        assert mailbox.records == ()
        assert JOURNAL.entries == []
        set_event_bus_mode("default")


class FlakyCodec:
    """Encodes anything and cannot decode an OrderCancelled: a worker would dead-letter it."""

    name = "flaky"

    def __init__(self) -> None:
        self.typed = TypedCodec([OrderCreated, OrderCancelled])

    def encode(self, event: object) -> Any:
        return self.typed.encode(event)

    def decode(self, payload: Any) -> object:
        if "OrderCancelled" in str(payload):
            raise EventDecodeError("cannot decode OrderCancelled")
        return self.typed.decode(payload)


@pytest.mark.parametrize("mode", ["default", "strict", "inline"])
def test_an_event_the_codec_cannot_decode_fails_in_every_mode(event_bus: EventMailbox, mode: str) -> None:
    eventbus.configure(handlers={OrderCreated: [Mailing], OrderCancelled: [Mailing]}, broker="stub", codec=FlakyCodec())
    set_event_bus_mode(mode)
    with pytest.raises(EventDecodeError):
        eventbus.publish([OrderCreated("1"), OrderCancelled("1")])
    assert event_bus.records == ()  # nothing of the failed call is recorded
    eventbus.publish(OrderCreated("2"))
    if mode == "strict":
        assert_event_published(OrderCreated, order_id="2")


@pytest.mark.parametrize("mode", ["default", "strict", "inline"])
def test_an_event_too_large_for_the_workers_fails_in_every_mode(event_bus: EventMailbox, mode: str) -> None:
    eventbus.default_bus.reconfigure(max_message_bytes=1024)
    set_event_bus_mode(mode)
    with pytest.raises(EventEncodeError, match=r"more than max_message_bytes \(1,024\)"):
        eventbus.publish([OrderShipped("1"), OrderShipped("x" * 2000)])
    assert event_bus.records == ()
    assert JOURNAL.entries == []
    eventbus.publish(OrderShipped("x" * 50))  # below the limit
    if mode == "strict":
        assert_event_published(OrderShipped)


def test_an_event_of_any_size_is_recorded_for_a_backend_that_sends_no_messages(event_bus: EventMailbox) -> None:
    eventbus.default_bus.reconfigure(max_message_bytes=1024, backend="inline")
    eventbus.publish(OrderShipped("x" * 2000))
    assert published_events() == [OrderShipped("x" * 2000)]


# -- configuration, threads and tasks ------------------------------------------------------------


def test_a_configure_before_the_fixture_and_one_inside_the_test_are_both_captured(
    configured: eventbus.EventBus, event_bus: EventMailbox
) -> None:
    eventbus.publish(OrderCreated("1"))
    broker = StubBroker()
    eventbus.configure(handlers={OrderShipped: [Mailing]}, broker=broker, backend="inline")
    eventbus.publish(OrderShipped("2"))
    assert published_events() == [OrderCreated("1"), OrderShipped("2")]
    assert JOURNAL.entries == []
    assert broker.queues["events_partitioned"].qsize() == 0


def test_events_published_from_other_threads_reach_the_test(event_bus: EventMailbox) -> None:
    set_event_bus_mode("strict")
    threads = [threading.Thread(target=eventbus.publish, args=(OrderCreated(str(n)),)) for n in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(e.order_id for e in published_events()) == ["0", "1", "2", "3", "4"]  # type: ignore[attr-defined]
    for n in range(5):
        assert_event_published(OrderCreated, order_id=str(n))


def test_events_published_from_asyncio_tasks_reach_the_test(event_bus: EventMailbox) -> None:
    set_event_bus_mode("strict")
    lines: dict[str, int] = {}

    async def complete(order_id: str) -> None:
        await asyncio.sleep(0)
        lines["task"] = next_line()
        eventbus.publish(OrderCreated(order_id))

    async def main() -> None:
        await asyncio.gather(*(asyncio.create_task(complete(str(n))) for n in range(3)))
        await asyncio.to_thread(eventbus.publish, OrderCancelled("t"))

    asyncio.run(main())
    for n in range(3):
        assert_event_published(OrderCreated, order_id=str(n))
    assert_event_published(OrderCancelled, order_id="t")
    task_record = event_bus.records[0]
    assert location(task_record.published_at[-1]).endswith(f"test_mailbox.py:{lines['task']}")
    assert task_record.published_at[0].name == "complete"  # the event loop's frames are dropped


def test_publish_goes_to_the_configured_backend_when_no_test_is_recording() -> None:
    broker = StubBroker()
    eventbus.configure(handlers=HANDLERS, broker=broker)
    eventbus.publish(OrderCreated("1"))
    assert broker.queues["events"].qsize() == 3
    with recording():
        eventbus.publish(OrderCreated("2"))
    assert broker.queues["events"].qsize() == 3
    eventbus.publish(OrderCreated("3"))
    assert broker.queues["events"].qsize() == 6


def test_the_helpers_need_a_recording_mailbox() -> None:
    with pytest.raises(RuntimeError, match="no event bus mailbox is recording: use the event_bus pytest fixture"):
        set_event_bus_mode("strict")
    with pytest.raises(RuntimeError, match="no event bus mailbox is recording"):
        published_events()


def test_a_recording_inside_another_is_the_one_the_helpers_use(event_bus: EventMailbox) -> None:
    eventbus.publish(OrderCreated("outer"))
    with recording() as inner:
        eventbus.publish(OrderCreated("inner"))
        assert published_events() == [OrderCreated("inner")]
        assert inner.published_events() == [OrderCreated("inner")]
    assert published_events() == [OrderCreated("outer")]


# -- where it was published ----------------------------------------------------------------------


def test_the_stack_points_at_the_caller_of_publish_without_library_frames(event_bus: EventMailbox) -> None:
    line = next_line()
    eventbus.publish(OrderCreated("1"))
    (record,) = event_bus.records
    assert location(record.published_at[-1]) == f"tests/testing/test_mailbox.py:{line}" or location(
        record.published_at[-1]
    ).endswith(f"test_mailbox.py:{line}")
    assert record.published_at[-1].name == "test_the_stack_points_at_the_caller_of_publish_without_library_frames"
    assert not [f for f in record.published_at if f.filename.startswith(LIBRARY)]
    assert not [f for f in record.published_at if "_pytest" in f.filename or "pluggy" in f.filename]


def test_the_stack_shows_each_caller_up_to_the_test(event_bus: EventMailbox) -> None:
    lines: dict[str, int] = {}

    def complete_order(order_id: str) -> None:
        lines["service"] = next_line()
        eventbus.publish(OrderCreated(order_id))

    lines["test"] = next_line()
    complete_order("1")
    (record,) = event_bus.records
    assert [(f.name, f.lineno) for f in record.published_at] == [
        ("test_the_stack_shows_each_caller_up_to_the_test", lines["test"]),
        ("complete_order", lines["service"]),
    ]


def test_a_thread_stack_starts_at_the_thread_target(event_bus: EventMailbox) -> None:
    lines: dict[str, int] = {}

    def worker() -> None:
        lines["thread"] = next_line()
        eventbus.publish(OrderCreated("1"))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    (record,) = event_bus.records
    assert [(f.name, f.lineno) for f in record.published_at] == [("worker", lines["thread"])]


def test_the_strict_report_shows_the_repr_and_the_stack(event_bus: EventMailbox) -> None:
    set_event_bus_mode("strict")
    line = next_line()
    eventbus.publish(OrderShipped("9"))
    with pytest.raises(AssertionError) as failure:
        assert_no_pending_strict_events()
    lines = str(failure.value).splitlines()
    assert lines[:4] == [
        "Unasserted events published in strict mode:",
        "",
        "  OrderShipped(order_id='9')",
        "    Published at:",
    ]
    assert lines[-2].endswith(f"test_mailbox.py:{line} in test_the_strict_report_shows_the_repr_and_the_stack")
    assert lines[-1] == '        eventbus.publish(OrderShipped("9"))'
    assert_event_published(OrderShipped)


# -- without pytest ------------------------------------------------------------------------------


def test_the_recorder_works_in_unittest() -> None:
    class CompletingOrders(unittest.TestCase):
        def setUp(self) -> None:
            recorder = recording()
            self.mailbox = recorder.__enter__()
            self.addCleanup(recorder.__exit__, None, None, None)

        def test_asserted(self) -> None:
            set_event_bus_mode("strict")
            eventbus.publish(OrderCreated("1"))
            self.assertEqual(assert_event_published(OrderCreated).order_id, "1")

        def test_forgotten(self) -> None:
            set_event_bus_mode("strict")
            eventbus.publish(OrderCreated("2"))

    result = unittest.TestResult()
    unittest.defaultTestLoader.loadTestsFromTestCase(CompletingOrders).run(result)
    assert result.testsRun == 2
    ((test, trace),) = result.failures or result.errors
    assert "test_forgotten" in str(test)
    assert "Unasserted events published in strict mode:" in trace
    assert "OrderCreated(order_id='2'" in trace


def test_recording_checks_strict_events_on_exit_unless_told_not_to() -> None:
    with pytest.raises(AssertionError, match="Unasserted events published in strict mode:"), recording():
        set_event_bus_mode("strict")
        eventbus.publish(OrderCreated("1"))
    with recording(check=False) as mailbox:
        set_event_bus_mode("strict")
        eventbus.publish(OrderCreated("1"))
    assert mailbox.pending_strict_events() == [OrderCreated("1")]


def test_a_failure_inside_recording_is_not_hidden_by_the_strict_check() -> None:
    with pytest.raises(KeyError), recording():
        set_event_bus_mode("strict")
        eventbus.publish(OrderCreated("1"))
        raise KeyError("the test's own failure")


@dataclass(frozen=True)
class LocalEvent:
    n: int


def test_a_separate_bus_can_be_recorded() -> None:
    bus = eventbus.EventBus().configure(handlers={LocalEvent: [Mailing]}, broker="stub")
    with recording(bus) as mailbox:
        bus.publish(LocalEvent(1))
        eventbus.publish(OrderCreated("not this bus"))
    assert mailbox.published_events() == [LocalEvent(1)]
