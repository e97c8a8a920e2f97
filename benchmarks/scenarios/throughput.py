"""Scenarios 5 and 6: how fast real ``dramatiq`` workers drain a queue of no-op messages.

5. The bus's worker (``dramatiq dramatiq_eventbus.worker``, 1 process x 8 threads)
   against plain Dramatiq actors (``dramatiq benchmarks.raw_worker``, the same) on the
   same broker, each draining the same number of one-handler messages.
6. The bus's worker with 2 processes x 8 threads, draining events with partition keys
   (100 keys; handled in order per key through lanes in Redis) against the same events
   without keys.

Each round pauses the worker, fills its queue, resumes it, and takes the rate from the
first message handled to the last (see :func:`benchmarks.workers.drain_rate`); every
other worker of the run stays paused meanwhile.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

from ..deploy import Deployment, Shared
from ..runner import Context, Result, Target, log, side_by_side
from ..workers import Worker, drain_rate
from ..workload import OrderEvent, OrderPlaced, OrderShipped, make_event, raw_payload

CHUNK = 100  # events per publish() call while filling a queue
KEYS = 100
WARM_UP = 200  # messages of the round that warms a worker up: imports, connections, queue declarations


def publish_fill(deployment: Deployment, cls: type[OrderEvent], count: int) -> Callable[[int], int]:
    """Fill by publishing ``count`` events of ``cls`` through the bus, 100 per publish() call."""

    def fill(batch: int) -> int:
        prefix = deployment.ctx.name(f"{batch}")  # partition keys unique to the run and the round
        for start in range(0, count, CHUNK):
            stop = min(count, start + CHUNK)
            deployment.bus.publish(
                [make_event(cls, n, batch=batch, keys=KEYS, prefix=prefix) for n in range(start, stop)]
            )
        return count

    return fill


def raw_fill(deployment: Deployment, count: int) -> Callable[[int], int]:
    """Fill by sending ``count`` messages to the first raw actor."""

    def fill(batch: int) -> int:
        return deployment.send_raw(
            deployment.raw[0], [raw_payload(make_event(OrderPlaced, n, batch=batch)) for n in range(count)]
        )

    return fill


def rate(
    shared: Shared, worker: Worker, fill: Callable[[int], int], cpu: list[float] | None = None
) -> Callable[[], float]:
    """One round of ``worker`` draining what ``fill`` sends, every other worker paused; its CPU µs/msg to ``cpu``."""
    return lambda: drain_rate(worker, shared.stats, fill, others=shared.others(worker), cpu=cpu)


def per_round(ctx: Context, count: int) -> str:
    """How much each side drains a round, for the table's notes."""
    turns = ctx.sizes.drain_turns
    return f"{count} messages per round" if turns == 1 else f"{turns} drains of {count} messages per round, in turns"


def cpu_note(bus: list[float], baseline: list[float], baseline_name: str, bus_name: str = "bus") -> str:
    """The medians of the workers' CPU time per message, for the table's notes."""
    bus_us, baseline_us = statistics.median(bus), statistics.median(baseline)
    return f"worker CPU per message: {bus_name} {bus_us:.0f} µs, {baseline_name} {baseline_us:.0f} µs"


def run(ctx: Context) -> list[Result]:
    results = [workers_side_by_side(ctx, broker) for broker in ctx.brokers]
    return results + [partition_keys(ctx, broker) for broker in ctx.brokers]


def workers_side_by_side(ctx: Context, broker: str) -> Result:
    log(f"  worker throughput on {broker}")
    count, rounds = ctx.sizes.drain, ctx.sizes.drain_rounds
    shared = ctx.shared
    deployment = shared.deployment(broker)
    bus_worker, raw_worker = shared.workers(
        {f"bus-{broker}": deployment.bus_worker, f"raw-{broker}": deployment.raw_worker}
    )
    rate(shared, bus_worker, publish_fill(deployment, OrderPlaced, min(count, WARM_UP)))()
    rate(shared, raw_worker, raw_fill(deployment, min(count, WARM_UP)))()
    bus_cpu: list[float] = []
    raw_cpu: list[float] = []
    bus_rate, raw_rate, ratio, ratios = side_by_side(
        rate(shared, bus_worker, publish_fill(deployment, OrderPlaced, count), bus_cpu),
        rate(shared, raw_worker, raw_fill(deployment, count), raw_cpu),
        rounds,
        turns=ctx.sizes.drain_turns,
        combine=statistics.harmonic_mean,
    )
    return Result(
        "5",
        "worker throughput, no-op handler, 1 process x 8 threads",
        broker,
        "msg/s",
        bus_rate,
        raw_rate,
        "raw Dramatiq actors",
        ratio,
        Target(">=", 1.2),
        rounds,
        note=f"{per_round(ctx, count)}; {cpu_note(bus_cpu, raw_cpu, 'raw')}",
        ratios=ratios,
    )


def partition_keys(ctx: Context, broker: str) -> Result:
    log(f"  worker throughput with partition keys on {broker}")
    count, rounds = ctx.sizes.drain, ctx.sizes.drain_rounds
    shared = ctx.shared
    deployment = shared.deployment(broker, tag="2x8")
    (worker,) = shared.workers({f"bus-{broker}-2x8": lambda: deployment.bus_worker(processes=2)})
    rate(shared, worker, publish_fill(deployment, OrderShipped, min(count, WARM_UP)))()
    rate(shared, worker, publish_fill(deployment, OrderPlaced, min(count, WARM_UP)))()
    lanes_where = "the broker's Redis" if broker == "redis" else "a Redis beside the broker"
    keyed_cpu: list[float] = []
    unkeyed_cpu: list[float] = []
    keyed_rate, unkeyed_rate, ratio, ratios = side_by_side(
        rate(shared, worker, publish_fill(deployment, OrderShipped, count), keyed_cpu),
        rate(shared, worker, publish_fill(deployment, OrderPlaced, count), unkeyed_cpu),
        rounds,
        turns=ctx.sizes.drain_turns,
        combine=statistics.harmonic_mean,
    )
    return Result(
        "6",
        f"throughput with partition keys ({KEYS} keys), 2 processes x 8 threads",
        broker,
        "msg/s",
        keyed_rate,
        unkeyed_rate,
        "same events without keys",
        ratio,
        Target(">=", 0.8 if broker == "redis" else 0.5),
        rounds,
        note=f"{per_round(ctx, count)}; lanes in {lanes_where}; "
        + cpu_note(keyed_cpu, unkeyed_cpu, "without keys", "with keys"),
        ratios=ratios,
    )
