"""The bus's own batch sends call the enqueue hooks as Dramatiq's ``emit_before``/``emit_after`` do,
skipping only the middleware whose hook is Middleware's own, which does nothing."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.message import Message
from dramatiq.middleware import Middleware, MiddlewareError

from dramatiq_eventbus.brokers.sending import BatchFailed, emit_before_enqueue, emit_enqueue_hooks


class Recording(Middleware):
    def __init__(self, name: str, calls: list[str], *, fails_with: type[Exception] | None = None) -> None:
        self.name, self.calls, self.fails_with = name, calls, fails_with

    def before_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        self.calls.append(f"before {self.name} {message.message_id}")
        if self.fails_with is not None:
            raise self.fails_with("refused")

    def after_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        self.calls.append(f"after {self.name} {message.message_id}")
        if self.fails_with is not None:
            raise self.fails_with("refused")


class Silent(Middleware):
    """Overrides no enqueue hook."""


def broker_with(*middleware: Middleware) -> StubBroker:
    broker = StubBroker(middleware=[])
    for each in middleware:
        broker.add_middleware(each)
    return broker


def batch(count: int) -> list[Message[Any]]:
    return [
        Message(queue_name="q", actor_name="a", args=(), kwargs={}, options={}, message_id=str(n)) for n in range(count)
    ]


def test_the_hooks_run_in_dramatiqs_order_for_each_message() -> None:
    ours: list[str] = []
    theirs: list[str] = []
    for calls, emit in ((ours, "bus"), (theirs, "dramatiq")):
        broker = broker_with(Recording("a", calls), Silent(), Recording("b", calls))
        messages = batch(2)
        for when in ("before", "after"):
            if emit == "bus":
                emit_enqueue_hooks(broker, when, messages)
            else:
                for message in messages:
                    getattr(broker, f"emit_{when}")("enqueue", message, None)
    assert ours == theirs
    assert ours[:2] == ["before a 0", "before b 0"] and ours[4:6] == ["after b 0", "after a 0"]


def test_a_before_hook_that_refuses_stops_the_batch_and_another_failure_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []
    broker = broker_with(Recording("broken", calls, fails_with=ValueError), Recording("refusing", calls))
    with caplog.at_level(logging.CRITICAL):
        emit_enqueue_hooks(broker, "before", batch(1))
    assert calls == ["before broken 0", "before refusing 0"]  # a ValueError is logged and passed over
    assert "Unexpected failure in before_enqueue" in caplog.text

    calls.clear()
    broker = broker_with(Recording("refusing", calls, fails_with=MiddlewareError), Recording("next", calls))
    with pytest.raises(BatchFailed) as failed:
        emit_before_enqueue(broker, batch(2))
    assert isinstance(failed.value.cause, MiddlewareError) and failed.value.sent == 0
    assert calls == ["before refusing 0"]


def test_an_after_hook_that_fails_is_logged_and_the_others_still_run(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []
    broker = broker_with(Recording("first", calls), Recording("failing", calls, fails_with=MiddlewareError))
    with caplog.at_level(logging.CRITICAL):
        emit_enqueue_hooks(broker, "after", batch(1))
    assert calls == ["after failing 0", "after first 0"]
    assert "Unexpected failure in after_enqueue" in caplog.text


def test_middleware_added_after_a_send_has_its_hooks_called_by_the_next() -> None:
    calls: list[str] = []
    broker = broker_with(Silent(), Recording("a", calls))
    message = Message(queue_name="q", actor_name="x", args=(), kwargs={}, options={}, message_id="m1")
    emit_enqueue_hooks(broker, "before", [message])
    broker.add_middleware(Recording("b", calls))
    broker.add_middleware(Recording("c", calls), before=Silent)
    emit_enqueue_hooks(broker, "before", [message])
    emit_enqueue_hooks(broker, "after", [message])
    first = ["before a m1"]
    assert calls == [*first, "before c m1", "before a m1", "before b m1", "after b m1", "after a m1", "after c m1"]
