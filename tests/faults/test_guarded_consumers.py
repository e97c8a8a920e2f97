"""The bus's consumers, up close: what they refuse, and what they put back on a Redis queue.

The end-to-end tests (bad messages, crashes, outages) show the outcome with real workers;
these pin each mechanism down in-process, with no timing left to chance.
"""

from __future__ import annotations

import gc
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from dramatiq.broker import MessageProxy
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message

from dramatiq_eventbus import EventBus
from dramatiq_eventbus.brokers import EventBusRedisBroker, Refusal, inspect_body
from dramatiq_eventbus.handler import handler_name
from tests.support.broker_queues import RabbitmqQueues, RedisQueues
from tests.support.servers import require_rabbitmq, require_redis

from . import handlers

TICK_A = handler_name(handlers.TickA)


@pytest.fixture(scope="module")
def stub_bus() -> EventBus:
    return EventBus().configure(handlers=handlers.HANDLERS, broker="stub")


def envelope(**changes: Any) -> bytes:
    fields: dict[str, Any] = {
        "queue_name": "events",
        "actor_name": TICK_A,
        "args": [{"$type": "tests.faults.handlers:Tick", "run": "r", "n": 1}],
        "kwargs": {},
        "options": {},
        "message_id": str(uuid.uuid4()),
        "message_timestamp": 1_700_000_000_000,
    }
    fields.update(changes)
    return json.dumps({key: value for key, value in fields.items() if value is not ...}).encode()


def queue_of(body: bytes | None) -> str:
    """Where a test body is found: the delay queue for one that names it, else ``events``."""
    return "events.DQ" if body is not None and b'"events.DQ"' in body else "events"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (None, "it has an id in the queue but no body"),
        (b"{nope", "its envelope cannot be decoded (JSONDecodeError: Expecting property name"),
        (b"\xff\xfe", "its envelope cannot be decoded (UnicodeDecodeError:"),
        (b"42", "its envelope is an int, not an object"),
        (envelope(actor_name=...), "its envelope lacks actor_name"),
        (envelope(priority=3), "its envelope has unknown field(s) 'priority'"),
        (envelope(args="abc"), "its args is a str, not a list or a tuple"),
        (envelope(options=[]), "its options is a list, not a dict"),
        (envelope(message_id=7), "its message_id is an int, not a str"),
        (envelope(message_timestamp=True), "its message_timestamp is a bool, not an int or a float"),
        (envelope(actor_name="gone.Handler"), "no actor named 'gone.Handler' is declared in this worker"),
        (envelope(options={"retries": "3"}), "its option 'retries' is a str, not a number"),
        (envelope(options={"eta": [1]}), "its option 'eta' is a list, not a number"),
        (envelope(options={"throws": "ValueError"}), "its option 'throws' is a str, not exception classes"),
        (envelope(args=[]), "takes (payload), which does not fit this message's 0 positional and 0 keyword"),
        (envelope(kwargs={"payload": 1}), "which does not fit this message's 1 positional and 1 keyword argument(s)"),
        (envelope(args=[1, 2]), "which does not fit this message's 2 positional and 0 keyword argument(s)"),
        (envelope(queue_name="elsewhere"), "it names queue 'elsewhere', but was found on queue 'events'"),
        (envelope(queue_name="x" * 10_000), "it names queue 'xxxxxxxx"),
        (envelope(options={"retries": 10**30}), "its option 'retries' is 1000000000000000000000000000000, not a count"),
        (envelope(options={"retries": -1}), "its option 'retries' is -1, not a count from 0 to 100000"),
        (envelope(options={"eta": 1}), "it carries an eta, but sits on a queue of undelayed messages"),
        (
            envelope(queue_name="events.DQ", options={"eta": 4_102_444_800_000}),
            "its eta 4102444800000 lies beyond its actor's max_backoff",
        ),
        (envelope(queue_name="events.DQ", options={"eta": float("inf")}), "its eta inf lies beyond"),
        (envelope(options={"partition_key": 7}), "its option 'partition_key' is an int, not a str"),
        (envelope(options={"lane": ["x"], "partition_key": "k"}), "its option 'lane' is ['x'], not the lane of"),
        (envelope(options={"lane": f"{TICK_A}:other", "partition_key": "k"}), "not the lane of its actor and"),
        (envelope(options={"lane": f"{TICK_A}:k"}), "its option 'lane' is"),
    ],
)
def test_inspection_refuses_what_a_worker_cannot_run(stub_bus: EventBus, body: bytes | None, reason: str) -> None:
    refusal = inspect_body(body, stub_bus.broker.actors, queue_of(body))
    assert isinstance(refusal, Refusal)
    assert reason in refusal.reason
    assert len(refusal.reason) < 400, "a value from the message reaches the log uncut"


