"""The Redis consumer waits on its queue instead of polling it: what it must never miss.

An idle consumer blocks on the queue (``BLMOVE`` of the head onto the queue's wake list,
see ``consumer.py``). These tests pin down, on a real Redis: a message that lands between a
consumer's empty fetch and its wait is fetched at once; one message wakes one of ten waiting
consumers; a message a woken consumer took onto the wake list and never fetched (it died)
is not lost; and messages that any older writer pushes (Dramatiq's own enqueue, a delayed
message moved to its queue) wake it too, while Dramatiq's own polling consumer still works
beside it. None but the first asserts a latency: each counts what woke, or what arrived.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq.brokers.redis import RedisBroker

from dramatiq_eventbus import EventBus
from dramatiq_eventbus.brokers import EventBusRedisBroker
from dramatiq_eventbus.brokers.redis.consumer import WAITER_NAME
from dramatiq_eventbus.handler import handler_name
from tests.support.broker_queues import RedisQueues
from tests.support.servers import require_redis

from . import handlers

pytestmark = pytest.mark.redis

TICK_A = handler_name(handlers.TickA)

#: A worker timeout far beyond anything a test waits for: a consumer that is not woken stays asleep.
LONG_MS = 20_000


@pytest.fixture
def bus() -> Iterator[EventBus]:
    url = require_redis()
    queue = f"faults_wake_{uuid.uuid4().hex[:10]}"
    # The default heartbeat: a tend every 15 s, so that no tend looks at the queue during a test.
    made = EventBus().configure(handlers=handlers.HANDLERS, broker=url, queue=queue, partitioned_queue=f"{queue}_k")
    yield made
    probe = RedisQueues(url)
    probe.delete([queue, f"{queue}_k"])
    broker = _broker(made)
    probe.client.delete(broker.keys.wake(queue))
    probe.forget_brokers([broker.broker_id])
    probe.close()
    broker.close()


def _broker(bus: EventBus) -> EventBusRedisBroker:
    broker = bus.broker
    assert isinstance(broker, EventBusRedisBroker)
    return broker


def _publish(bus: EventBus, n: int) -> None:
    """One message for one handler, sent as the bus sends a publish() (its batch script)."""
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name=bus.config.queues.default,
        actor_name=TICK_A,
        args=({"$type": "tests.faults.handlers:Tick", "run": "wake", "n": n},),
        kwargs={},
        options={},
    )
    _broker(bus).enqueue_many([message])


def _count_wakes(consumer: Any) -> list[bool]:
    """Record, for each of the consumer's waits, whether a message woke it."""
    woken: list[bool] = []
    wait = consumer._wait

    def counted() -> tuple[bool, bool]:
        result: tuple[bool, bool] = wait()
        woken.append(result[0])
        return result

    consumer._wait = counted
    return woken


def _waiting(client: redis.Redis, queue: str) -> int:
    """How many connections wait on ``queue`` in a BLMOVE now."""
    clients: Any = client.client_list()
    return sum(1 for c in clients if c.get("name") == f"{WAITER_NAME}:{queue}" and c.get("cmd") == "blmove")


def _consuming(consumers: list[Any], got: list[Any], stop: threading.Event) -> list[threading.Thread]:
    """A thread per consumer, acking what it gets into ``got``, until ``stop`` is set."""

    def run(consumer: Any) -> None:
        while not stop.is_set():
            message = next(consumer)
            if message is not None:
                got.append(message)
                consumer.ack(message)

    threads = [threading.Thread(target=run, args=(consumer,), daemon=True) for consumer in consumers]
    for thread in threads:
        thread.start()
    return threads


