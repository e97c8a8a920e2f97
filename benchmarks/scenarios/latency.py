"""Scenario 8: latency from publish() to the handler's start, at a steady rate, on Redis.

A publisher sends one event at a time at ``latency_rate`` events/s (500 in the full
run); each event carries the time it was published, and the handler notes how long
after that it started. The raw side does the same with ``actor.send`` to a raw actor.
Both workers run throughout with 1 process x 8 threads; every worker but the measured one is
paused. A short round of each warms them up first.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from ..runner import Context, Result, log, percentile, side_by_side
from ..workers import Worker
from ..workload import OrderPlaced, make_event, raw_payload

MS = 1000


def steady(send: Callable[[int], None], rate: int, seconds: float) -> int:
    """Call ``send(n)`` ``rate`` times a second for ``seconds``, on a fixed schedule; return how many."""
    count = max(1, int(rate * seconds))
    started = time.perf_counter()
    for n in range(count):
        delay = started + n / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        send(n)
    return count


def run(ctx: Context) -> list[Result]:
    log("  latency on redis")
    sizes = ctx.sizes
    shared = ctx.shared
    deployment = shared.deployment("redis")
    stats = shared.stats
    bus_worker, raw_worker = shared.workers({"bus-redis": deployment.bus_worker, "raw-redis": deployment.raw_worker})
    p99: dict[str, list[float]] = {"bus": [], "raw": []}

    def measure(side: str, worker: Worker, send: Callable[[int, int], None], seconds: float) -> float:
        """One round: p50 in ms; p99 kept aside."""
        batch = stats.new_batch()
        others = shared.others(worker)
        for other in others:
            other.pause()
        try:
            count = steady(lambda n: send(n, batch), sizes.latency_rate, seconds)
            stats.wait(batch, count, timeout=60, workers=[worker])
            time.sleep(0.1)  # the workers write latencies every 50 ms
        finally:
            for other in others:
                other.resume()
        latencies = stats.latencies(batch)
        p99[side].append(percentile(latencies, 0.99) * MS)
        return percentile(latencies, 0.5) * MS

    def bus_send(n: int, batch: int) -> None:
        deployment.bus.publish(make_event(OrderPlaced, n, batch=batch))

    def raw_send(n: int, batch: int) -> None:
        deployment.raw[0].send(raw_payload(make_event(OrderPlaced, n, batch=batch)))

    measure("bus", bus_worker, bus_send, 0.2)
    measure("raw", raw_worker, raw_send, 0.2)
    p99 = {"bus": [], "raw": []}
    bus_p50, raw_p50, ratio, _ = side_by_side(
        lambda: measure("bus", bus_worker, bus_send, sizes.latency_seconds),
        lambda: measure("raw", raw_worker, raw_send, sizes.latency_seconds),
        sizes.latency_rounds,
    )
    bus_p99, raw_p99 = statistics.median(p99["bus"]), statistics.median(p99["raw"])
    title = f"latency publish() -> handler start at {sizes.latency_rate}/s"
    return [
        Result(
            "8", f"{title}, p50", "redis", "ms", bus_p50, raw_p50, "raw actor.send", ratio, rounds=sizes.latency_rounds
        ),
        Result(
            "8",
            f"{title}, p99",
            "redis",
            "ms",
            bus_p99,
            raw_p99,
            "raw actor.send",
            bus_p99 / raw_p99 if raw_p99 else float("nan"),
            rounds=sizes.latency_rounds,
            note=f"{sizes.latency_seconds:g} s per round; p99 is the median of the rounds' p99",
        ),
    ]