def test_inspection_refuses_a_body_over_the_size_limit_before_parsing_it(stub_bus: EventBus) -> None:
    body = envelope()
    refusal = inspect_body(body + b"{not json", stub_bus.broker.actors, "events", max_bytes=len(body))
    assert isinstance(refusal, Refusal)
    assert f"more than max_message_bytes ({len(body):,})" in refusal.reason  # not a JSON error: never parsed
    assert isinstance(inspect_body(body, stub_bus.broker.actors, "events", max_bytes=len(body)), Message)


def test_inspection_passes_a_bus_message_through(stub_bus: EventBus) -> None:
    body = envelope(options={"event_type": "tests.faults.handlers:Tick", "retries": 2, "eta": None})
    message = inspect_body(body, stub_bus.broker.actors, queue_of(body))
    assert isinstance(message, Message)
    assert message.asdict() == {**json.loads(body), "args": tuple(json.loads(body)["args"])}


def test_inspection_names_the_message_when_it_can(stub_bus: EventBus) -> None:
    refusal = inspect_body(envelope(message_id="m-1", options={"retries": "x"}), stub_bus.broker.actors, "events")
    assert isinstance(refusal, Refusal) and refusal.message_id == "m-1"
    refusal = inspect_body(envelope(message_id="m-2", kwargs=[]), stub_bus.broker.actors, "events")
    assert isinstance(refusal, Refusal) and refusal.message_id == "m-2"
    assert "it starts b'" in refusal.reason  # where the envelope itself is wrong, its start is shown


# -- the Redis consumer, on a real Redis -------------------------------------------------------


@pytest.fixture
def redis_bus() -> Iterator[EventBus]:
    url = require_redis()
    queue = f"faults_consumer_{uuid.uuid4().hex[:10]}"
    bus = EventBus().configure(
        handlers=handlers.HANDLERS,
        broker=url,
        queue=queue,
        partitioned_queue=f"{queue}_keyed",
        redis_heartbeat_seconds=1,
    )
    yield bus
    probe = RedisQueues(url)
    probe.delete([queue, f"{queue}_keyed"])
    broker = bus.broker
    assert isinstance(broker, EventBusRedisBroker)
    probe.forget_brokers([broker.broker_id])
    probe.close()
    broker.close()


def _acks(bus: EventBus) -> set[str]:
    broker = _broker(bus)
    key = f"dramatiq:__acks__.{broker.broker_id}.{bus.config.queues.default}"
    members: Any = broker.client.smembers(key)
    return {member.decode() for member in members}


def _next(consumer: Any, timeout: float = 5.0) -> MessageProxy:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = next(consumer)
        if message is not None:
            return message  # type: ignore[no-any-return]
    raise AssertionError("the consumer got nothing")


def _broker(bus: EventBus) -> EventBusRedisBroker:
    broker = bus.broker
    assert isinstance(broker, EventBusRedisBroker)
    return broker


