"""The bus's brokers call middleware hooks as Dramatiq's ``emit_before``/``emit_after`` do, skipping
only the middleware whose hook is Middleware's own, which does nothing."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Middleware, MiddlewareError, SkipMessage

from dramatiq_eventbus.brokers.hooks import OverriddenHooksOnly
from dramatiq_eventbus.brokers.rabbitmq import EventBusRabbitmqBroker
from dramatiq_eventbus.brokers.redis import EventBusRedisBroker


class QuietStubBroker(OverriddenHooksOnly, StubBroker):
    """A StubBroker with the bus's way of emitting."""


class Recording(Middleware):
    """Has the process_message and ack hooks; fails in them as told."""

    def __init__(self, name: str, calls: list[str], fails: dict[str, type[Exception]] | None = None) -> None:
        self.name, self.calls, self.fails = name, calls, fails or {}

    def __repr__(self) -> str:
        return f"Recording({self.name})"

    def _called(self, hook: str, message: Any, *rest: Any) -> None:
        self.calls.append(f"{hook} {self.name} {message} {rest}")
        if hook in self.fails:
            raise self.fails[hook](f"{self.name} refused")

    def before_process_message(self, broker: Any, message: Any) -> None:
        self._called("before_process_message", message)

    def after_process_message(self, broker: Any, message: Any, *, result: Any = None, exception: Any = None) -> None:
        self._called("after_process_message", message, result, exception)

    def after_ack(self, broker: Any, message: Any) -> None:
        self._called("after_ack", message)


class Silent(Middleware):
    """Overrides no hook."""


def run_both(
    plan: list[tuple[str, dict[str, type[Exception]]]], emits: list[tuple[str, tuple[Any, ...], dict[str, Any]]]
) -> list[Any]:
    """Each emit on a StubBroker (Dramatiq's emit) and on the bus's, with the same middleware: what
    each recorded, raised and logged."""
    seen = []
    for broker_class in (StubBroker, QuietStubBroker):
        calls: list[str] = []
        broker = broker_class(middleware=[])
        for name, fails in plan:
            broker.add_middleware(Silent() if name == "silent" else Recording(name, calls, fails))
        outcomes = []
        for method, args, kwargs in emits:
            try:
                getattr(broker, method)(*args, **kwargs)
                outcomes.append(None)
            except Exception as exc:
                outcomes.append(f"{type(exc).__name__}: {exc}")
        seen.append((calls, outcomes))
    return seen


def test_the_hooks_run_as_dramatiqs_own_emit_runs_them(caplog: pytest.LogCaptureFixture) -> None:
    plan = [
        ("a", {}),
        ("silent", {}),
        ("b", {"after_process_message": ValueError, "after_ack": MiddlewareError}),
        ("silent", {}),
        ("c", {"before_process_message": RuntimeError}),
        ("d", {"before_process_message": SkipMessage}),
        ("e", {}),
    ]
    emits: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
        ("emit_before", ("process_message", "m1"), {}),
        ("emit_after", ("process_message", "m1"), {"result": 3}),
        ("emit_after", ("process_message", "m2"), {"exception": KeyError("k")}),
        ("emit_before", ("ack", "m1"), {}),
        ("emit_after", ("ack", "m1"), {}),
    ]
    with caplog.at_level(logging.CRITICAL):
        dramatiqs, ours = run_both(plan, emits)
    assert ours == dramatiqs
    calls, outcomes = ours
    assert outcomes == ["SkipMessage: d refused", None, None, None, None]
    assert calls[:3] == [
        "before_process_message a m1 ()",
        "before_process_message b m1 ()",
        "before_process_message c m1 ()",
    ]
    assert calls[4].startswith("after_process_message e m1")  # after hooks run in reverse
    # Each side logged the same failures: c's RuntimeError, b's ValueError (twice) and MiddlewareError.
    failures = [record.getMessage() for record in caplog.records if "Unexpected failure" in record.getMessage()]
    assert len(failures) == 2 * 4
    assert failures[:4] == failures[4:]


def test_a_middleware_added_after_the_first_emit_takes_part() -> None:
    calls: list[str] = []
    broker = QuietStubBroker(middleware=[])
    broker.add_middleware(Recording("a", calls))
    broker.emit_after("ack", "m1")
    broker.add_middleware(Recording("b", calls))
    broker.emit_after("ack", "m2")
    assert calls == ["after_ack a m1 ()", "after_ack b m2 ()", "after_ack a m2 ()"]


def test_a_middleware_removed_or_replaced_after_the_first_emit_is_not_called_again() -> None:
    calls: list[str] = []
    broker = QuietStubBroker(middleware=[])
    first, second = Recording("a", calls), Recording("b", calls)
    broker.add_middleware(first)
    broker.add_middleware(second)
    broker.emit_after("ack", "m1")
    broker.middleware.remove(first)  # as the Prometheus instrument does when it is taken off
    broker.emit_after("ack", "m2")
    broker.middleware[0] = Recording("c", calls)
    broker.emit_after("ack", "m3")
    assert calls == ["after_ack b m1 ()", "after_ack a m1 ()", "after_ack b m2 ()", "after_ack c m3 ()"]


def test_a_signal_middleware_has_no_hook_for_goes_to_dramatiqs_emit(caplog: pytest.LogCaptureFixture) -> None:
    broker = QuietStubBroker(middleware=[])
    broker.add_middleware(Silent())
    with caplog.at_level(logging.CRITICAL):
        broker.emit_before("something_new", "m1")
    # Dramatiq's emit looks the hook up on every middleware, and logs the one that lacks it.
    assert ["Unexpected failure in before_something_new" in record.getMessage() for record in caplog.records] == [True]


@pytest.mark.parametrize("broker_class", [EventBusRedisBroker, EventBusRabbitmqBroker])
def test_the_bus_brokers_emit_so(broker_class: type) -> None:
    assert broker_class.emit_before is OverriddenHooksOnly.emit_before
    assert broker_class.emit_after is OverriddenHooksOnly.emit_after
