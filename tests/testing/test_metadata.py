"""Metadata in the testing toolkit: the mailbox keeps it, the assertions match on it, run_event sets it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

import dramatiq_eventbus as eventbus
from dramatiq_eventbus import EventContext, Handler, current_context
from dramatiq_eventbus.testing import (
    assert_event_published,
    current_mailbox,
    recording,
    refute_event_published,
    run_event,
    set_event_bus_mode,
    stub_worker,
)

SEEN: list[EventContext | None] = []


@dataclass(frozen=True)
class Placed:
    order_id: str


@dataclass(frozen=True)
class Billed:
    order_id: str


@dataclass(frozen=True)
class Unwanted:
    """No handler is registered for it."""

    order_id: str


class Billing(Handler):
    def handle_event(self, event: Any) -> None:
        SEEN.append(current_context())
        eventbus.publish(Billed(event.order_id))


class Noting(Handler):
    def handle_event(self, event: Any) -> None:
        SEEN.append(current_context())


@pytest.fixture(autouse=True)
def chain() -> None:
    SEEN.clear()
    eventbus.configure(handlers={Placed: [Billing], Billed: [Noting]}, broker="stub")


def a_context(**changes: Any) -> EventContext:
    fields: dict[str, Any] = {
        "event_id": "evt-1",
        "correlation_id": "req-7f3a",
        "causation_id": None,
        "published_at": datetime(2026, 12, 3, tzinfo=UTC),
        "attempt": 2,
        "handler": "billing",
        "partition_key": None,
        "message_id": None,
    }
    return EventContext(**{**fields, **changes})


def test_the_mailbox_keeps_each_event_s_metadata() -> None:
    with recording() as mailbox, eventbus.correlation("req-1"):
        first, second = eventbus.publish([Placed("1"), Billed("2")])
        unwanted = eventbus.publish(Unwanted("3"))
    records = mailbox.records
    assert [r.metadata.event_id for r in records if r.metadata] == [first, second, unwanted]
    assert all(r.metadata is not None and r.metadata.correlation_id == "req-1" for r in records)
    assert records[0].metadata is not None and records[0].metadata.causation_id is None
    assert records[0].metadata.published_at.tzinfo is not None


def test_run_event_sets_the_context_and_the_assertions_match_on_metadata(event_bus: Any) -> None:
    set_event_bus_mode("strict")
    run_event(Placed("1"), Billing, context=a_context())
    assert [a_context()] == SEEN
    with pytest.raises(AssertionError, match="metadata correlation_id='other'"):
        assert_event_published(Billed, correlation_id="other")
    with pytest.raises(AssertionError):
        assert_event_published(Billed, causation_id="evt-2")
    assert assert_event_published(Billed, order_id="1", correlation_id="req-7f3a", causation_id="evt-1") == Billed("1")
    refute_event_published(Billed, causation_id="nothing")


def test_run_event_without_a_context_makes_one_as_publish_would(event_bus: Any) -> None:
    with eventbus.correlation("req-2"):
        run_event(Placed("1"), Billing)
    (context,) = SEEN
    assert context is not None and context.correlation_id == "req-2" and context.attempt == 1
    assert context.handler.endswith("Billing") and context.message_id is None
    (record,) = current_mailbox().records
    assert record.metadata is not None and record.metadata.causation_id == context.event_id
    assert current_context() is None


def test_the_mailbox_s_inline_mode_gives_handlers_their_context(event_bus: Any) -> None:
    set_event_bus_mode("inline")
    with eventbus.correlation("req-3"):
        event_id = eventbus.publish(Placed("1"))
    billing, noting = SEEN
    assert billing is not None and noting is not None
    assert billing.event_id == event_id and noting.causation_id == event_id
    assert {billing.correlation_id, noting.correlation_id} == {"req-3"}


def test_stub_worker_runs_handlers_with_their_context_and_records_the_chain(event_bus: Any) -> None:
    set_event_bus_mode("strict")
    with stub_worker() as worker:
        with eventbus.correlation("req-4"):
            event_id = eventbus.publish(Placed("1"))
        worker.drain()
    billing, noting = SEEN
    assert billing is not None and noting is not None
    assert billing.event_id == event_id and billing.message_id is not None and billing.attempt == 1
    assert noting.causation_id == event_id and noting.correlation_id == "req-4"
    assert_event_published(Placed, correlation_id="req-4", causation_id=None)
    assert_event_published(Billed, correlation_id="req-4", causation_id=event_id)