def test_a_consumer_puts_back_what_a_failed_consumer_had_fetched(redis_bus: EventBus) -> None:
    broker = _broker(redis_bus)
    queue = redis_bus.config.queues.default
    redis_bus.publish([handlers.Solo(0, n) for n in range(3)])  # one handler: one message each
    first = broker.consume(queue, prefetch=3, timeout=50)
    running = _next(first)  # fetched all three; hands over one, caches two
    assert len(_acks(redis_bus)) == 3

    # What Dramatiq does after a connection error: drop the consumer, cache and all, and make another.
    del first
    gc.collect()
    second = broker.consume(queue, prefetch=3, timeout=50)
    again = [_next(second), _next(second)]

    # The two dropped came back and were fetched again; the one a thread still runs was left alone.
    assert sorted(m.args[0]["n"] for m in [running, *again]) == [0, 1, 2]
    assert _acks(redis_bus) == {m.options["redis_message_id"] for m in [running, *again]}
    for message in (running, *again):
        second.ack(message)
    assert _acks(redis_bus) == set()
    assert broker.client.llen(f"dramatiq:{queue}") == 0


#: The bus's batched ack script, as the Redis broker registers it.
ACK_SCRIPT = "eventbus_ack_many"


class AckCalls:
    """Wraps the broker's batched ack script, recording the ids of each call; ``during`` runs
    inside the first call, as other worker threads would while its round trip is in flight."""

    def __init__(self, broker: EventBusRedisBroker, during: Callable[[], None] = lambda: None) -> None:
        self.calls: list[list[str]] = []
        self._script = broker.scripts[ACK_SCRIPT]
        self._during = during
        broker.scripts[ACK_SCRIPT] = self

    def __call__(self, *, keys: Any, args: list[str]) -> Any:
        self.calls.append(list(args))
        if len(self.calls) == 1:
            self._during()
        return self._script(keys=keys, args=args)


def test_acks_handed_over_while_one_is_being_sent_go_out_together_next(redis_bus: EventBus) -> None:
    broker = _broker(redis_bus)
    queue = redis_bus.config.queues.default
    redis_bus.publish([handlers.Solo(0, n) for n in range(4)])
    consumer: Any = broker.consume(queue, prefetch=4, timeout=50)
    fetched = [_next(consumer) for _ in range(4)]
    ids = [m.options["redis_message_id"] for m in fetched]
    put_back: list[int] = []

    def meanwhile() -> None:
        for message in fetched[1:]:
            consumer.ack(message)  # another thread's ack: left for the send in flight
        consumer._reclaim()  # acks not sent yet still count as held: nothing is put back
        put_back.append(broker.client.llen(f"dramatiq:{queue}"))

    calls = AckCalls(broker, during=meanwhile)
    consumer.ack(fetched[0])
    assert calls.calls == [ids[:1], ids[1:]]
    assert put_back == [0]
    assert _acks(redis_bus) == set()
    assert broker.client.hlen(f"dramatiq:{queue}.msgs") == 0


def test_acks_that_could_not_be_sent_go_out_with_the_next(redis_bus: EventBus) -> None:
    broker = _broker(redis_bus)
    queue = redis_bus.config.queues.default
    redis_bus.publish([handlers.Solo(0, n) for n in range(2)])
    consumer = broker.consume(queue, prefetch=2, timeout=50)
    first, second = _next(consumer), _next(consumer)
    script = broker.scripts[ACK_SCRIPT]

    def unreachable(**_: Any) -> None:
        raise redis.ConnectionError("Redis went away")

    broker.scripts[ACK_SCRIPT] = unreachable
    with pytest.raises(ConnectionClosed):
        consumer.ack(first)  # Dramatiq's worker retries the ack after a ConnectionClosed
    broker.scripts[ACK_SCRIPT] = script
    consumer.ack(second)
    assert _acks(redis_bus) == set()
    assert broker.client.hlen(f"dramatiq:{queue}.msgs") == 0


