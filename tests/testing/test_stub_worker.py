"""stub_worker: a real Dramatiq Worker on a StubBroker, and drain()."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
from dramatiq.brokers.stub import StubBroker

import dramatiq_eventbus as eventbus
from dramatiq_eventbus import ConfigurationError, HandlerFailed
from dramatiq_eventbus.backends import DramatiqBackend, InlineBackend
from dramatiq_eventbus.testing import EventMailbox, StubWorker, published_events, recording, stub_worker

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


def test_the_mailbox_is_suspended_inside_and_records_again_after(event_bus: EventMailbox) -> None:
    with stub_worker() as worker:
        eventbus.publish(OrderCreated("1"))
        worker.drain()
    assert JOURNAL.of("invoicing") == [OrderCreated("1")]
    assert published_events() == []
    eventbus.publish(OrderCreated("2"))
    assert published_events() == [OrderCreated("2")]


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
