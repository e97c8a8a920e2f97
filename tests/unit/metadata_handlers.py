"""Events and handlers for the metadata tests: a chain of three hops, each handler noting its context."""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass
from typing import Any

from dramatiq_eventbus import EventBus, EventContext, Handler, current_context

#: What each handler saw, by handler label; and the bus the chain publishes on.
SEEN: dict[str, list[EventContext | None]] = {}
_lock = threading.Lock()
BUS: list[EventBus] = []
logger = logging.getLogger("tests.metadata")


def note(label: str) -> None:
    with _lock:
        SEEN.setdefault(label, []).append(current_context())


@dataclass(frozen=True)
class Ordered:
    order_id: str


@dataclass(frozen=True)
class Invoiced:
    order_id: str


@dataclass(frozen=True)
class Mailed:
    order_id: str

    def partition_key(self) -> str:
        return self.order_id


class OrderedFirst(Handler):
    def handle_event(self, event: Any) -> None:
        note("ordered.first")
        logger.warning("handling %s", event.order_id)
        BUS[0].publish(Invoiced(event.order_id))


class OrderedSecond(Handler):
    def handle_event(self, event: Any) -> None:
        note("ordered.second")


class InvoicedHandler(Handler):
    async def handle_event(self, event: Any) -> None:
        note("invoiced")
        BUS[0].publish(Mailed(event.order_id))


class MailedHandler(Handler):
    def handle_event(self, event: Any) -> None:
        note("mailed")


class FlakyMailed(Handler):
    """Fails its first two attempts."""

    def handle_event(self, event: Any) -> None:
        note("flaky")
        if len(SEEN["flaky"]) < 3:
            raise RuntimeError("not yet")


@dataclass(frozen=True)
class Slow:
    n: str


class AsyncSlowNoter(Handler):
    """Notes its context before and after an await, while the other messages' handlers run."""

    async def handle_event(self, event: Any) -> None:
        before = current_context()
        await asyncio.sleep(0.05)
        with _lock:
            SEEN.setdefault("slow", []).append((before, current_context()))  # type: ignore[arg-type]


CHAIN = {Ordered: [OrderedFirst, OrderedSecond], Invoiced: [InvoicedHandler], Mailed: [MailedHandler]}
