"""A forged message that carries the message id of a lane's head, on a real Redis with an
in-process Dramatiq worker.

Inspection refuses a lane that is not its actor's and key's, so the one forgery left is a
message of the lane's own handler and key carrying the id of the lane's current head: when it
is fetched before the real head, the lane takes it for the head, runs it, moves on, and skips
the real head when it comes. With a
secret key the signature covers the message id, so neither a forged message nor a genuine
one given the head's id runs, and the real head runs at once. Without a key nothing can
tell a forgery from the head, so the skip of the message that lost its turn is a WARNING
naming the lane and the id, not an INFO line.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.message import Message

from dramatiq_eventbus import EventBus
from dramatiq_eventbus.backends import DramatiqBackend
from dramatiq_eventbus.delivery import Delivery
from dramatiq_eventbus.handler import handler_name
from dramatiq_eventbus.ordering import lane_name
from dramatiq_eventbus.signing import Signer
from dramatiq_eventbus.untrusted import shown

from ..support.worker_process import wait_for
from . import in_process
from .handlers import OrderingA, Step

KEY = "the-lanes-key-0123456789abcdef"

#: Far longer than any wait below: a lane that needed its lease to run out, or its sweep,
#: to get its real head going again would fail the test.
LEASE_SECONDS = 60.0


class Lanes(in_process.Lanes):
    """The bus, with lanes in the broker's Redis, and what these tests look at besides."""

    def handled(self, handler: str = "OrderingA") -> list[int]:
        return super().handled(handler)

    def head(self, key: str) -> str:
        (lane,) = [lane for lane in self.bus.lanes() if lane.partition_key == key and lane.handler == actor_a()]
        return lane.head_message_id

    def message_for(self, event: Step) -> Message[Any]:
        """The message publish() would send OrderingA for ``event``: signed, when the bus has a key."""
        spec = next(s for s in self.bus.config.registry.handlers_for(Step) if s.name == actor_a())
        backend = self.bus.config.backend
        assert isinstance(backend, DramatiqBackend)
        return backend.message_for(Delivery(spec, event, self.bus.config.codec.encode(event), event.key, self.queue))


def actor_a() -> str:
    return handler_name(OrderingA)


@pytest.fixture
def lanes(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[Lanes]:
    settings: dict[str, Any] = getattr(request, "param", {})
    with in_process.lanes_on_redis(
        monkeypatch,
        "forged",
        Lanes,
        lane_lease_seconds=LEASE_SECONDS,
        lane_stall_seconds=LEASE_SECONDS,
        default_actor_options={"min_backoff": 20, "max_backoff": 200},
        **settings,
    ) as made:
        yield made


@pytest.fixture
def worker(lanes: Lanes) -> Iterator[dramatiq.Worker]:
    """A Dramatiq worker in this process, on the bus's broker and middleware; started by the test."""
    made = dramatiq.Worker(lanes.bus.broker, worker_threads=2, worker_timeout=100)
    yield made
    made.stop()


def ordering_records(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name.startswith("dramatiq_eventbus.ordering") and r.levelno == level
    ]


def test_without_a_key_the_head_that_lost_its_turn_to_a_forgery_is_skipped_with_a_warning(
    lanes: Lanes, worker: dramatiq.Worker, caplog: pytest.LogCaptureFixture
) -> None:
    key = f"k-{lanes.run}"
    lanes.bus.publish([Step(key, 0, 0), Step(key, 0, 1)])
    head = lanes.head(key)
    # The real head is late (fetched together, it would win: its fetch leases the head the lane
    # scripts put on the queue before the worker enters the others).
    queue_key = f"dramatiq:{lanes.queue}"
    assert lanes.redis.lrem(queue_key, 0, head) == 1
    forged = lanes.message_for(Step(key, 0, 99)).copy(message_id=head)  # anything, under the head's id
    lanes.write_first(forged)
    with caplog.at_level(logging.INFO):
        worker.start()
        wait_for(lambda: lanes.handled() == [99, 1], timeout=10, describe=lambda: f"handled {lanes.handled()}")
        lanes.redis.rpush(queue_key, head)
        wait_for(lambda: not lanes.redis.llen(queue_key) and not lanes.redis.hlen(f"{queue_key}.msgs"), timeout=10)
        time.sleep(0.2)
    # Without a key the forgery cannot be told from the head: it ran in the head's place. What
    # the operator must see is the real head skipped, loudly, naming the lane and the id.
    lane = shown(lane_name(actor_a(), key))
    warnings = [line for line in ordering_records(caplog, logging.WARNING) if line.startswith("Skipping message")]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"Skipping message {shown(head)} of lane {lane}: ")
    assert not [line for line in ordering_records(caplog, logging.INFO) if line.startswith("Skipping message")]


