"""register_type() on a configured bus takes effect at once, for publishers and workers alike."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest

from dramatiq_eventbus import ConfigurationError, EventBus, EventEncodeError, Handler

from ..support.journal import Journal

SEEN = Journal()


class Money:
    """Not a dataclass: the typed codec carries it only once it is registered."""

    def __init__(self, amount: Decimal, currency: str) -> None:
        self.amount = amount
        self.currency = currency

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Money) and (other.amount, other.currency) == (self.amount, self.currency)

    def __hash__(self) -> int:
        return hash((self.amount, self.currency))

    def __repr__(self) -> str:
        return f"Money({self.amount!r}, {self.currency!r})"


@dataclass(frozen=True)
class Paid:
    order_id: str
    amount: Money


@dataclass(frozen=True)
class Other:
    order_id: str


class PaymentHandler(Handler):
    def handle_event(self, event: Any) -> None:
        SEEN.add("paid", event)


def register_money(bus: EventBus) -> None:
    bus.register_type(Money, encode=lambda m: [m.amount, m.currency], decode=lambda v: Money(*v), name="test:Money")


def test_register_type_after_configure_takes_effect_at_once(bus: EventBus, drain: Callable[[], None]) -> None:
    SEEN.clear()
    bus.configure(handlers={Paid: [PaymentHandler]}, broker="stub")
    event = Paid("1", Money(Decimal("9.99"), "EUR"))
    with pytest.raises(EventEncodeError, match="cannot encode"):
        bus.publish(event)
    register_money(bus)
    bus.publish(event)  # the publisher's codec knows Money now
    drain()  # and so does the worker's: its actors decode with the same codec
    assert SEEN.of("paid") == [event]
    bus.reconfigure(backend="inline")  # it lasts across configure() calls
    bus.publish(event)
    assert SEEN.of("paid") == [event, event]


def test_a_registration_a_configured_bus_cannot_take_is_refused_and_changes_nothing(bus: EventBus) -> None:
    bus.configure(handlers={Paid: [PaymentHandler], Other: [PaymentHandler]}, broker="stub", backend="inline")
    before = bus.config
    # Another class cannot take the wire name of an event class.
    with pytest.raises(ConfigurationError, match="two classes go by the wire name"):
        bus.register_type(Money, encode=str, decode=str, name=f"{__name__}:Other")
    assert bus.config is before
    bus.reconfigure()  # the refused registration was not kept either
    with pytest.raises(EventEncodeError, match="cannot encode"):
        bus.publish(Paid("1", Money(Decimal("1"), "EUR")))


def test_register_type_while_other_threads_publish(bus: EventBus) -> None:
    SEEN.clear()
    bus.configure(handlers={Other: [PaymentHandler], Paid: [PaymentHandler]}, broker="stub", backend="inline")
    stop = threading.Event()
    failures: list[BaseException] = []

    def publish_all_along() -> None:
        while not stop.is_set():
            try:
                bus.publish(Other("x"))
            except BaseException as exc:  # pragma: no cover - reported below
                failures.append(exc)
                return

    threads = [threading.Thread(target=publish_all_along) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        register_money(bus)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert failures == []
    bus.publish(Paid("1", Money(Decimal("1"), "EUR")))
    assert SEEN.of("paid")[-1] == Paid("1", Money(Decimal("1"), "EUR"))