def test_a_dead_workers_messages_come_back_after_the_heartbeat_timeout(redis_bus: EventBus) -> None:
    broker = _broker(redis_bus)
    queue = redis_bus.config.queues.default
    client: redis.Redis = broker.client
    redis_bus.publish(handlers.Solo(0, 7))
    popped: Any = client.lpop(f"dramatiq:{queue}")
    redis_id = popped.decode()
    dead = f"dead-{uuid.uuid4().hex}"
    # A worker that fetched it, then went silent two seconds ago.
    client.zadd("dramatiq:__heartbeats__", {dead: int(time.time() * 1000) - 2000})
    client.sadd(f"dramatiq:__acks__.{dead}.{queue}", redis_id)

    consumer = broker.consume(queue, prefetch=1, timeout=50)
    recovered = _next(consumer, timeout=3)  # its first call tends the queue

    assert recovered.args[0]["n"] == 7 and recovered.options["redis_message_id"] == redis_id
    assert not client.exists(f"dramatiq:__acks__.{dead}.{queue}")
    consumer.ack(recovered)


# -- the RabbitMQ consumer, on a real RabbitMQ ----------------------------------------------------


@pytest.fixture
def rabbitmq_bus() -> Iterator[EventBus]:
    url = require_rabbitmq()
    queue = f"faults_consumer_{uuid.uuid4().hex[:10]}"
    bus = EventBus().configure(handlers=handlers.HANDLERS, broker=url, queue=queue, partitioned_queue=f"{queue}_keyed")
    yield bus
    bus.broker.close()
    RabbitmqQueues(url).delete([queue, f"{queue}_keyed"])


