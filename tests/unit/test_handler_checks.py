"""Handlers checked at configure(), built by a factory, and named in their errors at publish()."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.message import Message

import dramatiq_eventbus as eventbus
from dramatiq_eventbus import ConfigurationError, EventBus, Handler, InterestedFailed

from .handlers import JOURNAL, NotifyHandler, OrderCreated, OrderShipped, SpecialOrderCreated, Unhandled


def configure_error(bus: EventBus, **arguments: Any) -> str:
    arguments.setdefault("broker", StubBroker())
    with pytest.raises(ConfigurationError) as raised:
        bus.configure(**arguments)
    return str(raised.value)


def queued(broker: StubBroker, queue: str) -> list[Message[Any]]:
    return [Message.decode(data) for data in list(broker.queues[queue].queue)]


# -- a Handler subclass must define handle_event -----------------------------------------------


class NamedItHandle(Handler):
    """The mistake: the method is called ``handle``, so Handler's own handle_event would run."""

    def handle(self, event: Any) -> None:
        JOURNAL.add("never", event)


class Nothing(Handler):
    pass


class Inherits(NotifyHandler):
    """A subclass of a handler that has handle_event: that one is its own."""


def test_a_handler_subclass_without_its_own_handle_event_is_a_configuration_error(bus: EventBus) -> None:
    message = configure_error(bus, handlers={OrderCreated: [NamedItHandle]})
    assert message == (
        f"handler {__name__}.NamedItHandle does not define handle_event(event): Handler's own only raises "
        "NotImplementedError, so every message would fail. Define handle_event(self, event) on NamedItHandle "
        "(it defines handle(); rename it handle_event)"
    )
    message = configure_error(bus, handlers={OrderCreated: [Nothing]})
    assert message.startswith(f"handler {__name__}.Nothing does not define handle_event(event)")
    assert message.endswith("Define handle_event(self, event) on Nothing")


def test_a_handler_may_inherit_handle_event_from_another_handler(bus: EventBus) -> None:
    bus.configure(handlers={OrderShipped: [Inherits]}, broker="stub")
    assert [spec.handler_class for spec in bus.config.registry.handlers_for(OrderShipped)] == [Inherits]


# -- handler_factory: handlers with dependencies -----------------------------------------------


class Database:
    def __init__(self) -> None:
        self.rows: list[Any] = []
        self.lock = threading.Lock()

    def insert(self, row: Any) -> None:
        with self.lock:
            self.rows.append(row)


class NeedsDatabase(Handler):
    def __init__(self, db: Database) -> None:
        self.db = db

    def handle_event(self, event: Any) -> None:
        self.db.insert(event)


class AlsoNeedsDatabase(NeedsDatabase):
    pass


def test_a_handler_with_dependencies_says_how_to_give_them(bus: EventBus) -> None:
    message = configure_error(bus, handlers={OrderShipped: [NeedsDatabase]})
    assert f"handler {__name__}.NeedsDatabase cannot be created with no arguments: TypeError(" in message
    assert "configure(handler_factory=...)" in message


def test_handler_factory_gives_handlers_their_dependencies_once_at_configure(
    bus: EventBus, drain: Callable[[], None]
) -> None:
    db = Database()
    made: list[type] = []

    def factory(handler_class: type) -> Any:
        made.append(handler_class)
        return handler_class(db) if issubclass(handler_class, NeedsDatabase) else handler_class()

    bus.configure(
        handlers={OrderShipped: [NeedsDatabase, NotifyHandler], Unhandled: [NeedsDatabase, AlsoNeedsDatabase]},
        broker="stub",
        handler_factory=factory,
    )
    # Once per class, at configure(), even for a class listed under two events.
    assert made == [NeedsDatabase, NotifyHandler, AlsoNeedsDatabase]
    bus.publish([OrderShipped("1"), Unhandled(2)])
    drain()  # a real Dramatiq worker runs the instances the factory made
    assert sorted(map(repr, db.rows)) == sorted(map(repr, [OrderShipped("1"), Unhandled(2), Unhandled(2)]))
    assert made == [NeedsDatabase, NotifyHandler, AlsoNeedsDatabase]
    bus.reconfigure(backend="inline")  # the factory is kept
    assert bus.config.registry.handlers_for(OrderShipped)[0].instance.db is db


