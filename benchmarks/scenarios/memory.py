"""Scenario 9: a worker's resident size after 1,000,000 events against after 10,000.

One bus worker (1 process x 8 threads) on Redis handles one-handler events published
10,000 at a time (each lot handled before the next is sent, so Redis holds no big
backlog); its resident size (VmRSS) is read after the first 10,000 and after the
1,000,000th. A leak of even a few bytes per message shows as growth. Slow (minutes: the
row's note says how long it took), so it runs only with ``--slow`` (and tiny in ``--smoke``).
"""

from __future__ import annotations

import time

from ..runner import Context, Result, Target, log
from ..workers import worker_pids
from ..workload import OrderPlaced, make_event

LOT = 10_000
CHUNK = 100


def run(ctx: Context) -> list[Result]:
    first, total = ctx.sizes.memory
    log(f"  memory: a worker's RSS after {first:,} and {total:,} events")
    shared = ctx.shared
    stats = shared.stats
    deployment = shared.deployment("redis", tag="mem")  # a fresh worker of its own: nothing handled before
    (worker,) = shared.workers({"bus-redis-mem": deployment.bus_worker})
    for other in shared.others(worker):
        other.pause()
    started = time.monotonic()
    try:
        batch = stats.new_batch()
        readings: dict[int, int] = {}
        steps: list[float] = []  # MiB after every 100,000 events
        sent = 0
        for target in (first, total):
            while sent < target:
                lot = min(LOT, target - sent)
                for start in range(sent, sent + lot, CHUNK):
                    stop = min(sent + lot, start + CHUNK)
                    deployment.bus.publish([make_event(OrderPlaced, n, batch=batch) for n in range(start, stop)])
                sent += lot
                stats.wait(batch, sent, timeout=300, workers=[worker])
                # The worker pushes every handling latency to Redis; unread here, 1,000,000
                # of them would sit in the shared Redis (tens of MB) until the run ends.
                stats.client.delete(f"{stats.key}:latency:{batch}")
                if sent % (10 * LOT) == 0:
                    # A leak grows the size with every lot; an allocator settling grows it, then stops.
                    steps.append(max(stats.resident_kib(worker_pids(worker)).values()) / 1024)
                    log(f"    {sent:,} events handled, {time.monotonic() - started:.0f} s, RSS {steps[-1]:.1f} MiB")
            time.sleep(0.3)  # the worker reports its size with its counts, every 50 ms
            readings[target] = max(stats.resident_kib(worker_pids(worker)).values())
    finally:
        for other in shared.others(worker):
            other.resume()
        shared.stop_worker(worker)
    seconds = time.monotonic() - started
    before, after = readings[first] / 1024, readings[total] / 1024
    return [
        Result(
            "9",
            f"worker RSS after {total:,} events",
            "redis",
            "MiB",
            after,
            before,
            f"after {first:,}",
            after / before,
            Target("<=", 1.2),
            note=f"{total:,} events published and handled in {seconds:.0f} s ({total / seconds:,.0f}/s)"
            + (f"; RSS every {10 * LOT:,} events: {', '.join(f'{mib:.1f}' for mib in steps)} MiB" if steps else ""),
        )
    ]
