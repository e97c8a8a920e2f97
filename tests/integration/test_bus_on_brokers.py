"""The event bus end to end on a real Redis and a real RabbitMQ, with a real ``dramatiq`` CLI worker.

One worker per broker serves every test of this module: ``dramatiq dramatiq_eventbus.worker``
configured only through ``EVENTBUS_*`` variables, on queues unique to the run. Handlers
(tests/integration/handlers.py) record what they saw in Redis, where the tests read it.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import pickle
from collections import Counter
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import pytest

import dramatiq_eventbus
from dramatiq_eventbus.handler import handler_name
from tests.integration import handlers
from tests.integration.support import BROKERS, Deployment, deployed, require, unique
from tests.support.broker_queues import RabbitmqQueues
from tests.support.worker_process import wait_for


@pytest.fixture(scope="module", params=BROKERS)
def deployment(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with deployed(request.param, tmp_path_factory.mktemp(f"workers-{request.param}"), "eventbus_it") as made:
        yield made


@pytest.fixture
def bus(deployment: Deployment) -> Deployment:
    """The default bus configured afresh for each test, as the worker is."""
    require(deployment.broker)
    deployment.configure_publisher()
    return deployment


@pytest.fixture
def tag(request: pytest.FixtureRequest) -> str:
    return unique(request.node.name.split("[")[0])


def test_one_event_fans_out_to_each_of_three_handlers_once_in_the_worker(bus: Deployment, tag: str) -> None:
    dramatiq_eventbus.publish(handlers.FannedOut(tag))

    bus.records.wait_for(tag, 3, bus.worker)
    bus.flush(tag)  # anything else these publishes enqueued has run by now

    records = bus.records.of(tag)
    assert Counter(line["handler"] for line in records) == {"FanOutA": 1, "FanOutB": 1, "FanOutC": 1}
    # In the worker process that the CLI started, not in this one.
    assert {line["pid"] for line in records}.isdisjoint({os.getpid()})
    assert {line["ppid"] for line in records} == {bus.worker.pid}


@pytest.fixture
def unconsumed(deployment: Deployment) -> Iterator[tuple[str, str]]:
    """A queue and a partitioned queue no worker consumes, so that whatever publish() writes stays there
    to be seen; the default bus is configured for them."""
    require(deployment.broker)
    queue, partitioned = unique("eventbus_it_unconsumed"), unique("eventbus_it_unconsumed_partitioned")
    try:
        bus = deployment.configure_publisher(queue=queue, partitioned_queue=partitioned)
        if isinstance(deployment.probe, RabbitmqQueues):
            # Declared up front (as the bus would), so that a count of 0 means empty, not missing.
            for name in (queue, partitioned):
                bus.broker.declare_queue(name, ensure=True)  # type: ignore[call-arg]
                assert deployment.probe.count(name) == 0
        yield queue, partitioned
    finally:
        deployment.probe.delete((queue, partitioned))


def test_no_message_is_written_when_no_handler_is_interested(
    deployment: Deployment, unconsumed: tuple[str, str], tag: str
) -> None:
    queue, partitioned = unconsumed
    probe = deployment.probe
    dramatiq_eventbus.publish(handlers.Announced(tag, audience="nobody"))
    dramatiq_eventbus.publish([handlers.Announced(tag, audience="nobody"), handlers.Announced(tag, "nobody")])

    for name in (queue, partitioned):
        assert probe.count(name) == 0
        assert probe.messages(name) == []

    # The control: one interested handler gives one message, which the same probe sees.
    dramatiq_eventbus.publish(handlers.Announced(tag, audience="vip"))

    assert probe.count(partitioned) == 0
    assert probe.count(queue) == 1
    [message] = probe.messages(queue)
    assert message["actor_name"] == handler_name(handlers.VipOnly)
    assert message["args"][0]["audience"] == "vip"


def test_an_event_too_large_for_the_workers_fails_at_publish_and_nothing_is_sent(
    deployment: Deployment, unconsumed: tuple[str, str], tag: str
) -> None:
    queue, partitioned = unconsumed
    huge = handlers.Announced(tag + "x" * (1 << 20), audience="vip")  # over the default 1 MiB

    # The small event before it is not sent either: publish() of a list sends all or nothing.
    with pytest.raises(dramatiq_eventbus.EventEncodeError, match=r"more than max_message_bytes \(1,048,576\)"):
        dramatiq_eventbus.publish([handlers.Announced(tag, audience="vip"), huge])
    assert deployment.probe.count(queue) == 0

    # Within a raised limit, the same event goes.
    deployment.configure_publisher(queue=queue, partitioned_queue=partitioned, max_message_bytes=2 << 20)
    dramatiq_eventbus.publish(huge)
    assert deployment.probe.count(queue) == 1


def test_error_results_and_exceptions_are_retried_then_dead_lettered(bus: Deployment, tag: str) -> None:
    actors = {handler_name(handlers.ReturnsError), handler_name(handlers.Raises)}

    def dead_letters() -> list[dict[str, Any]]:
        return [
            message
            for message in bus.probe.dead_letters(bus.queue)
            if message["actor_name"] in actors and message["args"][0]["tag"] == tag
        ]

    dramatiq_eventbus.publish(handlers.Doomed(tag))

    def both_dead() -> list[dict[str, Any]] | None:
        letters = dead_letters()
        return letters if len(letters) >= 2 else None

    letters = wait_for(
        both_dead,
        interval=0.2,
        describe=lambda: f"Dead letters: {dead_letters()}; records: {bus.records.of(tag)}{bus.worker.log_tail()}",
    )
    # Dead-lettered after its last attempt, so every attempt has been recorded: max_retries=2 is 3 attempts.
    assert Counter(line["handler"] for line in bus.records.of(tag)) == {"ReturnsError": 3, "Raises": 3}
    by_actor = {message["actor_name"]: message for message in letters}
    assert len(letters) == 2 and set(by_actor) == actors
    # The dead letter is the retried message: RabbitMQ dead-letters the body as enqueued for the last attempt
    # (2 retries so far), Redis the body as the worker left it after that attempt failed (3).
    expected_retries = 3 if bus.broker == "redis" else 2
    assert [message["options"]["retries"] for message in letters] == [expected_retries] * 2
    assert handlers.refusal(tag) in by_actor[handler_name(handlers.ReturnsError)]["options"]["traceback"]
    assert handlers.explosion(tag) in by_actor[handler_name(handlers.Raises)]["options"]["traceback"]
    # The Error's reason is in the worker's log too.
    wait_for(lambda: handlers.refusal(tag) in bus.worker.log(), describe=bus.worker.log_tail)


def _everything(tag: str) -> handlers.Everything:
    paris = ZoneInfo("Europe/Paris")
    return handlers.Everything(
        tag=tag,
        text='naïve café ☕ "quoted" \\ back\nslash',
        count=2**53 + 1,
        ratio=0.1 + 0.2,
        flag=True,
        nothing=None,
        total=Decimal("1234.50"),
        placed_at=datetime(2026, 11, 27, 10, 0, 5, 123456, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        local_at=datetime(2026, 10, 25, 2, 30, tzinfo=paris, fold=1),
        day=date(2026, 2, 28),
        ident=UUID("12345678-1234-5678-9abc-def012345678"),
        items=[1, "two", 3.5, False, None, Decimal("0.10"), date(2027, 1, 1), [UUID(int=7)], {"k": "v"}],
        mapping={"a": 1, "nested": {"b": [Decimal("-0"), None]}, "when": datetime(2026, 1, 1, tzinfo=timezone.utc)},
        inner=handlers.Inner("first", Decimal("9.99"), date(2026, 3, 1)),
        inners=[handlers.Inner("second", Decimal("1E+3"), date(2026, 3, 2))],
    )


def _shape(value: object) -> object:
    """Each value's exact type and repr, through containers and dataclasses: == alone lets 1 == True == 1.0."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value), {f.name: _shape(getattr(value, f.name)) for f in dataclasses.fields(value)})
    if isinstance(value, list):
        return (list, [_shape(item) for item in value])
    if isinstance(value, dict):
        return (dict, {key: _shape(item) for key, item in value.items()})
    return (type(value), repr(value))


def test_event_arrives_with_its_classes_and_values_intact(bus: Deployment, tag: str) -> None:
    sent = _everything(tag)

    dramatiq_eventbus.publish(sent)

    [line] = bus.records.wait_for(tag, 1, bus.worker)
    received = pickle.loads(base64.b64decode(line["received"]))
    assert received == sent
    assert type(received) is handlers.Everything
    assert type(received.inner) is handlers.Inner
    assert _shape(received) == _shape(sent)
    # What the worker saw, named in the worker.
    assert line["event_type"] == "tests.integration.handlers.Everything"
    assert line["field_types"] == {name: type(value).__qualname__ for name, value in vars(sent).items()}
