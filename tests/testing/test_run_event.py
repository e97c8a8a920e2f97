"""run_event(): one event through one handler, in the caller, after the codec round trip."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

import dramatiq_eventbus as eventbus
from dramatiq_eventbus import ConfigurationError, EventEncodeError, Handler
from dramatiq_eventbus.testing import HandlerFailed, Outcome, run_event

from .events import JOURNAL, Carrying, Exploding, Invoicing, Mailing, Opaque, OrderCreated, Refusing, Unwired


def test_processed_with_the_handler_s_result() -> None:
    assert run_event(OrderCreated("1"), Invoicing) == Outcome.processed("invoice-1")


def test_processed_with_none_for_a_handler_returning_nothing() -> None:
    outcome = run_event(OrderCreated("1"), Mailing)
    assert outcome == Outcome.processed() == Outcome.processed(None)
    assert (outcome.status, outcome.result, outcome.reason) == ("processed", None, None)


def test_not_interested_skips_handle_event() -> None:
    assert run_event(OrderCreated("free", Decimal("0")), Invoicing) == Outcome.not_interested()
    assert JOURNAL.of("invoicing") == []


def test_an_error_result_is_a_failed_outcome_or_with_check_handler_failed() -> None:
    outcome = run_event(OrderCreated("1"), Refusing)
    assert outcome == Outcome.failed("ledger locked")
    assert (outcome.status, outcome.reason) == ("failed", "ledger locked")
    with pytest.raises(HandlerFailed, match=r"^Refusing.handle_event failed: ledger locked$"):
        run_event(OrderCreated("1"), Refusing, check=True)
    assert run_event(OrderCreated("1"), Mailing, check=True) == Outcome.processed()


def test_exceptions_from_the_handler_propagate() -> None:
    with pytest.raises(RuntimeError, match="boom on 1"):
        run_event(OrderCreated("1"), Exploding)


def test_the_handler_may_be_an_import_path() -> None:
    assert run_event(OrderCreated("1"), "tests.testing.events:Invoicing") == Outcome.processed("invoice-1")
    with pytest.raises(ConfigurationError, match="has no attribute 'Nope'"):
        run_event(OrderCreated("1"), "tests.testing.events:Nope")
    with pytest.raises(TypeError, match="handler must be a handler class"):
        run_event(OrderCreated("1"), Invoicing())  # type: ignore[arg-type]


def test_the_handler_receives_the_decoded_copy() -> None:
    event = OrderCreated("1", Decimal("2.50"))
    run_event(event, Mailing)
    (received,) = JOURNAL.of("mailing")
    assert received == event and received is not event


def test_an_event_the_codec_cannot_encode_fails_even_for_an_uninterested_handler() -> None:
    class NotInterested(Handler):
        def interested(self, event: Any) -> bool:
            return False

        def handle_event(self, event: Any) -> None:
            pass

    with pytest.raises(EventEncodeError, match=r"Carrying\.thing: cannot encode"):
        run_event(Carrying(Opaque()), NotInterested)


def test_an_event_class_not_wired_yet_still_runs_through_the_typed_codec() -> None:
    assert run_event(Unwired(3), Mailing) == Outcome.processed()
    assert JOURNAL.of("mailing") == [Unwired(3)]


def test_without_configure_a_typed_codec_for_the_event_is_used() -> None:
    bus = eventbus.EventBus()
    assert run_event(OrderCreated("1"), Invoicing, bus=bus) == Outcome.processed("invoice-1")
    with pytest.raises(EventEncodeError):
        run_event(Carrying(Opaque()), Mailing, bus=bus)


def test_outcomes_compare_and_show_as_they_are_built() -> None:
    assert Outcome.processed(1) != Outcome.processed(2)
    assert Outcome.failed("x") != Outcome.processed("x")
    assert {Outcome.not_interested(), Outcome.not_interested()} == {Outcome.not_interested()}
    assert repr(Outcome.processed([1])) == "Outcome.processed([1])"
    assert repr(Outcome.failed("x")) == "Outcome.failed('x')"
    assert repr(Outcome.not_interested()) == "Outcome.not_interested()"


def test_the_contract_names_import_from_the_testing_package() -> None:
    from dramatiq_eventbus.testing import (  # noqa: F401
        HandlerFailed,
        Outcome,
        assert_event_published,
        assert_no_pending_strict_events,
        get_event_bus_mode,
        published_events,
        refute_event_published,
        run_event,
        set_event_bus_mode,
    )

    assert HandlerFailed is eventbus.HandlerFailed


class NeedsALedger(Handler):
    def __init__(self, ledger: list[str]) -> None:
        self.ledger = ledger

    def handle_event(self, event: OrderCreated) -> str:
        self.ledger.append(event.order_id)
        return f"entry-{event.order_id}"


def test_a_handler_with_dependencies_is_made_as_the_bus_makes_it() -> None:
    ledger: list[str] = []
    bus = eventbus.EventBus().configure(
        handlers={OrderCreated: [NeedsALedger]}, broker="stub", handler_factory=lambda cls: cls(ledger)
    )
    assert run_event(OrderCreated("7"), NeedsALedger, bus=bus) == Outcome.processed("entry-7")
    assert ledger == ["7"]
    # Not among the bus's handlers: made by its factory all the same.
    other = eventbus.EventBus().configure(handlers={}, broker="stub", handler_factory=lambda cls: cls(ledger))
    assert run_event(OrderCreated("8"), NeedsALedger, bus=other) == Outcome.processed("entry-8")
