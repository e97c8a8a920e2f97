"""Eight threads publishing at once on one configured bus: nothing lost, nothing raised.

No worker runs: every message stays on the queue, where the test reads it back, so a
message lost, doubled or mangled between threads shows as an event missing or counted twice.

In the normal run each thread publishes its events in calls of one event and of lists of
16, so both ways of sending (one message; a batch) run from eight threads at once in a few
seconds: 5,000 per thread on Redis, 1,000 on RabbitMQ, whose queue is drained back through
pika one message at a time. The slow variants publish 5,000 per thread on RabbitMQ too, and
every event with a call of its own.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import Counter
from pathlib import Path

import pika
import pytest
import redis

from tests.support.broker_queues import RabbitmqQueues

from . import handlers
from .conftest import broker_url
from .harness import Deployment, Tally, report

THREADS = 8
REDIS, RABBITMQ = pytest.mark.redis, pytest.mark.rabbitmq
SLOW = pytest.mark.slow
#: (broker, events per thread, events per publish() call, cycling). Draining 200,000 messages
#: back through pika takes minutes, so the largest variant runs on Redis only.
CASES = [
    pytest.param("redis", 5_000, (1, 1, 1, 1, 16), marks=REDIS, id="redis-8x5000-mixed"),
    pytest.param("rabbitmq", 1_000, (1, 1, 1, 1, 16), marks=RABBITMQ, id="rabbitmq-8x1000-mixed"),
    pytest.param("rabbitmq", 5_000, (1, 1, 1, 1, 16), marks=[RABBITMQ, SLOW], id="rabbitmq-8x5000-mixed"),
    pytest.param("redis", 5_000, (1,), marks=[REDIS, SLOW], id="redis-8x5000-single"),
    pytest.param("rabbitmq", 5_000, (1,), marks=[RABBITMQ, SLOW], id="rabbitmq-8x5000-single"),
    pytest.param("redis", 25_000, (1,), marks=[REDIS, SLOW], id="redis-8x25000-single"),
]


def published_events(kind: str, url: str, queue: str) -> Counter[tuple[int, int]]:
    """(thread, n) of every message on ``queue``, counted; the queue is left empty on RabbitMQ."""
    seen: Counter[tuple[int, int]] = Counter()
    if kind == "redis":
        client = redis.Redis.from_url(url)
        assert client.llen(f"dramatiq:{queue}") == client.hlen(f"dramatiq:{queue}.msgs")
        for body in client.hvals(f"dramatiq:{queue}.msgs"):
            payload = json.loads(body)["args"][0]
            seen[payload["thread"], payload["n"]] += 1
        return seen
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.basic_qos(prefetch_count=1000)
        expected = RabbitmqQueues(url).count(queue)
        for method, _properties, body in channel.consume(queue, auto_ack=True, inactivity_timeout=5):
            if method is None:
                break
            payload = json.loads(body)["args"][0]
            seen[payload["thread"], payload["n"]] += 1
            if sum(seen.values()) >= expected:
                break
        channel.cancel()
    finally:
        connection.close()
    return seen


@pytest.mark.parametrize(("kind", "per_thread", "call_sizes"), CASES)
def test_eight_threads_publishing_at_once_lose_nothing(
    kind: str, per_thread: int, call_sizes: tuple[int, ...], deploy: list[Deployment], tmp_path: Path
) -> None:
    deployment = Deployment(broker_url(kind), broker_url("redis"), tmp_path)
    deploy.append(deployment)
    bus = deployment.publisher()
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def publish(thread: int) -> None:
        try:
            start.wait(timeout=10)
            n = 0
            for call_size in itertools.cycle(call_sizes):
                if n >= per_thread:
                    break
                events = [handlers.Solo(thread, k) for k in range(n, min(n + call_size, per_thread))]
                bus.publish(events[0] if call_size == 1 else events)
                n += len(events)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=publish, args=(t,)) for t in range(THREADS)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    took = time.monotonic() - began

    assert not any(thread.is_alive() for thread in threads), "a publisher thread hung"
    assert errors == []
    seen = published_events(kind, deployment.broker_url, deployment.queues[0])
    expected = {(t, n) for t in range(THREADS) for n in range(per_thread)}
    missing = expected - set(seen)
    doubled = {key: count for key, count in seen.items() if count > 1}
    assert (len(missing), doubled, set(seen) - expected) == (0, {}, set())
    sent = THREADS * per_thread
    calls = "one event per call" if call_sizes == (1,) else "1 or 16 events per call"
    report(
        f"{THREADS} threads x {per_thread} events at once ({calls})",
        kind,
        Tally(sent=sent, processed=len(seen), lost=len(missing), duplicated=sum(c - 1 for c in seen.values())),
        f"processed = on the queue; {sent / took:,.0f} events/s; 0 raised",
    )
