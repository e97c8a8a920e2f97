"""stub_worker: a real Dramatiq Worker on a StubBroker, and drain()."""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.message import Message
from dramatiq.middleware import TimeLimit
from dramatiq.middleware.time_limit import TimeLimitExceeded

import dramatiq_eventbus as eventbus
from dramatiq_eventbus import ConfigurationError, EventEncodeError, Handler, HandlerFailed
from dramatiq_eventbus.backends import DramatiqBackend, InlineBackend
from dramatiq_eventbus.testing import (
    EventMailbox,
    StubWorker,
    assert_event_published,
    published_events,
    recording,
    set_event_bus_mode,
    stub_worker,
)

from .events import (
    HANDLERS,
    JOURNAL,
    Auditing,
    Exploding,
    Invoicing,
    Mailing,
    OrderCancelled,
    OrderCreated,
    OrderShipped,
    Refusing,
    Shipping,
)


def test_drain_runs_every_interested_handler_in_a_worker(stub_worker: StubWorker) -> None:
    eventbus.publish([OrderCreated("1"), OrderCreated("free", Decimal("0"))])
    assert JOURNAL.entries == []  # nothing runs before drain(), as in production
    stub_worker.drain()
    assert JOURNAL.of("invoicing") == [OrderCreated("1")]
    assert sorted(e.order_id for e in JOURNAL.of("mailing")) == ["1", "free"]
    assert len(JOURNAL.of("auditing")) == 2
    assert stub_worker.dead_letters == []


def test_drain_also_runs_what_handlers_publish_on_the_other_queue() -> None:
    eventbus.configure(handlers={OrderCreated: [Shipping], OrderShipped: [Mailing]}, broker="stub")
    with stub_worker() as worker:
        eventbus.publish(OrderCreated("1"))
        worker.drain()
    assert JOURNAL.of("shipping") == [OrderCreated("1")]
    assert JOURNAL.of("mailing") == [OrderShipped("1")]  # via the partitioned queue


def test_drain_raises_a_handler_s_exception_after_its_retries_at_once() -> None:
    # Exploding asks for a minute of backoff; the stub worker retries at once anyway.
    eventbus.configure(handlers={OrderCreated: [Exploding, Mailing]}, broker="stub")
    started = time.monotonic()
    with stub_worker() as worker:
        eventbus.publish(OrderCreated("1"))
        with pytest.raises(RuntimeError, match="boom on 1"):
            worker.drain()
        assert len(JOURNAL.of("exploding")) == 5  # the default max_retries of 4: five attempts
        assert JOURNAL.of("mailing") == [OrderCreated("1")]
        (dead,) = worker.dead_letters
        assert dead.options["retries"] == 5
        worker.drain()  # an error is raised once; the next drain has nothing new
        eventbus.publish(OrderCreated("2"))
        with pytest.raises(RuntimeError, match="boom on 2"):
            worker.drain()
    assert time.monotonic() - started < 5


def test_drain_raises_handler_failed_for_an_error_result() -> None:
    eventbus.configure(handlers={OrderCancelled: [Refusing]}, broker="stub")
    with stub_worker() as worker:
        eventbus.publish(OrderCancelled("1"))
        with pytest.raises(HandlerFailed, match=r"^Refusing.handle_event failed: ledger locked$"):
            worker.drain()
    assert len(JOURNAL.of("refusing")) == 3  # its max_retries of 2


def test_handlers_run_in_worker_threads_on_the_bus_s_actors(stub_worker: StubWorker) -> None:
    assert stub_worker.bus.broker is stub_worker.broker
    assert {"tests.testing.events.Invoicing", "tests.testing.events.Mailing"} <= set(stub_worker.broker.actors)
    eventbus.publish(OrderCreated("1"))
    stub_worker.drain()
    import threading

    assert threading.get_ident() not in JOURNAL.threads()


def test_the_previous_configuration_comes_back(configured: eventbus.EventBus) -> None:
    broker = StubBroker()
    eventbus.configure(handlers=HANDLERS, broker=broker, backend="inline", default_actor_options={"max_retries": 1})
    with stub_worker() as worker:
        assert isinstance(eventbus.default_bus.config.backend, DramatiqBackend)
        assert eventbus.default_bus.broker is worker.broker is not broker
        assert eventbus.default_bus.config.arguments["default_actor_options"] == {"max_retries": 1}
    config = eventbus.default_bus.config
    assert config.broker is broker
    assert isinstance(config.backend, InlineBackend)
    eventbus.publish(OrderCreated("1"))  # inline again
    assert JOURNAL.of("invoicing") == [OrderCreated("1")]


