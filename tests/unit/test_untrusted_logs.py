"""Values read from a broker or a database reach log lines, errors and the CLI escaped and cut short.

A forged message controls its id, its options (a lane, a partition key, an event type),
its Redis id, and what it makes a handler or a relay say: unescaped, a newline forges a
log record and an escape sequence drives the operator's terminal; uncut, a 100 kB id
makes a 100 kB line. Each test forges one such value and reads the line it reaches.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from dramatiq.broker import MessageProxy
from dramatiq.brokers.stub import StubBroker
from dramatiq.message import Message
from dramatiq.middleware import SkipMessage
from sqlalchemy import create_engine

from dramatiq_eventbus import Error, EventBus, Handler, HandlerFailed, PublishError
from dramatiq_eventbus.backends import DramatiqBackend
from dramatiq_eventbus.brokers import EventBusRedisBroker
from dramatiq_eventbus.brokers.inspection import Refusal, inspect_body, log_dead_lettered
from dramatiq_eventbus.brokers.rabbitmq import upstream as rabbitmq_upstream
from dramatiq_eventbus.brokers.rabbitmq.consumer import RabbitmqConsumer
from dramatiq_eventbus.cli import main
from dramatiq_eventbus.middleware import DeadLetterReasons
from dramatiq_eventbus.middleware.authentication import REFUSED
from dramatiq_eventbus.ordering import (
    Finished,
    FinishStatus,
    LaneStatus,
    LaneSweeper,
    LocalCoordinator,
    SharedCallsCoordinator,
    Verdict,
)
from dramatiq_eventbus.ordering.lanes import Redispatch, warn_if_lost
from dramatiq_eventbus.transactions import Outbox, OutboxRelay

from ..support.broker_queues import RedisQueues
from ..support.servers import require_redis

#: A value a forged message can carry: a line break that would start a record of its own,
#: a terminal escape sequence, and 100 kB of it.
FORGED = "x\n2026-01-01 [CRITICAL] forged record \x1b[2J" + "y" * 100_000

#: Longer than any line these tests accept; a forged value would make it 100 kB.
BOUND = 2_000


def assert_safe(line: str) -> None:
    """No line break, no escape character, and a bounded length: the forged value was escaped and cut."""
    assert "\n" not in line and "\r" not in line
    assert "\x1b" not in line
    assert len(line) < BOUND, len(line)


def bus_lines(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("dramatiq_eventbus") and r.levelno >= level]


def forged_message(**options: Any) -> Message[Any]:
    return Message(
        queue_name="events",
        actor_name="tests.unit.handlers.NotifyHandler",
        args=({},),
        kwargs={},
        options=options,
        message_id=FORGED,
    )


# -- inspection, before a message reaches the worker ------------------------------------------


def test_the_consumers_dead_letter_line_escapes_and_cuts_a_forged_message_id(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        broker = SimpleNamespace(refusal_listener=None)
        log_dead_lettered(broker, "events", Refusal("it names queue 'elsewhere'", FORGED), where="Redis id 1")
    (line,) = bus_lines(caplog)
    assert_safe(line)
    assert line.startswith("Dead-lettered message 'x\\n2026-01-01 [CRITICAL] forged")


def test_a_refusal_names_unknown_envelope_fields_within_bounds() -> None:
    fields = {"queue_name": "events", "actor_name": "a", "args": [], "kwargs": {}, "options": {}}
    fields.update({f"{FORGED[:50_000]}{n}": 1 for n in range(2)})
    refusal = inspect_body(json.dumps(fields).encode(), {}, "events")
    assert isinstance(refusal, Refusal)
    assert "unknown field(s)" in refusal.reason
    assert_safe(refusal.reason)


# -- the worker's dead-letter line ------------------------------------------------------------


def test_the_dead_letter_line_escapes_and_cuts_a_forged_message_id(caplog: pytest.LogCaptureFixture) -> None:
    bus = EventBus().configure(handlers="tests.unit.handlers:HANDLERS", broker="stub")
    message = MessageProxy(forged_message(event_type="tests.unit.handlers:OrderShipped"))
    message.fail()
    with caplog.at_level(logging.INFO):
        DeadLetterReasons(None).after_process_message(bus.broker, message, exception=ValueError("boom"))
    (line,) = bus_lines(caplog)
    assert_safe(line)


def test_a_refused_reason_carried_by_a_forged_message_is_escaped_and_cut(caplog: pytest.LogCaptureFixture) -> None:
    # The option the authentication middleware writes: a message may arrive with it already
    # set, then be failed by something else (e.g. its max_age) before it runs.
    bus = EventBus().configure(handlers="tests.unit.handlers:HANDLERS", broker="stub")
    message = MessageProxy(forged_message(**{REFUSED: FORGED}))
    message.fail()
    with caplog.at_level(logging.INFO):
        DeadLetterReasons(None).after_skip_message(bus.broker, message)
    (line,) = bus_lines(caplog)
    assert_safe(line)


# -- the ordering's lines: lanes and message ids ----------------------------------------------

FORGED_LANE = f"tests.unit.handlers.NotifyHandler:{FORGED}"


class FakeLanes:
    """A lane store that answers what each test needs, without Redis."""

    lease_ms = 15_000
    stall_ms = 60_000
    sends_heads = False

    def __init__(self, verdict: Verdict = Verdict.RUN, renewed: bool = True, sweep: list[Redispatch] = ()) -> None:  # type: ignore[assignment]
        self.verdict = verdict
        self.renewed = renewed
        self.swept = list(sweep)

    def enter_many(self, entries: Any) -> list[Verdict]:
        return [self.verdict for _ in entries]

    def finish(self, *_: Any, **__: Any) -> Finished:
        return Finished(FinishStatus.LOST)

    def finish_many(self, heads: Any) -> list[Finished]:
        return [Finished(FinishStatus.LOST) for _ in heads]

    def renew(self, leases: Any) -> list[bool]:
        return [self.renewed for _ in leases]

    def sweep(self, limit: int = 100) -> list[Redispatch]:
        swept, self.swept = self.swept, []
        return swept


def test_a_worker_without_lanes_names_a_forged_lane_and_id_within_bounds(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        LocalCoordinator().start(StubBroker(), MessageProxy(forged_message(lane=FORGED_LANE)), FORGED_LANE)
    (line,) = bus_lines(caplog)
    assert_safe(line)


def test_the_lease_lost_line_escapes_and_cuts_the_lane_and_id(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        warn_if_lost(FORGED_LANE, FORGED, FinishStatus.LOST)
    (line,) = bus_lines(caplog)
    assert_safe(line)


@pytest.mark.parametrize("verdict", [Verdict.STALE, Verdict.BUSY])
def test_a_skipped_message_is_named_within_bounds(caplog: pytest.LogCaptureFixture, verdict: Verdict) -> None:
    coordinator = SharedCallsCoordinator(FakeLanes(verdict), lambda messages: None)  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO), pytest.raises(SkipMessage):
        coordinator.start(StubBroker(), MessageProxy(forged_message(lane=FORGED_LANE)), FORGED_LANE)
    (line,) = bus_lines(caplog)
    assert_safe(line)


def test_a_dead_lettered_head_and_a_lost_lease_are_named_within_bounds(caplog: pytest.LogCaptureFixture) -> None:
    coordinator = SharedCallsCoordinator(FakeLanes(Verdict.RUN), lambda messages: None)  # type: ignore[arg-type]
    message = MessageProxy(forged_message(lane=FORGED_LANE))
    with caplog.at_level(logging.INFO):
        coordinator.start(StubBroker(), message, FORGED_LANE)
        message.fail()
        coordinator.finish(StubBroker(), message, FORGED_LANE, retrying=False)
    lines = bus_lines(caplog)
    assert len(lines) == 2, lines  # moves on past it; its lease had been lost
    for line in lines:
        assert_safe(line)


def test_the_sweeps_lines_escape_and_cut_the_lanes_they_name(caplog: pytest.LogCaptureFixture) -> None:
    broker = StubBroker()
    broker.declare_queue("events")
    body = forged_message().encode()
    lanes = FakeLanes(renewed=False, sweep=[Redispatch(FORGED_LANE, "dispatched", 61_000, 1, body)])
    coordinator = SharedCallsCoordinator(lanes, lambda messages: None)  # type: ignore[arg-type]
    coordinator.start(broker, MessageProxy(forged_message(lane=FORGED_LANE)), FORGED_LANE)  # a lease to renew
    with caplog.at_level(logging.INFO):
        LaneSweeper(coordinator).sweep_once(broker)
    lines = bus_lines(caplog)
    assert len(lines) == 2, lines  # the lease lost; the stalled lane sent again
    for line in lines:
        assert_safe(line)


def test_a_stalled_head_that_cannot_be_sent_again_keeps_no_other_lane_from_it(caplog: pytest.LogCaptureFixture) -> None:
    # A stored message written by hand raised out of the sweep, and the stalled lanes after it
    # in the same sweep (already marked as sent again) were not sent until their next deadline;
    # one that decodes but that the broker will not take (a queue it does not know here; on
    # RabbitMQ, a queue name over 255 bytes) raised so at every sweep.
    broker = StubBroker()
    broker.declare_queue("events")
    body = forged_message().copy(queue_name="events").encode()
    refused = forged_message().copy(queue_name="a-queue-nobody-declared").encode()
    lanes = FakeLanes(
        renewed=True,
        sweep=[
            Redispatch(FORGED_LANE, "dispatched", 61_000, 1, FORGED.encode() + b"\xff"),
            Redispatch(FORGED_LANE, "dispatched", 61_000, 0, None, skipped=3),
            Redispatch(FORGED_LANE, "dispatched", 61_000, 1, refused),
            Redispatch("handler:fine", "dispatched", 61_000, 1, body),
        ],
    )
    coordinator = SharedCallsCoordinator(lanes, lambda messages: None)  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO):
        LaneSweeper(coordinator).sweep_once(broker)
    assert broker.queues["events"].qsize() == 1, "the lane after the broken ones was not sent again"
    lines = bus_lines(caplog)
    # cannot be decoded; 3 events dropped; stalled and sent again, then refused; the fine lane sent again
    assert len(lines) == 5, lines
    assert "could not be sent again" in lines[3]
    for line in lines:
        assert_safe(line)


# -- the RabbitMQ consumer ---------------------------------------------------------------------


def test_the_rabbitmq_consumer_names_a_message_it_cannot_ack_within_bounds(caplog: pytest.LogCaptureFixture) -> None:
    consumer = RabbitmqConsumer.__new__(RabbitmqConsumer)  # only what ack() reads
    consumer.logger = logging.getLogger("dramatiq_eventbus.brokers.rabbitmq.consumer.RabbitmqConsumer")
    consumer.known_tags = set()
    consumer.broker = SimpleNamespace(delivery_hook=None)  # no lanes: an unknown tag is only logged
    with caplog.at_level(logging.INFO):
        consumer.ack(rabbitmq_upstream.delivery(False, 7, forged_message()))
    (line,) = bus_lines(caplog)
    assert_safe(line)


# -- the handler's actor -----------------------------------------------------------------------


@dataclass(frozen=True)
class Said:
    text: str


class Echoing(Handler):
    """Fails with what the event says: a reason may well quote the payload."""

    actor_options: dict[str, Any] = {"max_retries": 0}

    def handle_event(self, event: Said) -> Error:
        return Error(event.text)


def test_a_handlers_reason_that_quotes_the_event_is_logged_escaped_and_cut(caplog: pytest.LogCaptureFixture) -> None:
    bus = EventBus().configure(handlers={Said: [Echoing]}, broker="stub")
    (actor,) = bus.config.actors.values()
    with caplog.at_level(logging.INFO), pytest.raises(HandlerFailed):
        actor.fn(bus.config.codec.encode(Said(FORGED)))
    (line,) = bus_lines(caplog)
    assert_safe(line)


# -- the CLI -----------------------------------------------------------------------------------


def test_eventbus_lanes_prints_what_redis_holds_escaped_and_cut(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A partition key is often a value a user typed; the event type and the head's id are
    # read back from the stored message.
    forged = LaneStatus(
        handler=FORGED,
        partition_key=FORGED,
        state="dispatched",
        head_message_id=FORGED,
        event_type=FORGED,
        age_seconds=12.0,
        attempts=1,
        pending=3,
        event_id=FORGED,
    )
    monkeypatch.setattr("dramatiq_eventbus.cli.arguments_from_env", lambda: {"handlers": {}, "broker": "stub"})
    monkeypatch.setattr(EventBus, "lanes", lambda self, older_than_seconds=0.0: [forged])
    assert main(["lanes"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2, "a line break in a value started a line of its own"
    assert_safe(lines[1])


# -- the outbox relay --------------------------------------------------------------------------


@pytest.fixture
def sqlite_outbox() -> Iterator[tuple[Any, Outbox]]:
    engine = create_engine("sqlite://")
    outbox = Outbox("outbox")
    outbox.create(engine)
    yield engine, outbox
    engine.dispose()


def test_a_relay_pass_that_fails_on_a_row_says_so_within_bounds(
    sqlite_outbox: tuple[Any, Outbox], caplog: pytest.LogCaptureFixture
) -> None:
    engine, outbox = sqlite_outbox
    bus = EventBus().configure(handlers="tests.unit.handlers:HANDLERS", broker="stub")
    with engine.begin() as connection:
        connection.execute(
            outbox.table.insert(),
            [{"queue_name": "events", "actor_name": "a", "message": FORGED.encode() + b"\xff"}],
        )
    relay = OutboxRelay(outbox, engine, bus=bus)
    with caplog.at_level(logging.INFO):
        assert relay.relay_once().set_aside == 1  # set aside, not a failed pass: no traceback quotes the row
    (line,) = [r.getMessage() for r in caplog.records if "Set aside outbox row" in r.getMessage()]
    assert_safe(line)
    with engine.connect() as connection:
        (failure,) = connection.execute(outbox.table.select()).mappings().all()
    assert_safe(failure["failure"])


def test_a_publish_error_names_the_actors_of_outbox_rows_within_bounds() -> None:
    bus = EventBus().configure(handlers="tests.unit.handlers:HANDLERS", broker="stub")
    backend = bus.config.backend
    assert isinstance(backend, DramatiqBackend)
    # Rows of a database someone else can write to: the first is sent, the second names a
    # queue the StubBroker does not have, and the error names the actors of those sent.
    stored = [
        Message(queue_name=queue, actor_name=f"{FORGED}{n}", args=({},), kwargs={}, options={})
        for n, queue in enumerate([bus.config.queues.default, "nowhere"])
    ]
    with pytest.raises(PublishError) as failure:
        backend.send_again(stored, [{}, {}])
    assert failure.value.sent == (f"{FORGED}0",)
    assert_safe(str(failure.value))


# -- the Redis consumer, on a real Redis -------------------------------------------------------


@pytest.fixture
def redis_broker() -> Iterator[tuple[EventBusRedisBroker, str]]:
    url = require_redis()
    queue = f"untrusted_{uuid.uuid4().hex[:10]}"
    bus = EventBus().configure(
        handlers="tests.unit.handlers:HANDLERS", broker=url, queue=queue, partitioned_queue=f"{queue}_keyed"
    )
    broker = bus.broker
    assert isinstance(broker, EventBusRedisBroker)
    yield broker, queue
    probe = RedisQueues(url)
    probe.delete((queue, f"{queue}_keyed"))
    probe.forget_brokers([broker.broker_id])
    probe.close()
    broker.close()


@pytest.mark.redis
def test_the_redis_consumer_names_a_forged_redis_id_within_bounds(
    redis_broker: tuple[EventBusRedisBroker, str], caplog: pytest.LogCaptureFixture
) -> None:
    broker, queue = redis_broker
    client: Any = redis.Redis.from_url(require_redis())
    # An id without a body, and a body that is not a message under another forged id.
    client.rpush(f"dramatiq:{queue}", f"1{FORGED}", f"2{FORGED}")
    client.hset(f"dramatiq:{queue}.msgs", f"2{FORGED}", b"not json")
    consumer = broker.consume(queue, prefetch=4, timeout=100)
    with caplog.at_level(logging.INFO):
        assert next(consumer) is None
    consumer.close()
    lines = bus_lines(caplog)
    assert len(lines) == 2, lines
    for line in lines:
        assert_safe(line)


@pytest.mark.redis
def test_a_redis_id_that_is_not_utf8_is_dropped_and_the_consumer_goes_on(
    redis_broker: tuple[EventBusRedisBroker, str], caplog: pytest.LogCaptureFixture
) -> None:
    broker, queue = redis_broker
    client: Any = redis.Redis.from_url(require_redis())
    client.rpush(f"dramatiq:{queue}", b"\xff\xfe forged")
    client.hset(f"dramatiq:{queue}.msgs", b"\xff\xfe forged", b"not json")
    genuine = Message(
        queue_name=queue, actor_name="tests.unit.handlers.NotifyHandler", args=({},), kwargs={}, options={}
    )
    broker.enqueue(genuine)
    consumer = broker.consume(queue, prefetch=4, timeout=100)
    with caplog.at_level(logging.INFO):
        delivered = next(consumer)
        assert delivered is not None and delivered.message_id == genuine.message_id
        consumer.ack(delivered)
    consumer.close()
    (line,) = bus_lines(caplog)
    assert_safe(line)
    acks = [key for key in client.scan_iter(match=f"dramatiq:__acks__.*.{queue}") if client.scard(key)]
    assert acks == [], "the forged id stayed in the worker's ack set"
    # Moved to the dead letters, under its own id.
    assert client.hexists(f"dramatiq:{queue}.XQ.msgs", b"\xff\xfe forged")
