"""Bad payloads and forged pickles written straight to a queue are dead-lettered at once,
with nothing executed, and the worker goes on: on a StubBroker and on a real Redis."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
from dramatiq import Message, Worker

from dramatiq_eventbus import EventBus, Handler
from dramatiq_eventbus.brokers.limits import DEFAULT_MAX_MESSAGE_BYTES
from dramatiq_eventbus.handler import handler_name

from ..support.servers import require_redis
from .test_decode_errors import BAD_PAYLOADS, Cart, Item
from .test_pickle import KEY, forged_payloads

NAMESPACE = "dramatiq"  # Dramatiq's RedisBroker's default key prefix


class Cents(Decimal):
    """A Decimal subclass: typed mode encodes exact types only, so this needs the fallback."""


@dataclass(frozen=True)
class Settled:
    order_id: str
    amount: Decimal


class Received:
    """What the handlers got; the worker's threads add to it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: list[Any] = []

    def add(self, event: Any) -> None:
        with self._lock:
            self.events.append(event)

    def take(self) -> list[Any]:
        with self._lock:
            events, self.events = self.events, []
            return events


RECEIVED = Received()


class CartHandler(Handler):
    actor_options = {"max_retries": 3, "min_backoff": 10, "max_backoff": 20}

    def handle_event(self, event: Any) -> None:
        RECEIVED.add(event)


class SettledHandler(Handler):
    actor_options = {"max_retries": 3, "min_backoff": 10, "max_backoff": 20}

    def handle_event(self, event: Any) -> None:
        RECEIVED.add(event)


#: Payloads that reach the codec through a broker: the deeply nested one would fail in the
#: envelope, and one over max_message_bytes is refused by the consumer before it is parsed
#: (tests/faults/test_bad_messages.py has that case).
BAD_ON_THE_WIRE = [
    (payload, problem)
    for payload, problem in BAD_PAYLOADS
    if "nested too deeply" not in problem and len(json.dumps(payload)) < DEFAULT_MAX_MESSAGE_BYTES
]


# -- running a worker on either broker -------------------------------------------------------


