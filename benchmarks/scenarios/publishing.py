"""Scenarios 1-4: what publish() costs the publisher, against raw ``actor.send``.

The raw side builds a dict of the event's fields by hand (what an application calling
its actors directly would send) and sends it to plain Dramatiq actors on Dramatiq's own
broker, set up as the bus sets up its own; the bus side encodes the event with its typed
codec, routes it and sends one message per interested handler. Nothing consumes these
queues: they are emptied after each round.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from ..deploy import Deployment
from ..runner import Context, Result, Target, log, per_call, side_by_side
from ..workload import OrderPaid, OrderPlaced, OrderViewed, make_event, raw_payload

US = 1e6


def run(ctx: Context) -> list[Result]:
    results: list[Result] = []
    for broker in ctx.brokers:
        log(f"  publishing on {broker}")
        results += one_broker(ctx, ctx.shared.deployment(broker))
    return results


def one_broker(ctx: Context, deployment: Deployment) -> list[Result]:
    sizes = ctx.sizes
    bus, raw = deployment.bus, deployment.raw
    placed, paid = make_event(OrderPlaced), make_event(OrderPaid)

    cpu_notes: list[str] = []

    def rounds(
        bus_call: Callable[[], object], raw_call: Callable[[], object], calls: int
    ) -> tuple[float, float, float, list[float]]:
        """Wall time per call, side by side; the publishing thread's CPU time per call goes to ``cpu_notes``."""
        cpu: dict[str, list[float]] = {"bus": [], "raw": []}

        def timed(call: Callable[[], object], side: str) -> Callable[[], float]:
            def one_round() -> float:
                started = time.thread_time()
                seconds = per_call(call, calls)
                cpu[side].append((time.thread_time() - started) / calls * US)
                deployment.empty_queues()
                return seconds * US

            return one_round

        for _ in range(min(calls, 20)):  # warm up connections, caches and the lazy queue declarations
            bus_call()
            raw_call()
        deployment.empty_queues()
        compared = side_by_side(timed(bus_call, "bus"), timed(raw_call, "raw"), sizes.rounds)
        cpu_ratios = [b / r for b, r in zip(cpu["bus"], cpu["raw"], strict=True) if r]
        bus_cpu, raw_cpu = statistics.median(cpu["bus"]), statistics.median(cpu["raw"])
        cpu_notes.append(
            f"publisher CPU per call: bus {bus_cpu:.0f} µs, raw {raw_cpu:.0f} µs, "
            f"{statistics.median(cpu_ratios):.3g}x (rounds {min(cpu_ratios):.3g}-{max(cpu_ratios):.3g}x)"
        )
        return compared

    def raw_send() -> None:
        raw[0].send(raw_payload(placed))

    def raw_fan_out() -> None:
        payload = raw_payload(paid)
        for actor in raw:
            actor.send(payload)

    name = deployment.broker
    one = rounds(lambda: bus.publish(placed), raw_send, sizes.publishes)
    # 250 fan-outs a round (50-60 ms of the bus on Redis): at 50 one hiccup of the machine decided the worst round.
    ten = rounds(lambda: bus.publish(paid), raw_fan_out, max(1, sizes.publishes // 2))
    batch = [make_event(OrderPlaced, n) for n in range(100)]

    def one_by_one() -> None:
        for event in batch:
            bus.publish(event)

    hundred = rounds(lambda: bus.publish(batch), one_by_one, sizes.batches)
    results: list[Result] = [
        Result("1", "publish() to 1 handler", name, "µs", one[0], one[1], "raw actor.send", one[2], Target("<=", 1.0)),
        Result("2", "publish() to 10 handlers", name, "µs", ten[0], ten[1], "10 raw sends", ten[2], Target("<=", 0.25)),
        Result(
            "4",
            "publish() of 100 events, 1 handler each",
            name,
            "µs",
            hundred[0],
            hundred[1],
            "100 single publish()",
            hundred[2],
        ),
    ]
    if name == ctx.brokers[0]:
        viewed = make_event(OrderViewed)
        # No I/O: time many calls per round, against a few raw sends, so the round is not all noise.
        free_bus, free_raw, free_ratio, _ = side_by_side(
            lambda: per_call(lambda: bus.publish(viewed), sizes.free_publishes) * US,
            lambda: per_call(raw_send, sizes.publishes) * US,
            sizes.rounds,
        )
        deployment.empty_queues()
        results.insert(
            2,
            Result(
                "3",
                "publish(), no handler interested",
                name,
                "µs",
                free_bus,
                free_raw,
                "1 raw send",
                free_ratio,
                Target("<=", 0.02, "≤ 0.02x (≥ 50x faster)"),
                note=f"{1 / free_ratio:.0f}x faster than one raw send" if free_ratio else "",
            ),
        )
    for result, ratios, cpu_note in zip(results[:2], (one[3], ten[3]), cpu_notes, strict=False):
        result.ratios = ratios
        result.note = cpu_note
    for result in results:
        result.rounds = sizes.rounds
    return results
