"""publish(): the pipeline from an event to one message per interested handler, on a StubBroker."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.message import Message

import dramatiq_eventbus as eventbus
from dramatiq_eventbus import ConfigurationError, EventBus, EventEncodeError, HandlerFailed, PublishError
from dramatiq_eventbus.backends import DramatiqBackend
from dramatiq_eventbus.delivery import Delivery

from .handlers import (
    HANDLERS,
    JOURNAL,
    AuditHandler,
    FailingWithError,
    FinanceHandler,
    Line,
    NeverInterested,
    NotifyHandler,
    OrderCreated,
    OrderShipped,
    SpecialOrderCreated,
    Unhandled,
)


def queued(broker: StubBroker, queue: str) -> list[Message[Any]]:
    """The messages waiting on a StubBroker queue, decoded, without consuming them."""
    return [Message.decode(data) for data in list(broker.queues[queue].queue)]


@pytest.fixture
def configured(bus: EventBus) -> EventBus:
    JOURNAL.clear()
    return bus.configure(handlers=HANDLERS, broker="stub")


def test_one_message_per_interested_handler_in_configured_order(configured: EventBus) -> None:
    configured.publish(OrderCreated("123", Decimal("100")))
    messages = queued(configured.broker, "events")
    assert [m.actor_name for m in messages] == [
        "tests.unit.handlers.FinanceHandler",
        "tests.unit.handlers.NotifyHandler",
        "tests.unit.handlers.AuditHandler",
    ]


def test_interested_runs_in_the_caller_and_filters_before_any_io(configured: EventBus) -> None:
    free = OrderCreated("1", Decimal("0"))
    configured.publish(free)
    assert JOURNAL.of("finance.interested") == [free]  # called synchronously, with the event itself
    assert [m.actor_name for m in queued(configured.broker, "events")] == [
        "tests.unit.handlers.NotifyHandler",
        "tests.unit.handlers.AuditHandler",
    ]


class Exploding(StubBroker):
    """A broker on which any enqueue fails the test: proof that no I/O happened."""

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        raise AssertionError(f"unexpected enqueue of {message}")


def test_no_handler_registered_warns_and_does_no_io(bus: EventBus, caplog: pytest.LogCaptureFixture) -> None:
    bus.configure(handlers=HANDLERS, broker=Exploding())
    with caplog.at_level(logging.WARNING, logger="dramatiq_eventbus"):
        bus.publish(Unhandled(1))
    assert "No handlers registered for event: tests.unit.handlers.Unhandled" in caplog.messages


def test_no_handler_interested_does_no_io(bus: EventBus) -> None:
    bus.configure(handlers={OrderCreated: [NeverInterested]}, broker=Exploding())
    bus.publish(OrderCreated("1", Decimal("5")))
    bus.publish([])


def test_lookup_is_by_exact_class(configured: EventBus, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="dramatiq_eventbus"):
        configured.publish(SpecialOrderCreated("1", Decimal("5")))
    assert queued(configured.broker, "events") == []
    assert caplog.messages == [
        "No handlers registered for event: tests.unit.handlers.SpecialOrderCreated; its base class "
        "tests.unit.handlers.OrderCreated has handlers: subscriptions are to the exact class, register the "
        "handlers for tests.unit.handlers.SpecialOrderCreated too"
    ]


def test_a_list_is_sent_together_after_every_event_is_encoded(bus: EventBus) -> None:
    class Recording:
        def __init__(self) -> None:
            self.calls: list[Sequence[Delivery]] = []

        def deliver(self, deliveries: Sequence[Delivery]) -> None:
            self.calls.append(deliveries)

    backend = Recording()
    bus.configure(handlers=HANDLERS, broker="stub", backend=backend)
    bus.publish([OrderCreated("1", Decimal("5")), OrderShipped("1"), OrderCreated("2", Decimal("0"))])
    assert len(backend.calls) == 1
    assert [(d.handler.handler_class, d.event.order_id) for d in backend.calls[0]] == [
        (FinanceHandler, "1"),
        (NotifyHandler, "1"),
        (AuditHandler, "1"),
        (NotifyHandler, "1"),
        (NotifyHandler, "2"),
        (AuditHandler, "2"),
    ]


class Opaque:
    """Not a dataclass: the typed codec cannot encode it."""


def test_an_event_that_cannot_be_encoded_fails_the_whole_call_with_nothing_sent(configured: EventBus) -> None:
    bad = OrderCreated("2", Decimal("5"), extra={"x": Opaque()})  # type: ignore[dict-item]
    with pytest.raises(EventEncodeError) as raised:
        configured.publish([OrderCreated("1", Decimal("5")), bad])
    assert isinstance(raised.value, TypeError)
    assert "OrderCreated.extra['x']: cannot encode" in str(raised.value)
    assert "Opaque" in str(raised.value)
    assert queued(configured.broker, "events") == []


def test_an_event_too_large_for_the_workers_fails_at_publish_on_a_stub_broker_too(configured: EventBus) -> None:
    # What the bus's Redis and RabbitMQ brokers refuse at publish() (tests/integration), so that
    # a test on the StubBroker does not pass where production would fail.
    too_long = OrderCreated("2", Decimal("5"), lines=[Line("x" * (1 << 20), 1)])
    too_many = OrderCreated("3", Decimal("5"), lines=[Line("", 1)] * 17_000)  # 16,384 objects and lists at most
    for event, problem in ((too_long, "more than max_message_bytes"), (too_many, "JSON objects and lists")):
        with pytest.raises(EventEncodeError, match=problem) as raised:
            configured.publish([OrderCreated("1", Decimal("5")), event])
        assert "raise max_message_bytes on workers and publishers alike" in str(raised.value)
        assert queued(configured.broker, "events") == []
    configured.reconfigure(max_message_bytes=4 << 20)
    configured.publish([too_long, too_many])
    assert {message.args[0]["order_id"] for message in queued(configured.broker, "events")} == {"2", "3"}


@pytest.mark.parametrize("value", [None, "OrderCreated", 42, {"order_id": "1"}, [None], [OrderShipped("1"), "x"]])
def test_publish_refuses_values_that_are_not_events(configured: EventBus, value: Any) -> None:
    with pytest.raises(TypeError, match="publish\\(\\) takes an event object or a list of them"):
        configured.publish(value)
    assert queued(configured.broker, "events") == []
    assert queued(configured.broker, "events_partitioned") == []


def test_publishing_before_configure_says_to_call_configure(bus: EventBus) -> None:
    with pytest.raises(ConfigurationError, match=r"call dramatiq_eventbus\.configure"):
        bus.publish(OrderShipped("1"))


def test_partitioned_events_go_to_their_own_queue_and_carry_the_key(configured: EventBus) -> None:
    configured.publish([OrderShipped("o-7"), OrderCreated("o-7", Decimal("1"))])
    (shipped,) = queued(configured.broker, "events_partitioned")
    assert shipped.options["partition_key"] == "o-7"
    assert shipped.options["event_type"] == "tests.unit.handlers:OrderShipped"
    assert {m.options["partition_key"] for m in queued(configured.broker, "events")} == {None}
    assert {m.options["event_type"] for m in queued(configured.broker, "events")} == {
        "tests.unit.handlers:OrderCreated"
    }


def test_queue_names_are_configurable(bus: EventBus) -> None:
    bus.configure(handlers=HANDLERS, broker="stub", queue="bus", partitioned_queue="bus_keyed")
    bus.publish([OrderShipped("o-1"), OrderCreated("o-1", Decimal("1"))])
    assert len(queued(bus.broker, "bus_keyed")) == 1
    assert len(queued(bus.broker, "bus")) == 3


def test_the_envelope_is_plain_json_with_the_encoded_event_as_the_only_argument(configured: EventBus) -> None:
    configured.publish(OrderCreated("9", Decimal("12.50"), lines=[Line("book", 2)]))
    raw = configured.broker.queues["events"].queue[0]
    envelope = json.loads(raw)
    (payload,) = envelope["args"]
    assert payload["$type"] == "tests.unit.handlers:OrderCreated"
    assert payload["order_id"] == "9"
    assert payload["total"] == {"$decimal": "12.50"}
    assert payload["lines"][0]["sku"] == "book"
    assert envelope["kwargs"] == {}


def test_actors_have_stable_readable_names_options_and_priorities(configured: EventBus) -> None:
    actors = configured.config.actors
    finance = actors["tests.unit.handlers.FinanceHandler"]
    notify = actors["tests.unit.handlers.NotifyHandler"]
    assert finance.priority == 3
    assert finance.options["max_retries"] == 9
    assert notify.priority == 0  # the defaults: priority 0, five attempts
    assert notify.options["max_retries"] == 4
    assert finance.queue_name == "events"


def test_rabbitmq_messages_carry_the_priority_with_the_most_urgent_highest() -> None:
    broker = RabbitmqBroker(url="amqp://127.0.0.1:5672", max_priority=10)  # never connects here
    bus = EventBus().configure(handlers=HANDLERS, broker=broker)
    backend = bus.config.backend
    assert isinstance(backend, DramatiqBackend)
    spec = {s.handler_class: s for s in bus.config.registry.handlers}
    event = OrderCreated("1", Decimal("1"))

    def broker_priority(handler: type) -> int:
        message = backend.message_for(Delivery(spec[handler], event, {}, None, "events"))
        return int(message.options["broker_priority"])

    assert broker_priority(NotifyHandler) == 9  # priority 0
    assert broker_priority(FinanceHandler) == 6  # priority 3
    assert broker_priority(AuditHandler) == 0  # priority 9


def test_no_broker_priority_without_queue_priorities(configured: EventBus) -> None:
    configured.publish(OrderShipped("1"))
    assert "broker_priority" not in queued(configured.broker, "events_partitioned")[0].options


def test_a_broker_failure_is_a_publish_error_naming_what_was_sent(bus: EventBus) -> None:
    class FailsOnThird(StubBroker):
        count = 0

        def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
            self.count += 1
            if self.count == 3:
                raise ConnectionError("connection reset")
            return super().enqueue(message, delay=delay)

    bus.configure(handlers=HANDLERS, broker=FailsOnThird())
    with pytest.raises(PublishError) as raised:
        bus.publish(OrderCreated("1", Decimal("1")))
    assert raised.value.sent == ("tests.unit.handlers.FinanceHandler", "tests.unit.handlers.NotifyHandler")
    assert raised.value.unsent == ("tests.unit.handlers.AuditHandler",)
    assert "ConnectionError: connection reset" in str(raised.value)
    assert "2 of 3 messages are known to be sent" in str(raised.value)


def test_the_inline_backend_runs_handlers_in_the_caller(bus: EventBus) -> None:
    JOURNAL.clear()
    bus.configure(handlers=HANDLERS, broker="stub", backend="inline")
    event = OrderCreated("1", Decimal("7"), lines=[Line("a", 1)])
    bus.publish(event)
    assert JOURNAL.of("finance") == [event]
    assert JOURNAL.of("notify") == [event]
    assert JOURNAL.of("finance")[0] is not event  # it made the codec's round trip, as in a worker
    assert queued(bus.broker, "events") == []


def test_the_inline_backend_raises_an_error_result(bus: EventBus) -> None:
    bus.configure(handlers={OrderShipped: [FailingWithError]}, broker="stub", backend="inline")
    with pytest.raises(HandlerFailed, match=r"^FailingWithError\.handle_event failed: ledger locked$") as raised:
        bus.publish(OrderShipped("1"))
    assert raised.value.reason == "ledger locked"


def test_module_level_publish_uses_the_default_bus() -> None:
    JOURNAL.clear()
    eventbus.configure(handlers=HANDLERS, broker="stub", backend="inline")
    eventbus.publish(OrderShipped("x"))
    assert JOURNAL.of("notify") == [OrderShipped("x")]


@dataclass(frozen=True)
class Keyed:
    key: Any

    def partition_key(self) -> Any:
        return self.key


@dataclass(frozen=True)
class Foreign:
    account: int


@eventbus.partition_key.register
def _foreign_key(event: Foreign) -> int:
    return event.account


def test_partition_keys() -> None:
    assert eventbus.partition_key(Keyed("a")) == "a"
    assert eventbus.partition_key(Keyed(7)) == "7"
    assert eventbus.partition_key(Keyed(None)) is None
    assert eventbus.partition_key(Foreign(12)) == "12"  # registered for a class we do not own
    assert eventbus.partition_key(OrderCreated("1", Decimal("1"))) is None
    for bad in (1.5, True, ("a",), b"a"):
        with pytest.raises(TypeError, match="partition key of Keyed must be a str, an int or None"):
            eventbus.partition_key(Keyed(bad))


def test_a_bad_partition_key_fails_publish(bus: EventBus) -> None:
    bus.configure(handlers={Keyed: [NotifyHandler]}, broker="stub")
    with pytest.raises(TypeError, match="partition key of Keyed"):
        bus.publish(Keyed(1.5))


@dataclass(frozen=True)
class KeyField:
    """Its key is a field, not a method."""

    partition_key: str


@dataclass(frozen=True)
class KeyProperty:
    order_id: int

    @property
    def partition_key(self) -> int:
        return self.order_id


def test_a_partition_key_field_or_property_is_the_key_too() -> None:
    # Once ignored without a word: the events went unordered.
    assert eventbus.partition_key(KeyField("a")) == "a"
    assert eventbus.partition_key(KeyProperty(7)) == "7"
    with pytest.raises(TypeError, match="partition key of KeyField must be a str, an int or None"):
        eventbus.partition_key(KeyField(1.5))  # type: ignore[arg-type]


def test_a_class_with_a_key_field_property_method_or_registered_function_is_partitioned() -> None:
    from dramatiq_eventbus.partition import has_partition_key

    for keyed in (KeyField, KeyProperty, Keyed, Foreign):
        assert has_partition_key(keyed), keyed
    assert not has_partition_key(OrderCreated)
