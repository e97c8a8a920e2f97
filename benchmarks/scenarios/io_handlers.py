"""Scenario 13: worker throughput when each handler waits on I/O, bus against raw actors.

Handlers of real applications wait on I/O, which releases the GIL: there the worker's
threads, not its CPU, may be what bounds the rate. Each message's handler (the bus's,
:class:`~benchmarks.workload.SleepsOnIO`) and the raw actor (``bench_raw_io_sleep``)
sleep 1 ms and then count themselves; a second kind makes one Redis round trip instead
(:class:`~benchmarks.workload.CallsRedis`, ``bench_raw_io_redis``). The bus's worker drains
them against raw Dramatiq's, as in scenario 5 (:func:`benchmarks.workers.drain_rate`), with
1 process x 8 threads and 2 processes x 8 threads, on each broker. The 1 ms sleep caps a
process at about 8 / 1.1 ms = 7,000 msg/s; on 2 CPUs both sides reach 1,400-3,900, so the
CPU still bounds them, and the note gives each side's CPU time per message. A round is
``io_turns`` (2) drains of each side, taking turns, of ``io_drain`` messages per process
(1,000: a third of a second to two thirds, filling not counted), their rates combined; with
one drain of 1,500 a round, the worst of three rounds read 0.86-0.93x where the medians read
1.01-1.07x. Target: at least raw's rate at the median and at the worst round, over
``io_rounds`` (5) rounds a row. To keep ``make bench`` under 10 minutes, the Redis round trip
runs at 1 x 8 only.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

from ..deploy import Deployment
from ..runner import Context, Result, Target, log, side_by_side
from ..workload import OrderAudited, OrderEvent, OrderSynced, declare_raw_io_actors, make_event, raw_payload
from .throughput import WARM_UP, cpu_note, publish_fill, rate

THREADS = 8
# (processes, I/O kind) of each row, per broker.
ROWS = ((1, "sleep"), (2, "sleep"), (1, "redis"))
EVENTS: dict[str, type[OrderEvent]] = {"sleep": OrderAudited, "redis": OrderSynced}
WHAT = {"sleep": "sleeps 1 ms", "redis": "makes 1 Redis round trip"}


def run(ctx: Context) -> list[Result]:
    return [io_side_by_side(ctx, broker, processes, kind) for broker in ctx.brokers for processes, kind in ROWS]


def raw_io_fill(deployment: Deployment, kind: str, count: int) -> Callable[[int], int]:
    """Fill by sending ``count`` messages to the raw actor that waits on I/O the ``kind`` way."""
    actor = declare_raw_io_actors(deployment.raw_broker, deployment.queues["raw"])[kind]

    def fill(batch: int) -> int:
        return deployment.send_raw(actor, [raw_payload(make_event(OrderAudited, n, batch=batch)) for n in range(count)])

    return fill


def io_side_by_side(ctx: Context, broker: str, processes: int, kind: str) -> Result:
    shape = f"{processes} process{'es' if processes > 1 else ''} x {THREADS} threads"
    log(f"  worker throughput, handler that {WHAT[kind]}, {shape}, on {broker}")
    count, rounds = ctx.sizes.io_drain * processes, ctx.sizes.io_rounds
    shared = ctx.shared
    # The workers of scenarios 5 (1 x 8) and 6 (2 x 8, the bus's) when they run.
    tag = "" if processes == 1 else "2x8"
    suffix = "" if processes == 1 else "-2x8"
    deployment = shared.deployment(broker, tag=tag)
    bus_worker, raw_worker = shared.workers(
        {
            f"bus-{broker}{suffix}": lambda: deployment.bus_worker(processes=processes, threads=THREADS),
            f"raw-{broker}{suffix}": lambda: deployment.raw_worker(processes=processes, threads=THREADS),
        }
    )
    bus_fill = publish_fill(deployment, EVENTS[kind], count)
    raw_fill = raw_io_fill(deployment, kind, count)
    # A short round of each first: the handlers' actors and the Redis client warm up.
    rate(shared, bus_worker, publish_fill(deployment, EVENTS[kind], min(count, WARM_UP)))()
    rate(shared, raw_worker, raw_io_fill(deployment, kind, min(count, WARM_UP)))()
    bus_cpu: list[float] = []
    raw_cpu: list[float] = []
    bus_rate, raw_rate, ratio, ratios = side_by_side(
        rate(shared, bus_worker, bus_fill, bus_cpu),
        rate(shared, raw_worker, raw_fill, raw_cpu),
        rounds,
        turns=ctx.sizes.io_turns,
        combine=statistics.harmonic_mean,
    )
    return Result(
        "13",
        f"worker throughput, handler {WHAT[kind]}, {shape}",
        broker,
        "msg/s",
        bus_rate,
        raw_rate,
        "raw Dramatiq actors, same wait",
        ratio,
        Target(">=", 1.0),
        rounds,
        note=f"{ctx.sizes.io_turns} drains of {count} messages per round, in turns; "
        + cpu_note(bus_cpu, raw_cpu, "raw"),
        ratios=ratios,
    )
