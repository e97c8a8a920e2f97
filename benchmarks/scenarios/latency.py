"""Scenario 8: latency from publish() to the handler's start at steady rates on Redis, and idle calls.

A publisher sends one event at a time at each of ``latency_rates`` events/s (200, 500 and
1,000 in the full run); each event carries the time it was published, and the handler notes
how long after that it started. Three sides alternate round by round, in a rotating order:
the bus with events of no partition key ("unordered"), the bus with a partition key per
order, 100 orders ("ordered": each event goes through its lane), and raw Dramatiq's
``actor.send`` to a raw actor, which is the baseline of both. Every worker runs throughout
with 1 process x 8 threads; every worker but the measured one is paused. A short round of
each warms them up first.

Per rate and bus side, two rows: the median p50 against raw's (target: at most 0.3x), and the
worst p99 of the rounds against raw's median p99 (target: at most 0.15x). Then one row for
idle workers: Redis calls per second of the bus's worker against raw Dramatiq's, each alone on a
Redis of its own (:mod:`benchmarks.idle`; target: no more than raw's).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from .. import idle
from ..runner import Context, Result, Target, log, percentile
from ..workers import Worker
from ..workload import OrderPlaced, OrderShipped, make_event, raw_payload

MS = 1000
P50_TARGET = Target("<=", 0.3)
P99_TARGET = Target("<=", 0.15, "worst p99 ≤ 0.15x raw's median")
IDLE_TARGET = Target("<=", 1.0)


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
    results: list[Result] = []
    for rate in ctx.sizes.latency_rates:
        results += at_rate(ctx, rate)
    results.append(idle_calls(ctx))
    return results


def at_rate(ctx: Context, rate: int) -> list[Result]:
    log(f"  latency on redis at {rate}/s")
    sizes = ctx.sizes
    shared = ctx.shared
    deployment = shared.deployment("redis")
    stats = shared.stats
    bus_worker, raw_worker = shared.workers({"bus-redis": deployment.bus_worker, "raw-redis": deployment.raw_worker})
    prefix = ctx.name("latency")

    def measure(worker: Worker, send: Callable[[int, int], None], seconds: float) -> tuple[float, float]:
        """One round: p50 and p99, in ms."""
        batch = stats.new_batch()
        others = shared.others(worker)
        for other in others:
            other.pause()
        try:
            count = steady(lambda n: send(n, batch), rate, seconds)
            stats.wait(batch, count, timeout=60, workers=[worker])
            time.sleep(0.1)  # the workers write latencies every 50 ms
        finally:
            for other in others:
                other.resume()
        latencies = stats.latencies(batch)
        return percentile(latencies, 0.5) * MS, percentile(latencies, 0.99) * MS

    def unordered(n: int, batch: int) -> None:
        deployment.bus.publish(make_event(OrderPlaced, n, batch=batch))

    def ordered(n: int, batch: int) -> None:
        deployment.bus.publish(make_event(OrderShipped, n, batch=batch, prefix=prefix))

    def raw(n: int, batch: int) -> None:
        deployment.raw[0].send(raw_payload(make_event(OrderPlaced, n, batch=batch)))

    sides: dict[str, tuple[Worker, Callable[[int, int], None]]] = {
        "unordered": (bus_worker, unordered),
        "ordered": (bus_worker, ordered),
        "raw": (raw_worker, raw),
    }
    for worker, send in sides.values():
        measure(worker, send, 0.2)
    figures: dict[str, list[tuple[float, float]]] = {side: [] for side in sides}
    names = list(sides)
    for round_number in range(sizes.latency_rounds):
        shift = round_number % len(names)
        for side in names[shift:] + names[:shift]:
            worker, send = sides[side]
            figures[side].append(measure(worker, send, sizes.latency_seconds))
    raw_p50 = [p50 for p50, _ in figures["raw"]]
    raw_p99 = statistics.median(p99 for _, p99 in figures["raw"])
    title = f"latency publish() -> handler start at {rate}/s"
    results = []
    for side in ("unordered", "ordered"):
        p50s = [p50 for p50, _ in figures[side]]
        p99s = [p99 for _, p99 in figures[side]]
        ratios = [bus / base if base else float("inf") for bus, base in zip(p50s, raw_p50, strict=True)]
        worst = max(p99s)
        results += [
            Result(
                "8",
                f"{title}, {side}, p50",
                "redis",
                "ms",
                statistics.median(p50s),
                statistics.median(raw_p50),
                "raw actor.send",
                statistics.median(ratios),
                target=P50_TARGET,
                rounds=sizes.latency_rounds,
            ),
            Result(
                "8",
                f"{title}, {side}, worst p99",
                "redis",
                "ms",
                worst,
                raw_p99,
                "raw actor.send, median p99",
                worst / raw_p99 if raw_p99 else float("nan"),
                target=P99_TARGET,
                rounds=sizes.latency_rounds,
                note=(
                    f"{rate}/s, {side}: {sizes.latency_seconds:g} s per round; p99 per round "
                    f"{_listed(p99s)} ms, raw {_listed([p99 for _, p99 in figures['raw']])} ms"
                ),
            ),
        ]
    return results


def idle_calls(ctx: Context) -> Result:
    log("  Redis calls of an idle worker, bus against raw, on a Redis of their own")
    sizes = ctx.sizes
    bus, raw = idle.measure(ctx, sizes.idle_seconds, sizes.idle_rounds)
    return Result(
        "8",
        "Redis calls/s of an idle worker (1 process x 8 threads, 2 queues)",
        "redis",
        "calls/s",
        bus.per_second,
        raw.per_second,
        "raw Dramatiq worker",
        bus.per_second / raw.per_second if raw.per_second else float("nan"),
        target=IDLE_TARGET,
        rounds=sizes.idle_rounds,
        note=f"calls/s by command ({sizes.idle_seconds:g} s per round): bus {_commands(bus)}; raw {_commands(raw)}",
    )


def _listed(values: list[float]) -> str:
    return ", ".join(f"{value:.3g}" for value in values)


def _commands(calls: idle.IdleCalls) -> str:
    return ", ".join(f"{name} {rate:.2f}" for name, rate in calls.by_command.items()) or "none"
