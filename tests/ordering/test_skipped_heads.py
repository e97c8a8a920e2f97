"""A lane's head that Dramatiq skips before it starts (AgeLimit's max_age) moves its lane on.

On a real Redis with an in-process Dramatiq worker, with the lanes in the broker's Redis (the
consumer takes the leases at fetch) and in a Redis of their own (the worker threads enter the
lanes). AgeLimit runs before the ordering: a head past its max_age was failed and skipped
without its lane ever being entered, so nothing finished the lane. The sweep sent the head
again every lane_stall_seconds, AgeLimit skipped it again, and the key's later events never
ran. Such a head is now dead-lettered like a failed one: its lane moves on, with one line.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
from dramatiq.broker import MessageProxy
from dramatiq.message import Message

from dramatiq_eventbus import EventBus
from dramatiq_eventbus.backends import DramatiqBackend
from dramatiq_eventbus.delivery import Delivery
from dramatiq_eventbus.handler import handler_name
from dramatiq_eventbus.ordering import GatedCoordinator, PartitionOrdering, SharedCallsCoordinator

from ..support.servers import require_redis
from ..support.worker_process import wait_for
from ..unit.handlers import NotifyHandler
from . import in_process
from .handlers import OrderingA, Step
from .in_process import Lanes

#: The handlers' max_age: the head published first is older than this when the worker starts.
MAX_AGE_MS = 2_000
#: Far longer than the test: a lane that needed its sweep to move on would fail it.
STALL_SECONDS = 60.0
KEY = "skipped-heads-key-0123456789abcdef"
HANDLERS = ("OrderingA", "OrderingB", "OrderingC")

IN_BROKER = "lanes in the broker's Redis"
OWN_REDIS = "lanes in a Redis of their own"


def _lanes_url(url: str, where: str) -> str | None:
    return None if where == IN_BROKER else url.rsplit("/", 1)[0] + "/5"


@pytest.fixture
def bus_settings() -> dict[str, Any]:
    """More configure() arguments; a test parametrizes it to change them."""
    return {}


@pytest.fixture(params=[IN_BROKER, OWN_REDIS])
def lanes(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, bus_settings: dict[str, Any]
) -> Iterator[Lanes]:
    with in_process.lanes_on_redis(
        monkeypatch,
        "skipped",
        Lanes,
        lanes_url=_lanes_url(require_redis(), request.param),
        lane_lease_seconds=STALL_SECONDS,
        lane_stall_seconds=STALL_SECONDS,
        default_actor_options={"min_backoff": 20, "max_backoff": 200, "max_age": MAX_AGE_MS},
        **bus_settings,
    ) as made:
        ordering = next(m for m in made.bus.broker.middleware if isinstance(m, PartitionOrdering))
        expected = GatedCoordinator if request.param == IN_BROKER else SharedCallsCoordinator
        assert type(ordering.coordinator) is expected
        yield made


@pytest.fixture
def worker(lanes: Lanes) -> Iterator[dramatiq.Worker]:
    made = dramatiq.Worker(lanes.bus.broker, worker_threads=2, worker_timeout=100)
    yield made
    made.stop()


def moved_on_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("dramatiq_eventbus.ordering") and "moves on past" in r.getMessage()
    ]


def test_a_head_past_its_max_age_is_dead_lettered_and_its_lane_moves_on(
    lanes: Lanes, worker: dramatiq.Worker, caplog: pytest.LogCaptureFixture
) -> None:
    key = f"k-{lanes.run}"
    lanes.bus.publish(Step(key, 0, 0))
    time.sleep(MAX_AGE_MS / 1000 + 0.2)  # the head ages past max_age, as in a backlog...
    lanes.bus.publish([Step(key, 0, 1), Step(key, 0, 2)])  # ...and the events behind it do not
    with caplog.at_level(logging.INFO):
        worker.start()
        wait_for(
            lambda: all(lanes.handled(h) == [1, 2] for h in HANDLERS),
            timeout=10,
            describe=lambda: f"handled {[lanes.handled(h) for h in HANDLERS]}",
        )
        time.sleep(0.3)
    assert sorted((m["actor_name"].rsplit(".", 1)[1], m["args"][0]["n"]) for m in lanes.dead_letters()) == [
        (h, 0) for h in HANDLERS
    ]
    lines = moved_on_lines(caplog)
    assert len(lines) == 3, lines  # one per lane
    assert all("before it started" in line for line in lines), lines
    assert not [lane for lane in lanes.bus.lanes() if lane.partition_key == key]  # nothing left for the sweep


@pytest.mark.parametrize("bus_settings", [{"secret_key": KEY}])
def test_with_a_key_a_refused_message_under_the_heads_id_does_not_move_the_lane(
    lanes: Lanes, worker: dramatiq.Worker, caplog: pytest.LogCaptureFixture
) -> None:
    # Refused before AgeLimit looks at it, but failed and skipped all the same: it must not pass
    # for the head, which would then be dropped.
    key = f"k-{lanes.run}"
    lanes.bus.publish([Step(key, 0, 0), Step(key, 0, 1)])
    (head,) = [
        lane.head_message_id
        for lane in lanes.bus.lanes()
        if lane.handler == handler_name(OrderingA) and lane.partition_key == key
    ]
    spec = next(s for s in lanes.bus.config.registry.handlers_for(Step) if s.name == handler_name(OrderingA))
    backend = lanes.bus.config.backend
    assert isinstance(backend, DramatiqBackend)
    genuine = backend.message_for(
        Delivery(spec, Step(key, 0, 99), lanes.bus.config.codec.encode(Step(key, 0, 99)), key, lanes.queue)
    )
    forged = dataclasses.replace(
        genuine,
        message_id=head,
        message_timestamp=0,
        options={k: v for k, v in genuine.options.items() if k != "signature"},
    )
    lanes.write_first(forged)
    with caplog.at_level(logging.INFO):
        worker.start()
        wait_for(
            lambda: lanes.handled("OrderingA") == [0, 1], timeout=10, describe=lambda: f"{lanes.handled('OrderingA')}"
        )
        time.sleep(0.3)
    assert [m["args"][0]["n"] for m in lanes.dead_letters()] == [99]
    assert not moved_on_lines(caplog)


def test_without_lanes_a_skipped_delivery_does_not_free_the_lane_a_running_one_holds() -> None:
    # Order within each process: a lane is held from before_process_message to the after hooks.
    # A delivery skipped before the ordering saw it (AgeLimit, or refused by the keys) never
    # took the lane, and must not give it up for the delivery of the same id that runs.
    bus = EventBus().configure(handlers="tests.unit.handlers:HANDLERS", broker="stub")
    ordering = next(m for m in bus.broker.middleware if isinstance(m, PartitionOrdering))
    actor = handler_name(NotifyHandler)
    options = {"partition_key": "k", "event_type": "tests.unit.handlers:OrderShipped"}
    running = MessageProxy(Message(queue_name="q", actor_name=actor, args=({},), kwargs={}, options=options))
    duplicate = MessageProxy(Message(**{**running.asdict(), "options": dict(options)}))
    after = MessageProxy(Message(queue_name="q", actor_name=actor, args=({},), kwargs={}, options=options))
    ordering.before_process_message(bus.broker, running)
    duplicate.fail()
    ordering.after_skip_message(bus.broker, duplicate)
    entered = threading.Event()
    waiting = threading.Thread(target=lambda: (ordering.before_process_message(bus.broker, after), entered.set()))
    waiting.start()
    assert not entered.wait(0.3), "the next message took the lane while the first still ran"
    ordering.after_process_message(bus.broker, running)
    assert entered.wait(5)
    waiting.join(5)
    ordering.after_process_message(bus.broker, after)