class Broker:
    """A bus on one broker, with a unique queue, and a look at its dead letters."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.queue = f"codec-test-{uuid.uuid4().hex[:10]}"
        self.bus = EventBus()

    def configure(self, **arguments: Any) -> None:
        self.bus.configure(broker=self.url, queue=self.queue, partitioned_queue=f"{self.queue}-keyed", **arguments)

    def write(self, handler: type, payload: Any) -> Message[Any]:
        """Put a message on the queue as an attacker with broker access would: no publish().

        Signed with the bus's key when it has one, so that what these tests meet is the
        codec's own check, behind the message authentication (tested on its own).
        """
        message: Message[Any] = Message(
            queue_name=self.queue, actor_name=handler_name(handler), args=(payload,), kwargs={}, options={}
        )
        signer = self.bus.config.signer
        if signer is not None:
            message = signer.signed(message)
        self.bus.broker.enqueue(message)
        return message

    def dead_letters(self) -> dict[str, dict[str, Any]]:
        """Dead-lettered messages by id, with their options."""
        broker = self.bus.broker
        if self.url == "stub":
            return {m.message_id: dict(m.options) for m in broker.dead_letters}  # type: ignore[attr-defined]
        client: redis.Redis = broker.client  # type: ignore[attr-defined]
        bodies = client.hvals(f"{NAMESPACE}:{self.queue}.XQ.msgs")
        return {body["message_id"]: body["options"] for body in map(json.loads, bodies)}

    def run_until(self, done: Callable[[], bool], timeout: float = 20.0) -> None:
        worker = Worker(self.bus.broker, worker_timeout=20, worker_threads=2)
        worker.start()
        try:
            deadline = time.monotonic() + timeout
            while not done():
                assert time.monotonic() < deadline, "the worker did not get through the queue in time"
                time.sleep(0.02)
        finally:
            worker.stop()

    def close(self) -> None:
        broker = self.bus.broker if self.bus.is_configured else None
        if broker is not None and self.url != "stub":
            client: redis.Redis = broker.client  # type: ignore[attr-defined]
            queues = (self.queue, f"{self.queue}-keyed")
            keys = [
                f"{NAMESPACE}:{q}{suffix}"
                for q in queues
                for suffix in ("", ".msgs", ".DQ", ".DQ.msgs", ".XQ", ".XQ.msgs")
            ]
            for key in client.scan_iter(match=f"{NAMESPACE}:__acks__.*", count=1000):
                if key.decode().endswith(tuple(f".{q}{s}" for q in queues for s in ("", ".DQ"))):
                    keys.append(key.decode())
            client.delete(*keys)
            client.zrem(f"{NAMESPACE}:__heartbeats__", broker.broker_id)  # type: ignore[attr-defined]
        if broker is not None:
            broker.close()


@pytest.fixture(params=["stub", pytest.param("redis", marks=pytest.mark.redis)])
def on_broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    url = "stub" if request.param == "stub" else require_redis()
    broker = Broker(url)
    RECEIVED.take()
    try:
        yield broker
    finally:
        broker.close()


def bus_log_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("dramatiq_eventbus") and r.levelno >= 30]


# -- typed mode ---------------------------------------------------------------------------------


def test_each_bad_payload_is_dead_lettered_at_once_and_the_worker_goes_on(
    on_broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    on_broker.configure(handlers={Cart: [CartHandler]})
    bad = [(on_broker.write(CartHandler, payload), problem) for payload, problem in BAD_ON_THE_WIRE]
    good = Cart("c-good", [Item("a", Decimal("1.00"))])
    on_broker.bus.publish(good)
    expected = {message.message_id for message, _ in bad}
    with caplog.at_level(logging.INFO):
        on_broker.run_until(lambda: expected <= set(on_broker.dead_letters()) and len(RECEIVED.events) == 1)
    assert RECEIVED.take() == [good]
    dead = on_broker.dead_letters()
    assert set(dead) == expected
    assert all(not options.get("retries") for options in dead.values())  # no retry was spent on any
    lines = bus_log_lines(caplog)
    for message, problem in bad:
        about = [line for line in lines if message.message_id in line]
        assert len(about) == 1, (problem, about)
        assert "EventDecodeError" in about[0] and problem in about[0], (problem, about[0])
    assert "this" not in sys.modules  # the module one payload named was never imported


# -- pickle mode ----------------------------------------------------------------------------------


def test_forged_pickles_are_dead_lettered_with_nothing_executed(
    on_broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    on_broker.configure(handlers={Settled: [SettledHandler]}, codec="pickle", secret_key=KEY)
    target = tmp_path / "pwned"
    forged = {case: on_broker.write(SettledHandler, payload) for case, payload in forged_payloads(target).items()}
    good = Settled("s-1", Decimal("9.99"))
    on_broker.bus.publish(good)
    expected = {message.message_id for message in forged.values()}
    with caplog.at_level(logging.INFO):
        on_broker.run_until(lambda: expected <= set(on_broker.dead_letters()) and len(RECEIVED.events) == 1)
    assert RECEIVED.take() == [good]
    assert set(on_broker.dead_letters()) == expected
    assert not target.exists(), "a forged pickle was unpickled"
    lines = bus_log_lines(caplog)
    for case, message in forged.items():
        about = [line for line in lines if message.message_id in line]
        assert len(about) == 1 and "EventDecodeError" in about[0], (case, about)


def test_the_typed_fallback_pickle_crosses_the_broker_and_forgeries_do_not(on_broker: Broker, tmp_path: Path) -> None:
    on_broker.configure(handlers={Settled: [SettledHandler]}, secret_key=KEY, pickle_fallback=True)
    target = tmp_path / "pwned"
    forged = on_broker.write(SettledHandler, forged_payloads(target)["zero signature"])
    odd = Settled("s-2", Cents("1.50"))  # a class the typed codec does not know: it goes as a pickle
    on_broker.bus.publish(odd)
    on_broker.run_until(lambda: forged.message_id in on_broker.dead_letters() and len(RECEIVED.events) == 1)
    (received,) = RECEIVED.take()
    assert received == odd and type(received.amount) is Cents
    assert not target.exists()