@pytest.mark.parametrize(
    ("factory", "expected"),
    [
        ("tests:make", "handler_factory must be a callable that takes a handler class and returns an instance"),
        (lambda cls: None, "handler_factory returned None for handler {name}: it must return an instance of"),
        (lambda cls: NotifyHandler(), "handler_factory returned a NotifyHandler for handler {name}"),
        (lambda cls: cls(), "handler_factory failed to create handler {name}: TypeError("),
    ],
)
def test_a_bad_handler_factory_is_named_at_configure(bus: EventBus, factory: Any, expected: str) -> None:
    message = configure_error(bus, handlers={OrderShipped: [NeedsDatabase]}, handler_factory=factory)
    assert expected.format(name=f"{__name__}.NeedsDatabase") in message


def test_the_module_level_configure_takes_a_handler_factory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dramatiq.broker, "global_broker", None)
    db = Database()
    eventbus.configure(
        handlers={OrderShipped: [NeedsDatabase]}, broker="stub", backend="inline", handler_factory=lambda c: c(db)
    )
    eventbus.publish(OrderShipped("m"))
    assert db.rows == [OrderShipped("m")]
    monkeypatch.setenv("EVENTBUS_HANDLERS", f"{__name__}:WITH_DEPENDENCIES")
    monkeypatch.setenv("EVENTBUS_BROKER_URL", "stub")
    monkeypatch.setenv("EVENTBUS_BACKEND", "inline")
    eventbus.configure_from_env(handler_factory=lambda c: c(db))
    eventbus.publish(OrderShipped("e"))
    assert db.rows == [OrderShipped("m"), OrderShipped("e")]


WITH_DEPENDENCIES = {OrderShipped: [NeedsDatabase]}


# -- subscriptions are to the exact class ------------------------------------------------------


def test_an_event_whose_base_class_has_handlers_says_subscriptions_are_exact(
    bus: EventBus, caplog: pytest.LogCaptureFixture
) -> None:
    bus.configure(handlers={OrderCreated: [NotifyHandler]}, broker="stub")
    with caplog.at_level(logging.WARNING, logger="dramatiq_eventbus"):
        bus.publish([SpecialOrderCreated("1", Decimal("5")), Unhandled(1)])
    assert caplog.messages == [
        "No handlers registered for event: tests.unit.handlers.SpecialOrderCreated; its base class "
        "tests.unit.handlers.OrderCreated has handlers: subscriptions are to the exact class, register the "
        "handlers for tests.unit.handlers.SpecialOrderCreated too",
        "No handlers registered for event: tests.unit.handlers.Unhandled",
    ]


# -- interested() that raises --------------------------------------------------------------------


class Picky(Handler):
    def interested(self, event: Any) -> bool:
        if event.total < 0:
            raise ValueError("a negative total")
        return True

    def handle_event(self, event: Any) -> None:
        JOURNAL.add("picky", event)


@dataclass(frozen=True)
class Refund:
    total: Decimal


def test_an_interested_that_raises_is_named_and_nothing_of_the_publish_is_sent(bus: EventBus) -> None:
    bus.configure(handlers={OrderCreated: [NotifyHandler, Picky], Refund: [NotifyHandler]}, broker="stub")
    bad = OrderCreated("2", Decimal("-1"))
    with pytest.raises(InterestedFailed) as raised:
        bus.publish([Refund(Decimal("1")), OrderCreated("1", Decimal("5")), bad])
    message = str(raised.value)
    assert message.startswith(
        f"{__name__}.Picky.interested() raised ValueError: a negative total, for the event "
        "tests.unit.handlers.OrderCreated OrderCreated(order_id='2', total=Decimal('-1'), "
    )
    assert message.endswith("…; nothing of this publish() was sent")  # a long repr is cut
    assert isinstance(raised.value.__cause__, ValueError)
    assert raised.value.handler == f"{__name__}.Picky"
    assert raised.value.event is bad
    assert queued(bus.broker, "events") == []


def test_an_interested_that_raises_sends_nothing_from_a_deferred_block_either(bus: EventBus) -> None:
    bus.configure(handlers={OrderCreated: [NotifyHandler, Picky]}, broker="stub")
    with pytest.raises(InterestedFailed), bus.deferred():
        bus.publish(OrderCreated("1", Decimal("5")))
        bus.publish(OrderCreated("2", Decimal("-1")))
    assert queued(bus.broker, "events") == []
