"""Events and handlers for the testing toolkit's tests."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import dramatiq_eventbus as eventbus
from dramatiq_eventbus import Error, Handler

from ..support.journal import Journal

JOURNAL = Journal()


@dataclass(frozen=True)
class OrderCreated:
    order_id: str
    total: Decimal = Decimal("10")


@dataclass(frozen=True)
class PriorityOrderCreated(OrderCreated):
    """A subclass: lookup and assertions are by exact class."""


@dataclass(frozen=True)
class OrderCancelled:
    order_id: str
    reason: str = "changed mind"


@dataclass(frozen=True)
class OrderShipped:
    order_id: str

    def partition_key(self) -> str:
        return self.order_id


@dataclass(frozen=True)
class PaymentFailed:
    order_id: str


@dataclass(frozen=True)
class Unwired:
    """No handler is registered for it."""

    value: int


class Opaque:
    """A plain class: no codec can carry it."""


@dataclass(frozen=True)
class Carrying:
    thing: object


class Invoicing(Handler):
    def interested(self, event: OrderCreated) -> bool:
        return event.total > 0

    def handle_event(self, event: OrderCreated) -> str:
        JOURNAL.add("invoicing", event)
        return f"invoice-{event.order_id}"


class Mailing(Handler):
    def handle_event(self, event: Any) -> None:
        JOURNAL.add("mailing", event)


class Auditing(Handler):
    def handle_event(self, event: Any) -> None:
        JOURNAL.add("auditing", event)


class Shipping(Handler):
    """Ships an order once it is invoiced: a handler that publishes."""

    def handle_event(self, event: OrderCreated) -> None:
        JOURNAL.add("shipping", event)
        eventbus.publish(OrderShipped(event.order_id))


class Refusing(Handler):
    actor_options = {"max_retries": 2}

    def handle_event(self, event: Any) -> Error:
        JOURNAL.add("refusing", event)
        return Error("ledger locked")


class Exploding(Handler):
    """Fails every attempt, even with a backoff of a minute: the stub worker retries at once anyway."""

    actor_options = {"min_backoff": 60_000, "max_backoff": 60_000}

    def handle_event(self, event: Any) -> None:
        JOURNAL.add("exploding", event)
        raise RuntimeError(f"boom on {event.order_id}")


class Never(Handler):
    def interested(self, event: Any) -> bool:
        return False

    def handle_event(self, event: Any) -> None:
        JOURNAL.add("never", event)


HANDLERS: dict[type, list[type]] = {
    OrderCreated: [Invoicing, Mailing, Auditing],
    PriorityOrderCreated: [Mailing],
    OrderCancelled: [Mailing, Never],
    OrderShipped: [Mailing],
    PaymentFailed: [Never],
    Carrying: [Mailing],
}