def _until(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_a_message_sent_between_an_empty_fetch_and_the_wait_is_fetched_at_once(bus: EventBus) -> None:
    broker = _broker(bus)
    consumer: Any = broker.consume(bus.config.queues.default, prefetch=4, timeout=LONG_MS)
    sent_at: list[float] = []

    def publish_now() -> None:  # right after the fetch found the queue empty, before the wait
        consumer.before_wait = None
        _publish(bus, 1)
        sent_at.append(time.perf_counter())

    consumer.before_wait = publish_now
    message = next(consumer)
    fetched_after = time.perf_counter() - sent_at[0]

    assert message is not None and message.args[0]["n"] == 1
    assert fetched_after < 0.1, f"fetched {fetched_after * 1000:.0f} ms after it was sent; the wait lasts {LONG_MS} ms"
    consumer.ack(message)
    consumer.close()


def test_one_message_wakes_one_of_ten_waiting_consumers(bus: EventBus) -> None:
    broker = _broker(bus)
    queue = bus.config.queues.default
    consumers: list[Any] = [broker.consume(queue, prefetch=2, timeout=3000) for _ in range(10)]
    woken = [_count_wakes(consumer) for consumer in consumers]
    got: list[Any] = []
    stop = threading.Event()
    threads = _consuming(consumers, got, stop)
    _until(lambda: _waiting(broker.client, queue) == 10)

    _publish(bus, 1)
    _until(lambda: len(got) == 1)
    time.sleep(0.3)  # time for any other consumer to wake, and find nothing
    stop.set()
    # Ends the waits as a worker's shutdown does, as if they timed out (not a wake by a message):
    # without it each idle consumer sleeps out two worker timeouts (6 s) before its thread sees stop.
    broker.emit_before("worker_shutdown", None)
    for thread in threads:
        thread.join(timeout=10)

    assert [m.args[0]["n"] for m in got] == [1]
    assert sum(sum(w) for w in woken) == 1, f"woken: {woken}"
    assert not broker.client.exists(broker.keys.wake(queue))
    for consumer in consumers:
        consumer.close()


def test_a_message_left_on_the_wake_list_by_a_consumer_that_died_is_fetched(bus: EventBus) -> None:
    broker = _broker(bus)
    queue = bus.config.queues.default
    keys = broker.keys
    _publish(bus, 7)
    # A consumer woke (its BLMOVE moved the id onto the wake list), then died before its fetch.
    assert broker.client.lmove(keys.queue(queue), keys.wake(queue), "LEFT", "RIGHT") is not None

    consumer: Any = broker.consume(queue, prefetch=2, timeout=LONG_MS)
    message = next(consumer)

    assert message is not None and message.args[0]["n"] == 7
    assert not broker.client.exists(keys.wake(queue))
    consumer.ack(message)
    consumer.close()


def test_an_idle_consumer_finds_what_a_dead_waiter_left_at_its_next_tend(bus: EventBus) -> None:
    broker = _broker(bus)
    queue = bus.config.queues.default
    keys = broker.keys
    consumer: Any = broker.consume(queue, prefetch=2, timeout=200)
    assert next(consumer) is None  # fetched nothing, then waited 200 ms
    assert next(consumer) is None  # waited again, without a fetch: the queue stayed empty
    # Another consumer woke on a message and died before its fetch: the queue looks empty.
    _publish(bus, 8)
    broker.client.lmove(keys.queue(queue), keys.wake(queue), "LEFT", "RIGHT")
    consumer._tended_at = float("-inf")  # the tend is due (every 15 s by default)

    message = next(consumer)

    assert message is not None and message.args[0]["n"] == 8
    consumer.ack(message)
    consumer.close()


def test_what_older_writers_push_wakes_a_waiting_consumer(bus: EventBus) -> None:
    """Dramatiq's own enqueue (an older publisher, the mover of delayed messages) signals nothing:
    the consumer waits on the queue itself, so it wakes all the same."""
    broker = _broker(bus)
    queue = bus.config.queues.default
    consumer: Any = broker.consume(queue, prefetch=2, timeout=LONG_MS)
    woken = _count_wakes(consumer)
    got: list[Any] = []
    thread = threading.Thread(target=lambda: got.append(next(consumer)), daemon=True)
    thread.start()
    _until(lambda: _waiting(broker.client, queue) == 1)

    plain = RedisBroker(url=require_redis())
    try:
        plain.enqueue(dramatiq.Message(queue, "some_actor", (), {}, {}))
        thread.join(timeout=10)
    finally:
        plain.close()

    assert woken == [True]
    assert got and got[0] is None  # Refused (no such actor) and dead-lettered, but woken by it
    consumer.close()


def test_dramatiqs_polling_consumer_shares_a_queue_with_waiting_ones(bus: EventBus) -> None:
    """A worker of an older version, which polls, takes its share, and nothing is lost or doubled."""
    broker = _broker(bus)
    queue = bus.config.queues.default
    waiting: list[Any] = [broker.consume(queue, prefetch=2, timeout=500) for _ in range(2)]
    plain = RedisBroker(url=require_redis())
    polling = plain.consume(queue, prefetch=2, timeout=50)
    got: list[Any] = []
    stop = threading.Event()
    threads = _consuming([*waiting, polling], got, stop)
    try:
        for n in range(50):
            _publish(bus, n)
            time.sleep(0.002)
        _until(lambda: len(got) >= 50, timeout=10)
        time.sleep(0.2)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
        plain.close()

    assert sorted(m.args[0]["n"] for m in got) == list(range(50))
    for consumer in waiting:
        consumer.close()


def test_a_worker_shutdown_ends_the_long_wait_of_an_idle_consumer(bus: EventBus) -> None:
    """A consumer that holds nothing waits two worker timeouts at once; its worker's shutdown
    (``before_worker_shutdown``) wakes it, and it waits one at most from then on."""
    broker = _broker(bus)
    queue = bus.config.queues.default
    consumer: Any = broker.consume(queue, prefetch=2, timeout=LONG_MS)
    returned: list[float] = []
    thread = threading.Thread(target=lambda: (next(consumer), returned.append(time.monotonic())), daemon=True)
    thread.start()
    _until(lambda: _waiting(broker.client, queue) == 1)

    stopped_at = time.monotonic()
    broker.emit_before("worker_shutdown", None)
    thread.join(timeout=10)

    assert returned and returned[0] - stopped_at < 1.0
    assert broker.stopping
    consumer.close()