def test_the_mailbox_records_inside_as_the_worker_runs_and_records_again_after(event_bus: EventMailbox) -> None:
    with stub_worker() as worker:
        eventbus.publish(OrderCreated("1"))
        worker.drain()
    assert JOURNAL.of("invoicing") == [OrderCreated("1")]
    assert published_events() == [OrderCreated("1")]
    eventbus.publish(OrderCreated("2"))
    assert published_events() == [OrderCreated("1"), OrderCreated("2")]
    assert JOURNAL.of("invoicing") == [OrderCreated("1")]  # recorded only, as before the worker


def test_drain_refuses_when_a_recording_started_inside() -> None:
    with stub_worker() as worker, recording():
        eventbus.publish(OrderCreated("1"))
        with pytest.raises(RuntimeError, match=r"a mailbox began recording inside stub_worker\(\)"):
            worker.drain()


def test_drain_refuses_when_the_bus_moved_to_another_broker() -> None:
    with stub_worker() as worker:
        eventbus.default_bus.reconfigure(handlers={OrderCreated: [Auditing]})  # keeps the broker: fine
        eventbus.publish(OrderCreated("1"))
        worker.drain()
        assert JOURNAL.of("auditing") == [OrderCreated("1")]
        eventbus.configure(handlers={OrderCreated: [Invoicing]}, broker="stub")
        with pytest.raises(RuntimeError, match=r"configured with another broker inside stub_worker\(\)"):
            worker.drain()


def test_a_bus_must_be_configured_first() -> None:
    with (
        pytest.raises(ConfigurationError, match=r"call configure\(handlers=\.\.\.\) before entering it"),
        stub_worker(eventbus.EventBus()),
    ):
        pass


def test_another_bus_gets_its_own_worker() -> None:
    bus = eventbus.EventBus().configure(handlers={OrderShipped: [Mailing]}, broker="stub")
    with stub_worker(bus) as worker:
        bus.publish(OrderShipped("1"))
        worker.drain()
    assert JOURNAL.of("mailing") == [OrderShipped("1")]


# -- the mailbox and the stub worker together ---------------------------------------------------


def test_with_the_mailbox_every_publish_is_recorded_and_delivered(
    event_bus: EventMailbox, stub_worker: StubWorker
) -> None:
    stub_worker.bus.reconfigure(handlers={OrderCreated: [Shipping], OrderShipped: [Mailing]})
    set_event_bus_mode("strict")
    eventbus.publish(OrderCreated("1"))
    stub_worker.drain()
    assert JOURNAL.of("shipping") == [OrderCreated("1")]
    assert JOURNAL.of("mailing") == [OrderShipped("1")]
    # The test's event and the one its handler published, both strict, both to be asserted.
    assert event_bus.pending_strict_events() == [OrderCreated("1"), OrderShipped("1")]
    assert_event_published(OrderCreated, order_id="1")
    assert_event_published(OrderShipped, order_id="1")
    shipped = event_bus.records[1]
    assert shipped.handlers == ("tests.testing.events.Mailing",)
    # Its stack starts in the handler that published it, not in Dramatiq's worker.
    assert [(frame.name, frame.filename.rsplit("/", 1)[-1]) for frame in shipped.published_at] == [
        ("handle_event", "events.py")
    ]


def test_an_unasserted_follow_up_event_is_reported(event_bus: EventMailbox, stub_worker: StubWorker) -> None:
    stub_worker.bus.reconfigure(handlers={OrderCreated: [Shipping], OrderShipped: [Mailing]})
    set_event_bus_mode("strict")
    eventbus.publish(OrderCreated("1"))
    stub_worker.drain()
    assert_event_published(OrderCreated)
    with pytest.raises(AssertionError, match=r"(?s)OrderShipped\(order_id='1'\)\n    Published at:\n.*in handle_event"):
        event_bus.assert_no_pending_strict_events()
    assert_event_published(OrderShipped)