@pytest.mark.parametrize("lanes", [{"secret_key": KEY}], indirect=True)
def test_with_a_key_a_signed_message_given_the_heads_id_is_refused_and_the_head_runs_at_once(
    lanes: Lanes, worker: dramatiq.Worker, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every first attempt fails: the retries of a laned head, under its own id, still verify.
    monkeypatch.setenv("ORDERING_FAIL_FIRST", "1")
    key = f"k-{lanes.run}"
    lanes.bus.publish([Step(key, 0, 0), Step(key, 0, 1)])
    head = lanes.head(key)
    # A genuine message of the same handler and key, signed by the bus (one captured earlier, or
    # the lane's next event read from Redis), replayed under the head's id; and one unsigned.
    replayed = lanes.message_for(Step(key, 0, 98)).copy(message_id=head)
    genuine = lanes.message_for(Step(key, 0, 99))
    unsigned = dataclasses.replace(
        genuine, message_id=head, options={k: v for k, v in genuine.options.items() if k != "signature"}
    )
    for message in (replayed, unsigned):
        lanes.write_first(message)
    with caplog.at_level(logging.INFO):
        worker.start()
        # Well within the lease: the forgeries took no lease on the head at fetch.
        wait_for(lambda: lanes.handled() == [0, 1], timeout=10, describe=lambda: f"handled {lanes.handled()}")
        wait_for(lambda: len(lanes.dead_letters()) == 2, timeout=5)
        time.sleep(0.2)
    assert lanes.handled() == [0, 1]
    assert sorted(m["args"][0]["n"] for m in lanes.dead_letters()) == [98, 99]
    refusals = [r.getMessage() for r in caplog.records if "Dead-lettered message" in r.getMessage()]
    assert len(refusals) == 2 and all("refused: " in line for line in refusals), refusals
    assert not [line for line in ordering_records(caplog, logging.WARNING) if line.startswith("Skipping")]


@pytest.mark.parametrize("lanes", [{"secret_key": KEY}], indirect=True)
def test_with_a_key_a_second_delivery_of_a_handled_head_is_skipped_at_info(
    lanes: Lanes, worker: dramatiq.Worker, caplog: pytest.LogCaptureFixture
) -> None:
    key = f"k-{lanes.run}"
    message = lanes.message_for(Step(key, 0, 0))
    backend = lanes.bus.config.backend
    assert isinstance(backend, DramatiqBackend)
    with caplog.at_level(logging.INFO):
        worker.start()
        backend.send([message])
        wait_for(lambda: lanes.handled() == [0], timeout=10)
        lanes.write_first(message)  # delivered again: verified, so a duplicate, not a forgery
        lanes.bus.publish(Step(key, 0, 1))  # a marker behind it
        wait_for(lambda: lanes.handled() == [0, 1], timeout=10)
        time.sleep(0.2)
    skipped = [line for line in ordering_records(caplog, logging.INFO) if line.startswith("Skipping message")]
    assert len(skipped) == 1 and shown(message.message_id) in skipped[0], skipped
    assert not [line for line in ordering_records(caplog, logging.WARNING) if line.startswith("Skipping")]


@pytest.mark.parametrize("lanes", [{"secret_key": KEY}], indirect=True)
def test_a_genuine_message_is_verified_once_as_its_consumer_reads_it(
    lanes: Lanes, worker: dramatiq.Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The consumer's check passes it; neither the lane gate nor the authentication middleware
    # verifies it again (each verification hashes the whole payload).
    verified: list[str] = []
    problem = Signer.problem

    def counted(signer: Signer, message: Any) -> str | None:
        verified.append(message.message_id)
        return problem(signer, message)

    monkeypatch.setattr(Signer, "problem", counted)
    key = f"k-{lanes.run}"
    lanes.bus.publish([Step(key, 0, 0), Step(key, 0, 1)])
    worker.start()
    wait_for(lambda: lanes.handled() == [0, 1], timeout=10)
    mine = [m for m in verified if m]  # every message of the handlers the events went to
    assert len(mine) == len(set(mine)), f"verified more than once: {sorted(mine)}"


def test_the_signature_covers_the_message_id() -> None:
    signer = Signer((KEY.encode(),))
    message = signer.signed(Message(queue_name="q", actor_name="a.B", args=({"x": 1},), kwargs={}, options={}))
    assert signer.problem(message) is None
    assert "signature is wrong" in str(signer.problem(message.copy(message_id=str(uuid.uuid4()))))


def test_a_message_sent_again_under_a_new_id_is_signed_again() -> None:
    # The outbox relay's path: the stored message goes out under a new id, and must verify.
    bus = EventBus().configure(handlers="tests.ordering.handlers:HANDLERS", broker="stub", secret_key=KEY)
    broker = bus.broker
    assert isinstance(broker, StubBroker)
    backend = bus.config.backend
    assert isinstance(backend, DramatiqBackend) and bus.config.signer is not None
    spec = next(s for s in bus.config.registry.handlers_for(Step) if s.name == actor_a())
    stored = backend.message_for(Delivery(spec, Step("k", 0, 0), {}, "k", bus.config.queues.partitioned))
    backend.send_again([stored], [{"outbox_id": 1}])
    (sent,) = [Message.decode(body) for body in broker.queues[bus.config.queues.partitioned].queue]
    assert sent.message_id != stored.message_id
    assert bus.config.signer.problem(sent) is None
