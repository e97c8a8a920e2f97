"""Scenario 15: what partition-key lanes cost Redis: per waiting event, and after they drain.

Measured on a redis-server of its own (:class:`benchmarks.idle.PrivateRedis`, the same
binary as the shared one): there nothing else writes, so INFO's ``used_memory`` moves only
with what this scenario does, which on the shared Redis other clients' keys would swamp.
The lanes are driven through :class:`RedisLaneStore` alone, not in the broker
(``broker_keys=None``: no broker queue is touched), with the message the bus stores for one
of the workload's keyed events (read back from a lane a real publish() made).

- Waiting: 10,000 events appended across 100 lanes, then across 10,000 lanes; per event,
  ``used_memory`` after minus before, and the sum of ``MEMORY USAGE`` over the lane keys,
  against the message's own bytes.
- Drained: 300,000 distinct partition keys (1,000,000 with ``--slow``), 1,000 a batch, each
  one event appended, started (``enter_many``) and finished (``finish_many``): one script
  call of each per batch. Then the keys left (SCAN) and ``used_memory`` left per drained
  lane. Redis's own memory grows in a step or two somewhere along the way (tens to a few
  hundred KB, in no key, not freed by SCRIPT FLUSH; about as much after 1,000,000 lanes as
  after 100,000), so the target is read as the least growth of the last three quarters: a
  leak would grow in each of them, those steps land in one or two.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import redis

from dramatiq_eventbus import EventBus
from dramatiq_eventbus.brokers.redis.lanes import RedisLaneStore
from dramatiq_eventbus.handler import handler_name
from dramatiq_eventbus.ordering.lanes import HandledHead, Verdict, lane_name

from ..idle import PrivateRedis
from ..runner import Context, Result, Target, log
from ..workload import Noop, OrderShipped, make_event

TOKEN = "bench-lease"
SETTLE = 0.2  # s between readings of used_memory
SETTLE_READINGS = 25
#: What may be left per drained lane, over the second half: a leak of anything, a key or a
#: sorted set member, would cost tens of bytes per lane.
LEFT_PER_LANE = Target("<=", 1.0, "≤ 1 B per lane", on="bus")
Entries = list[tuple[str, str]]


@dataclass
class Lanes:
    """A lane store under a prefix of this run, in a Redis of its own.

    Parameters:
      client(Any): The private Redis.
      store(RedisLaneStore): Its lanes, under this run's prefix, outside any broker.
      body(bytes): The message each event carries, as the bus stores it.
      actor(str): The handler whose lanes they are.
    """

    client: Any
    store: RedisLaneStore
    body: bytes
    actor: str

    def used_memory(self) -> int:
        """Bytes Redis has allocated once it has settled: with our connection closed (its buffers
        would count too), and two readings in a row the same (Redis's cron shrinks emptied tables
        a step at a time after a burst of deletes)."""
        self.client.connection_pool.disconnect()
        last = -1
        for _ in range(SETTLE_READINGS):
            time.sleep(SETTLE)
            reading = int(self.client.info("memory")["used_memory"])
            if reading == last:
                break
            last = reading
        return reading

    def keys(self) -> list[bytes]:
        return list(self.client.scan_iter(match=f"{self.store.prefix}:*", count=1000))

    def memory_usage(self, keys: list[bytes]) -> int:
        """The sum of MEMORY USAGE over ``keys``, every element counted (SAMPLES 0)."""
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.memory_usage(key, samples=0)
        return sum(pipe.execute())

    def delete(self, keys: list[bytes]) -> None:
        for start in range(0, len(keys), 1000):
            self.client.delete(*keys[start : start + 1000])

    def append(self, first: int, count: int, lanes: int) -> Entries:
        """Events ``first`` to ``first + count``, event n in lane n % ``lanes``, ids shaped as the bus's."""
        entries = [
            (lane_name(self.actor, f"ord-{n % lanes:07d}"), f"0190c0de-0000-7000-8000-{n:012d}")
            for n in range(first, first + count)
        ]
        self.store.append([(lane, message_id, self.body, "") for lane, message_id in entries])
        return entries

    def finish(self, entries: Entries) -> None:
        """Start and finish the heads ``entries``, as a worker would: one script call each."""
        verdicts = self.store.enter_many([(lane, message_id, TOKEN) for lane, message_id in entries])
        if any(verdict is not Verdict.RUN for verdict in verdicts):
            raise RuntimeError(f"a lane head did not start: {sorted(set(verdicts))}")
        self.store.finish_many([(HandledHead(lane, message_id, TOKEN), "") for lane, message_id in entries])

    def drain(self, first: int, stop: int, batch: int) -> float:
        """Lanes ``first`` to ``stop``, each its own partition key with one event, ``batch`` at a
        time; returns the seconds it took."""
        started = time.monotonic()
        for start in range(first, stop, batch):
            self.finish(self.append(start, min(batch, stop - start), lanes=stop))
        return time.monotonic() - started