@pytest.fixture
def read_off(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many deliveries each read off the socket took, not through pika's loop."""
    from dramatiq_eventbus.brokers.rabbitmq import consumer as consumer_module

    counts: list[int] = []
    off_the_socket = consumer_module.upstream.deliveries_off_the_socket

    def counted(*args: Any) -> Any:
        read = off_the_socket(*args)
        if read:
            counts.append(len(read))
        return read

    monkeypatch.setattr(consumer_module.upstream, "deliveries_off_the_socket", counted)
    return counts


@pytest.mark.rabbitmq
def test_a_rabbitmq_consumer_sends_the_acks_waiting_for_its_loop_with_one_flush(rabbitmq_bus: EventBus) -> None:
    queue = rabbitmq_bus.config.queues.default
    rabbitmq_bus.publish([handlers.Solo(0, n) for n in range(4)])
    consumer: Any = rabbitmq_bus.broker.consume(queue, prefetch=4, timeout=100)
    fetched = [_next(consumer) for _ in range(4)]
    sends: list[int] = []
    send_acks = consumer._send_acks
    consumer._send_acks = lambda: sends.append(len(consumer._unsent_acks)) or send_acks()
    for message in fetched:
        consumer.ack(message)  # as four worker threads would
    assert next(consumer) is None  # the consumer's loop turns: the acks go out
    # Together: sent by the consumer before it reads again, or by pika's loop (which finds none left then).
    assert [count for count in sends if count] == [4]
    consumer.close()  # whatever was not acked would go back to the queue now
    assert RabbitmqQueues(require_rabbitmq()).count(queue) == 0


@pytest.mark.rabbitmq
def test_deliveries_waiting_whole_on_the_socket_are_read_off_it_in_order_and_acked(
    rabbitmq_bus: EventBus, read_off: list[int]
) -> None:
    queue = rabbitmq_bus.config.queues.default
    rabbitmq_bus.publish(handlers.Solo(0, 0))
    consumer: Any = rabbitmq_bus.broker.consume(queue, prefetch=100, timeout=100)
    got = [_next(consumer)]  # the only one waiting
    rabbitmq_bus.publish([handlers.Solo(0, n) for n in range(1, 40)])
    time.sleep(0.2)  # these wait whole on the socket
    got += [_next(consumer) for _ in range(39)]
    assert [message.args[0]["n"] for message in got] == list(range(40))
    assert sum(read_off) > 0  # some came off the socket, not through pika
    for message in got:
        consumer.ack(message)
    assert next(consumer) is None  # the acks go out
    consumer.close()
    assert RabbitmqQueues(require_rabbitmq()).count(queue) == 0  # each acked once, none delivered again


def _next_in_a_thread(consumer: Any) -> tuple[threading.Thread, list[Any]]:
    """The consumer's next(), waiting in a thread of its own, as Dramatiq's consumer thread waits."""
    got: list[Any] = []
    thread = threading.Thread(target=lambda: got.append(next(consumer)), daemon=True)
    thread.start()
    time.sleep(0.2)  # it waits now
    return thread, got


def _within(seconds: float, condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.mark.rabbitmq
def test_a_waiting_consumer_reads_what_arrives_off_the_socket_and_sends_acks_as_they_come(
    rabbitmq_bus: EventBus, read_off: list[int]
) -> None:
    queue = rabbitmq_bus.config.queues.default
    rabbitmq_bus.publish(handlers.Solo(0, 0))
    consumer: Any = rabbitmq_bus.broker.consume(queue, prefetch=10, timeout=3000)
    first = _next(consumer)
    waiting, got = _next_in_a_thread(consumer)

    consumer.ack(first)  # as a worker thread does, while the consumer waits for three seconds
    assert _within(1.0, lambda: not consumer._unsent_acks), "the ack waited for the wait to end"
    rabbitmq_bus.publish(handlers.Solo(0, 1))
    waiting.join(1.0)
    assert not waiting.is_alive() and got[0].args[0]["n"] == 1
    assert read_off[-1:] == [1]  # what arrived while the consumer waited came off the socket

    consumer.ack(got[0])
    assert next(consumer) is None  # the acks go out; after three seconds of waiting, it times out
    consumer.close()
    assert RabbitmqQueues(require_rabbitmq()).count(queue) == 0  # each acked once, none delivered again


@pytest.mark.rabbitmq
def test_a_waiting_consumer_runs_pikas_callbacks_and_timers_on_time(rabbitmq_bus: EventBus) -> None:
    # Dramatiq's nack is a callback for pika's loop; pika's heartbeats and call_later are timers.
    queue = rabbitmq_bus.config.queues.default
    rabbitmq_bus.publish([handlers.Solo(0, 0), handlers.Solo(0, 1)])
    consumer: Any = rabbitmq_bus.broker.consume(queue, prefetch=10, timeout=3000)
    failed, handled = _next(consumer), _next(consumer)
    fired: list[float] = []
    consumer.connection.call_later(0.3, lambda: fired.append(time.monotonic()))
    started = time.monotonic()
    waiting, got = _next_in_a_thread(consumer)

    failed.fail()
    consumer.nack(failed)
    queues = RabbitmqQueues(require_rabbitmq())
    assert _within(1.0, lambda: queues.count(f"{queue}.XQ") == 1), "the nack waited for the wait to end"
    assert _within(1.0, lambda: bool(fired)) and fired[0] - started < 1.0
    assert waiting.is_alive()  # none of it was a delivery: the consumer goes on waiting

    consumer.ack(handled)
    waiting.join(4.0)
    assert got == [None]
    consumer.close()
    assert queues.count(queue) == 0


@pytest.mark.rabbitmq
def test_a_wake_up_ends_one_wait_only(rabbitmq_bus: EventBus) -> None:
    from dramatiq_eventbus.brokers.rabbitmq import upstream

    consumer: Any = rabbitmq_bus.broker.consume(rabbitmq_bus.config.queues.default, prefetch=1, timeout=50)
    assert next(consumer) is None
    wait = consumer._wait

    def timed_wait() -> float:
        started = time.monotonic()
        assert wait.wait(0.3) is False  # pika's loop has nothing to do
        return time.monotonic() - started

    wait.wake()  # the consumer's own, for an ack
    assert timed_wait() < 0.2
    assert timed_wait() > 0.25
    # pika's, whose callback ran already (run after deliveries read off the socket): stale.
    consumer.connection.add_callback_threadsafe(lambda: None)
    upstream.run_due_timers(consumer.channel)
    assert timed_wait() < 0.2
    assert timed_wait() > 0.25
    consumer.close()


class NextHeads:
    """A delivery hook whose finished lane heads are followed by the bodies given: what the
    lanes' Redis returns as the next heads, which anyone who can write there may forge."""

    def __init__(self, bodies: list[bytes]) -> None:
        self.bodies = bodies

    def received(self, deliveries: Any) -> None:
        pass

    def dropped(self, deliveries: Any, queue_name: str) -> None:
        pass

    def finish_handled(self, deliveries: Any) -> list[bytes]:
        bodies, self.bodies = self.bodies, []
        return bodies


@pytest.mark.rabbitmq
def test_a_next_lane_head_rabbitmq_cannot_carry_is_logged_and_the_rest_goes_out(
    rabbitmq_bus: EventBus, caplog: pytest.LogCaptureFixture
) -> None:
    queue = rabbitmq_bus.config.queues.default
    good = envelope(queue_name=queue, message_id="good-head")
    forged = [
        envelope(queue_name="q" * 256),  # over AMQP's 255 bytes for a routing key
        envelope(queue_name=7),
        envelope(queue_name=["a list"]),
        envelope(queue_name=queue, options={"broker_priority": 999}),
        envelope(queue_name=queue, options={"broker_priority": "high"}),
        envelope(queue_name=queue, options=["not", "a", "dict"]),
    ]
    rabbitmq_bus.publish(handlers.Solo(0, 1))
    consumer: Any = rabbitmq_bus.broker.consume(queue, prefetch=1, timeout=100)
    delivery = _next(consumer)
    rabbitmq_bus.broker.delivery_hook = NextHeads([*forged, good])  # type: ignore[attr-defined]
    consumer.ack(delivery)
    # The consumer's loop turns: the ack and the next heads go out, the good one back to this queue.
    assert _next(consumer).message_id == "good-head"
    consumer.close()  # the good head goes back to the queue unacked; the acked delivery does not

    skipped = [r for r in caplog.records if "Not publishing a lane head" in r.getMessage()]
    assert len(skipped) == len(forged)
    assert all(len(r.getMessage()) < 600 for r in skipped)  # the forged values are cut short
    assert [body["message_id"] for body in RabbitmqQueues(require_rabbitmq()).messages(queue)] == ["good-head"]


# -- what both consumers hand the worker ---------------------------------------------------------

MESSAGE_FIELDS = ("queue_name", "actor_name", "args", "kwargs", "options", "message_id", "message_timestamp")


@pytest.mark.redis
@pytest.mark.rabbitmq
@pytest.mark.parametrize("bus_fixture", ["redis_bus", "rabbitmq_bus"])
def test_a_delivery_answers_its_fields_without_a_lookup_through_dramatiqs_proxy(
    bus_fixture: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Dramatiq's MessageProxy reads each field of its message through __getattr__, which Python
    # calls only after the usual lookup failed: the worker and its middleware read about 36 of
    # them per message, 0.4 µs each. The bus's consumers hand over proxies that hold the fields.
    bus: EventBus = request.getfixturevalue(bus_fixture)
    bus.publish(handlers.Solo(0, 1))
    consumer: Any = bus.broker.consume(bus.config.queues.default, prefetch=1, timeout=100)
    delivery = _next(consumer)
    looked_up: list[str] = []
    lookup = MessageProxy.__getattr__
    monkeypatch.setattr(MessageProxy, "__getattr__", lambda proxy, name: looked_up.append(name) or lookup(proxy, name))
    fields = {name: getattr(delivery, name) for name in MESSAGE_FIELDS}
    assert looked_up == []
    # The same values as the message itself (read through the proxy's methods), and the same
    # options dict: what middleware writes there travels with the message, as with Dramatiq's.
    message = Message.decode(delivery.encode())
    assert fields == {**{name: getattr(message, name) for name in MESSAGE_FIELDS}, "args": tuple(message.args)}
    delivery.options["written_by_middleware"] = 1
    assert delivery.copy().options["written_by_middleware"] == 1
    assert delivery.checked  # the consumer's check passed it (the proxy's own, or its message's)
    consumer.ack(delivery)
    consumer.close()
