"""What the benchmarks send and run: events, no-op handlers, raw actors, Celery-free stats.

Both sides of every comparison do the same work per message: the bus's handlers and the
raw Dramatiq actors (and the Celery tasks) all call :func:`hit`, which counts the message
in memory (in scenario 13 both first wait on I/O the same way, :func:`wait_on_io`). A
background thread in each worker process writes the counts to Redis every 50 ms, so the
handlers stay no-ops and the benchmark reads how many messages were handled, when the
first and the last of a round were handled, the handlers' start latencies, and the
process's resident size.

Worker processes read:
  BENCH_REDIS_URL: where the stats go (and the Redis round trips of scenario 13).
  BENCH_STATS_KEY: the Redis key prefix of this run's stats.
  BENCH_BROKER_URL, BENCH_RAW_QUEUE: for the raw actors' worker (:mod:`benchmarks.raw_worker`).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import dramatiq
import redis
from dramatiq.broker import Broker

from dramatiq_eventbus import Handler

# -- events ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class OrderEvent:
    """A small, typical domain event; ``batch`` and ``sent_at`` are for the measurements."""

    order_id: str
    customer_id: str
    total: Decimal
    placed_at: datetime
    items: int
    batch: int
    sent_at: float


@dataclass(frozen=True)
class OrderPlaced(OrderEvent):
    """One handler."""


@dataclass(frozen=True)
class OrderPaid(OrderEvent):
    """Ten handlers: a fan-out."""


@dataclass(frozen=True)
class OrderViewed(OrderEvent):
    """One handler, never interested: publish() does no I/O."""


@dataclass(frozen=True)
class OrderShipped(OrderEvent):
    """One handler, with a partition key: handled in order per order id."""

    def partition_key(self) -> str:
        return self.order_id


@dataclass(frozen=True)
class OrderAudited(OrderEvent):
    """One handler, which sleeps 1 ms: a wait on I/O (scenario 13)."""


@dataclass(frozen=True)
class OrderSynced(OrderEvent):
    """One handler, which makes one Redis round trip (scenario 13)."""


def make_event(
    cls: type[OrderEvent], n: int = 0, *, batch: int = 0, keys: int = 100, prefix: str = "ord"
) -> OrderEvent:
    """Event ``n`` of a batch; with ``keys`` distinct order ids (so partition keys) over the batch."""
    return cls(
        order_id=f"{prefix}-{n % keys:05d}",
        customer_id="cus-c9f0f895fb98ab91",
        total=Decimal("129.95"),
        placed_at=datetime(2026, 11, 27, 10, 32, 26, 830947, tzinfo=timezone.utc),
        items=3,
        batch=batch,
        sent_at=time.time(),
    )


def raw_payload(event: OrderEvent) -> dict[str, Any]:
    """What a hand-written raw actor gets for the same event: a dict of JSON values."""
    return {
        "order_id": event.order_id,
        "customer_id": event.customer_id,
        "total": str(event.total),
        "placed_at": event.placed_at.isoformat(),
        "items": event.items,
        "batch": event.batch,
        "sent_at": event.sent_at,
    }


# -- handlers -------------------------------------------------------------------------------


class _Noop(Handler):
    def handle_event(self, event: OrderEvent) -> None:
        hit(event.batch, event.sent_at)


class Noop(_Noop):
    pass


class NotInterested(_Noop):
    def interested(self, event: object) -> bool:
        return False


class _WaitsOnIO(Handler):
    io = "sleep"

    def handle_event(self, event: OrderEvent) -> None:
        wait_on_io(self.io)
        hit(event.batch, event.sent_at)


class SleepsOnIO(_WaitsOnIO):
    pass


class CallsRedis(_WaitsOnIO):
    io = "redis"


# Ten distinct handler classes for the fan-out: each gets its own actor, as in an application.
FAN_OUT: list[type[Handler]] = [type(f"FanOut{i}", (_Noop,), {"__module__": __name__}) for i in range(10)]
globals().update({cls.__name__: cls for cls in FAN_OUT})

HANDLERS: dict[type, list[type[Handler]]] = {
    OrderPlaced: [Noop],
    OrderPaid: FAN_OUT,
    OrderViewed: [NotInterested],
    OrderShipped: [Noop],
    OrderAudited: [SleepsOnIO],
    OrderSynced: [CallsRedis],
}

# -- raw Dramatiq actors: the baseline ------------------------------------------------------

RAW_ACTORS = 10


def plain_broker(url: str) -> Broker:
    """Dramatiq's own broker for ``url``, with the settings the bus gives its brokers.

    On RabbitMQ that is publisher confirms and queues declared with ``x-max-priority``
    10, so the baseline waits for the same guarantee as the bus; without confirms a raw
    send would not wait for RabbitMQ at all.
    """
    if url.startswith(("amqp://", "amqps://")):
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        return RabbitmqBroker(url=url, confirm_delivery=True, max_priority=10)
    from dramatiq.brokers.redis import RedisBroker

    return RedisBroker(url=url)  # type: ignore[no-untyped-call]


def raw_noop(payload: dict[str, Any]) -> None:
    hit(payload["batch"], payload["sent_at"])


def declare_raw_actors(broker: Broker, queue: str) -> list[dramatiq.Actor[Any, Any]]:
    """Ten plain actors on ``queue``, as an application without the bus would write them."""
    actors = []
    for i in range(RAW_ACTORS):
        name = f"bench_raw_{i}"
        broker.actors.pop(name, None)
        actors.append(
            dramatiq.Actor(raw_noop, broker=broker, actor_name=name, queue_name=queue, priority=0, options={})
        )
    return actors


# -- waiting on I/O, the same on both sides (scenario 13) ---------------------------------------

IO_SLEEP = 0.001  # seconds
IO_KINDS = ("sleep", "redis")
_io_client: Any = None


def wait_on_io(kind: str) -> None:
    """Sleep 1 ms (``sleep``), or make one Redis round trip (``redis``): a GET of a missing key."""
    global _io_client
    if kind == "sleep":
        time.sleep(IO_SLEEP)
        return
    # One client (a connection pool) per process, shared by its threads, as an application
    # would have; two threads racing here make two pools, which costs nothing measurable.
    if _io_client is None:
        _io_client = redis.Redis.from_url(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    _io_client.get("bench:io:missing")


def raw_sleeps_on_io(payload: dict[str, Any]) -> None:
    wait_on_io("sleep")
    raw_noop(payload)


def raw_calls_redis(payload: dict[str, Any]) -> None:
    wait_on_io("redis")
    raw_noop(payload)


def declare_raw_io_actors(broker: Broker, queue: str) -> dict[str, dramatiq.Actor[Any, Any]]:
    """A raw actor per kind of :data:`IO_KINDS` on ``queue`` (the raw actors' queue: no consumer more)."""
    actors = {}
    for kind, function in zip(IO_KINDS, (raw_sleeps_on_io, raw_calls_redis), strict=True):
        name = f"bench_raw_io_{kind}"
        broker.actors.pop(name, None)
        actors[kind] = dramatiq.Actor(
            function, broker=broker, actor_name=name, queue_name=queue, priority=0, options={}
        )
    return actors


# -- stats, kept in the worker's memory and written to Redis in the background -----------------


class Stats:
    """Per batch: how many messages were handled, when the first and the last started; latencies."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._batches: defaultdict[int, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
        self._latencies: defaultdict[int, list[float]] = defaultdict(list)
        self._changed = threading.Event()
        self._flusher: threading.Thread | None = None

    def hit(self, batch: int, sent_at: float) -> None:
        now = time.time()
        with self._lock:
            entry = self._batches[batch]
            if not entry[0]:
                entry[1] = now
            entry[0] += 1
            entry[2] = now
            self._latencies[batch].append(now - sent_at)
            if self._flusher is None:
                self._flusher = threading.Thread(target=self._flush_forever, name="bench-stats", daemon=True)
                self._flusher.start()
        self._changed.set()

    def _flush_forever(self) -> None:
        key = os.environ.get("BENCH_STATS_KEY")
        if not key:
            return
        client = redis.Redis.from_url(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
        pid = os.getpid()
        while True:
            self._changed.wait()
            time.sleep(0.05)
            self._changed.clear()
            with self._lock:
                batches = {batch: list(entry) for batch, entry in self._batches.items()}
                latencies, self._latencies = self._latencies, defaultdict(list)
            pipe = client.pipeline(transaction=False)
            for batch, (count, first, last) in batches.items():
                pipe.hset(f"{key}:counts", f"{pid}:{batch}", json.dumps([count, first, last]))
            for batch, values in latencies.items():
                pipe.rpush(f"{key}:latency:{batch}", *(f"{value:.6f}" for value in values))
            pipe.hset(f"{key}:rss", str(pid), str(resident_kib()))
            pipe.execute()


STATS = Stats()


def hit(batch: int, sent_at: float) -> None:
    """What every benchmark handler, actor and task does: count itself."""
    STATS.hit(batch, sent_at)


def resident_kib(pid: int | str = "self") -> int:
    """The process's resident set size (VmRSS) in KiB, from /proc."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0