def run(ctx: Context) -> list[Result]:
    with private_lanes(ctx) as lanes:
        return [*waiting(ctx, lanes), *drained(ctx, lanes, ctx.sizes.drained_lanes)]


def run_slow(ctx: Context) -> list[Result]:
    with private_lanes(ctx) as lanes:
        return drained(ctx, lanes, ctx.sizes.drained_lanes_slow)


def waiting(ctx: Context, lanes: Lanes) -> list[Result]:
    events, batch = ctx.sizes.lane_events, ctx.sizes.lane_batch
    rows = []
    for count in ctx.sizes.lane_counts:
        log(f"  lanes: Redis memory of {events:,} waiting events in {count:,} lanes")
        before = lanes.used_memory()
        for first in range(0, events, batch):
            lanes.append(first, min(batch, events - first), count)
        after = lanes.used_memory()
        keys = lanes.keys()
        usage = lanes.memory_usage(keys)
        lanes.delete(keys)
        per_event = (after - before) / events
        rows.append(
            Result(
                "15",
                f"Redis memory per event waiting in a lane, {events:,} events in {count:,} lanes",
                "redis",
                "B",
                per_event,
                len(lanes.body),
                "the message itself",
                per_event / len(lanes.body),
                note=f"MEMORY USAGE of the {len(keys):,} lane keys: {usage / events:,.0f} B per event; "
                f"{per_event - len(lanes.body):,.0f} B per event beyond the message",
            )
        )
    return rows


def drained(ctx: Context, lanes: Lanes, total: int) -> list[Result]:
    batch = ctx.sizes.lane_batch
    log(f"  lanes: {total:,} partition keys appended, started and finished, {batch:,} a batch")
    lanes.drain(0, batch, batch)  # the scripts loaded, the connection made: not what is measured
    at_rest = [lanes.used_memory() for _ in range(3)]
    entries = lanes.append(batch, batch, lanes=1 << 62)  # one batch waiting: what a lane costs until drained
    waiting_per_lane = (lanes.used_memory() - at_rest[-1]) / batch
    lanes.finish(entries)
    readings = [lanes.used_memory()]
    bounds = [2 * batch + total * quarter // 4 for quarter in range(5)]
    seconds = 0.0
    for first, stop in itertools.pairwise(bounds):
        seconds += lanes.drain(first, stop, batch)
        readings.append(lanes.used_memory())
    left = lanes.keys()
    lanes.delete(left)
    growths = [after - before for before, after in itertools.pairwise(readings)]
    least = min(growths[1:]) / (total / 4)
    before, after = readings[0], readings[-1]
    return [
        Result(
            "15",
            f"lane keys left after {total:,} partition keys drained",
            "redis",
            "keys",
            len(left),
            total,
            "lanes drained",
            len(left) / total,
            Target("<=", 0, "0 keys", on="bus"),
            note=f"{total:,} lanes in {seconds:.0f} s, {batch:,} a batch "
            f"({seconds / total * 1e6:.0f} µs per lane for append, enter and finish)",
        ),
        Result(
            "15",
            f"Redis memory left per drained lane, {total:,} lanes",
            "redis",
            "B",
            least,
            waiting_per_lane,
            "a waiting lane",
            least / waiting_per_lane,
            LEFT_PER_LANE,
            note=f"the least of the last three quarters of the lanes; used_memory after all minus before: "
            f"{after - before:+,} B ({(after - before) / total:+.2f} B per lane), by quarter "
            + ", ".join(f"{growth:+,} B" for growth in growths)
            + f"; readings at rest, before: {max(at_rest) - min(at_rest):,} B apart",
        ),
    ]


@contextmanager
def private_lanes(ctx: Context) -> Iterator[Lanes]:
    """A lane store in a redis-server of its own, for the scenario's length: stopped after, with every key."""
    server = PrivateRedis(ctx.workdir / ctx.name("lanes_redis")).start()
    client: Any = redis.Redis.from_url(server.url)
    try:
        body = _stored_message(server.url, client)
        yield Lanes(client, RedisLaneStore(client, prefix=ctx.name("lanes")), body, handler_name(Noop))
    finally:
        client.close()
        server.stop()


def _stored_message(url: str, client: Any) -> bytes:
    """What the bus stores in a lane for one of the workload's keyed events: one real publish(), read back."""
    bus = EventBus().configure(handlers={OrderShipped: [Noop]}, broker=url, queue="events", partitioned_queue="keyed")
    try:
        bus.publish(make_event(OrderShipped))
        (key,) = client.scan_iter(match="eventbus:lane:*:msgs")
        (body,) = client.hvals(key)
        return bytes(body)
    finally:
        bus.broker.close()
        client.flushall()
