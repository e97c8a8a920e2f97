"""Events and handlers the StubBroker tests configure, by class or by import string."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

from dramatiq_eventbus import Error, Handler

from ..support.journal import Journal

JOURNAL = Journal()


@dataclass(frozen=True)
class Line:
    sku: str
    quantity: int


@dataclass(frozen=True)
class OrderCreated:
    order_id: str
    total: Decimal
    placed_at: datetime = datetime(2026, 11, 27, 10, 0, tzinfo=timezone.utc)
    due: date = date(2026, 12, 1)
    ref: UUID = field(default_factory=lambda: UUID("12345678-1234-5678-1234-567812345678"))
    rate: float = 0.5
    paid: bool = False
    note: str | None = None
    lines: list[Line] = field(default_factory=list)
    extra: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class OrderShipped:
    order_id: str

    def partition_key(self) -> str:
        return self.order_id


@dataclass(frozen=True)
class SpecialOrderCreated(OrderCreated):
    """A subclass: handlers of OrderCreated must not receive it (lookup is by exact class)."""


@dataclass(frozen=True)
class Unhandled:
    value: int


class FinanceHandler(Handler):
    actor_options = {"priority": 3, "max_retries": 9}

    def interested(self, event: Any) -> bool:
        JOURNAL.add("finance.interested", event)
        return not isinstance(event, OrderCreated) or event.total > 0

    def handle_event(self, event: Any) -> Any:
        JOURNAL.add("finance", event)
        return "invoice"


class NotifyHandler(Handler):
    def handle_event(self, event: Any) -> None:
        JOURNAL.add("notify", event)


class AuditHandler(Handler):
    actor_options = {"priority": 9}

    def handle_event(self, event: Any) -> None:
        JOURNAL.add("audit", event)


class NeverInterested(Handler):
    def interested(self, event: Any) -> bool:
        return False

    def handle_event(self, event: Any) -> None:
        JOURNAL.add("never", event)


class FailingWithError(Handler):
    actor_options = {"max_retries": 2}

    def handle_event(self, event: Any) -> Error:
        JOURNAL.add("error", event)
        return Error("ledger locked")


class Raising(Handler):
    actor_options = {"max_retries": 1}

    def handle_event(self, event: Any) -> None:
        JOURNAL.add("raising", event)
        raise RuntimeError("boom")


class NoHandleEvent:
    pass


class DuckHandler:
    """Not a Handler subclass: any class with handle_event will do."""

    def handle_event(self, event: Any) -> None:
        JOURNAL.add("duck", event)


HANDLERS = {
    "tests.unit.handlers:OrderCreated": [
        "tests.unit.handlers:FinanceHandler",
        "tests.unit.handlers:NotifyHandler",
        "tests.unit.handlers:AuditHandler",
    ],
    OrderShipped: [NotifyHandler],
}