def test_inline_mode_and_a_stub_worker_do_not_mix(event_bus: EventMailbox, stub_worker: StubWorker) -> None:
    set_event_bus_mode("inline")
    with pytest.raises(
        RuntimeError, match=r"inline mode runs handlers in the publisher.*set_event_bus_mode\('default'\)"
    ):
        eventbus.publish(OrderCreated("1"))
    stub_worker.drain()
    assert JOURNAL.entries == []
    set_event_bus_mode("default")
    eventbus.publish(OrderCreated("1"))
    stub_worker.drain()
    assert JOURNAL.of("invoicing") == [OrderCreated("1")]


# -- what was published before the stub worker started --------------------------------------------


def test_what_waits_on_the_bus_s_stub_broker_is_delivered_and_other_actors_messages_stay() -> None:
    broker = StubBroker()
    eventbus.configure(handlers={OrderCreated: [Shipping], OrderShipped: [Mailing]}, broker=broker)

    @dramatiq.actor(broker=broker, queue_name="events")
    def foreign() -> None:
        raise AssertionError("not the bus's to run")

    foreign.send()
    eventbus.publish([OrderCreated("1"), OrderShipped("2")])  # the default queue, the partitioned one
    (raw,) = [data for data in broker.queues["events"].queue if b"Shipping" in data]
    broker.enqueue(Message.decode(raw).copy(message_id="retried"), delay=1)  # as a retry waits: delayed
    with stub_worker() as worker:
        worker.drain()
    assert JOURNAL.of("shipping") == [OrderCreated("1"), OrderCreated("1")]
    assert sorted(e.order_id for e in JOURNAL.of("mailing")) == ["1", "1", "2"]
    assert [Message.decode(data).actor_name for data in broker.queues["events"].queue] == ["foreign"]
    assert eventbus.default_bus.broker is broker  # the previous configuration, on the same broker


def test_what_waits_on_a_stub_broker_the_bus_made_is_delivered_too() -> None:
    eventbus.publish(OrderCreated("1"))  # the conftest configured broker="stub"
    with stub_worker() as worker:
        worker.drain()
    assert JOURNAL.of("invoicing") == [OrderCreated("1")]


def test_what_the_mailbox_recorded_before_the_worker_started_is_delivered_once(event_bus: EventMailbox) -> None:
    eventbus.publish(OrderShipped("1"))
    assert JOURNAL.entries == []
    with stub_worker() as worker:
        worker.drain()
    assert JOURNAL.of("mailing") == [OrderShipped("1")]
    with stub_worker() as worker:
        worker.drain()
    assert JOURNAL.of("mailing") == [OrderShipped("1")]
    assert published_events() == [OrderShipped("1")]


# -- time limits -----------------------------------------------------------------------------------


class Sleeping(Handler):
    actor_options = {"time_limit": 100, "max_retries": 0}

    def handle_event(self, event: Any) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # short sleeps: the time limit interrupts between them
            time.sleep(0.01)


def test_each_stub_worker_has_its_own_time_limit_that_ends_with_it() -> None:
    threads_before = set(threading.enumerate())
    eventbus.configure(handlers={OrderCreated: [Sleeping]}, broker="stub")
    other = eventbus.EventBus().configure(handlers={OrderShipped: [Mailing]}, broker="stub")
    with stub_worker() as first, stub_worker(other) as second:
        (first_limit,) = [m for m in first.broker.middleware if isinstance(m, TimeLimit)]
        (second_limit,) = [m for m in second.broker.middleware if isinstance(m, TimeLimit)]
        assert first_limit is not second_limit
        started = time.monotonic()
        eventbus.publish(OrderCreated("1"))
        with pytest.raises(TimeLimitExceeded):
            first.drain()
        assert time.monotonic() - started < 2
    time.sleep(0.05)
    assert set(threading.enumerate()) <= threads_before


def test_an_event_the_broker_refuses_is_not_left_recorded(event_bus: EventMailbox) -> None:
    eventbus.default_bus.reconfigure(max_message_bytes=1024)
    with stub_worker() as worker:
        with pytest.raises(EventEncodeError, match="more than max_message_bytes"):
            eventbus.publish(OrderShipped("x" * 2000))
        assert published_events() == []
        eventbus.publish(OrderShipped("1"))
        worker.drain()
    assert published_events() == [OrderShipped("1")]
    assert JOURNAL.of("mailing") == [OrderShipped("1")]
