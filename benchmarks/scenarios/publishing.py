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
#: Turns each side takes within a round of scenarios 1, 2 and 4.
BLOCKS = 20


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
        """Wall time per call, side by side; the publishing thread's CPU time per call goes to ``cpu_notes``.

        Within a round the two sides take turns in blocks of a twentieth of its calls, so that a
        hiccup of the machine (tens of ms) lands on both: with whole rounds taken in turn, one
        decided the worst of 15 rounds (1.05-1.09x where the medians read 0.82-0.93x).
        """
        for _ in range(min(calls, 20)):  # warm up connections, caches and the lazy queue declarations
            bus_call()
            raw_call()
        deployment.empty_queues()
        block = max(1, calls // BLOCKS)
        walls: dict[str, list[float]] = {"bus": [], "raw": []}
        cpu: dict[str, list[float]] = {"bus": [], "raw": []}
        for round_number in range(sizes.rounds):
            wall, used = {"bus": 0.0, "raw": 0.0}, {"bus": 0.0, "raw": 0.0}
            sides = [("bus", bus_call), ("raw", raw_call)]
            for turn in range(2 * ((calls + block - 1) // block)):
                side, call = sides[(turn + round_number) % 2]
                count = min(block, calls - block * (turn // 2))
                started, cpu_started = time.perf_counter(), time.thread_time()
                for _ in range(count):
                    call()
                wall[side] += time.perf_counter() - started
                used[side] += time.thread_time() - cpu_started
            deployment.empty_queues()
            for side in walls:
                walls[side].append(wall[side] / calls * US)
                cpu[side].append(used[side] / calls * US)
        ratios = [b / r if r else float("inf") for b, r in zip(walls["bus"], walls["raw"], strict=True)]
        cpu_ratios = [b / r for b, r in zip(cpu["bus"], cpu["raw"], strict=True) if r]
        bus_cpu, raw_cpu = statistics.median(cpu["bus"]), statistics.median(cpu["raw"])
        cpu_notes.append(
            f"publisher CPU per call: bus {bus_cpu:.0f} µs, raw {raw_cpu:.0f} µs, "
            f"{statistics.median(cpu_ratios):.3g}x (rounds {min(cpu_ratios):.3g}-{max(cpu_ratios):.3g}x)"
        )
        return statistics.median(walls["bus"]), statistics.median(walls["raw"]), statistics.median(ratios), ratios

    def raw_send() -> None:
        raw[0].send(raw_payload(placed))

    def raw_fan_out() -> None:
        payload = raw_payload(paid)
        for actor in raw:
            actor.send(payload)

    name = deployment.broker
    one = rounds(lambda: bus.publish(placed), raw_send, sizes.publishes)
    # 125 fan-outs a round (65 ms of the bus on Redis, 1.6 s of raw's on RabbitMQ): at 50 one hiccup of
    # the machine decided the worst round; at 250 the rounds read the same, and took a minute of the ten.
    ten = rounds(lambda: bus.publish(paid), raw_fan_out, max(1, sizes.publishes // 4))
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
