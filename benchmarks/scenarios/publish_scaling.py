"""Scenario 14: publish() time against the registry's size and against the event's fan-out.

Each point is an EventBus of its own on the real Redis broker (queues of this run),
configured in-process with event classes and handler classes made for it, and publishes
one event, one call each:

- registry size: 1, 10, 100 and 1,000 event classes registered, one handler each (10,000
  with ``--slow``: configure() itself takes over a minute there, as it grows with the
  square of the classes); the event published is always one of them. publish() looks its
  handlers up in a dict, so its time should not grow.
- fan-out: 1, 10 and 100 handlers of the published event: one message each, sent in one
  Lua call, so the time should grow about linearly.

Rounds visit every point in turn, the order rotating, and time its publishes by the wall
clock and by the publishing thread's CPU (``time.thread_time``, which another process on
this shared machine does not inflate); each point's queue is emptied after its turn, so
no backlog grows. A row is a point's median against the 1-class, 1-handler bus measured in
the same rounds (the median of the rounds' ratios).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

from dramatiq_eventbus import EventBus

from ..deploy import _clean_redis
from ..runner import Context, Result, log
from ..workload import Noop, OrderEvent, OrderPlaced, make_event


@dataclass
class Point:
    """One bus of the curve and what its rounds measured.

    Parameters:
      classes(int): Event classes registered.
      handlers(int): Handlers of the published event.
      publishes(int): publish() calls per round.
      bus(EventBus): Its bus.
      event(OrderEvent): The event it publishes.
      configure_seconds(float): What its configure() took.
    """

    classes: int
    handlers: int
    publishes: int
    bus: EventBus
    event: OrderEvent
    configure_seconds: float
    wall: list[float] = field(default_factory=list)  # µs per publish(), one per round
    cpu: list[float] = field(default_factory=list)

    @property
    def queue(self) -> str:
        return self.bus.config.queues.default

    def measure(self) -> None:
        publish, event = self.bus.publish, self.event
        wall, cpu = time.perf_counter(), time.thread_time()
        for _ in range(self.publishes):
            publish(event)
        self.cpu.append((time.thread_time() - cpu) / self.publishes * 1e6)
        self.wall.append((time.perf_counter() - wall) / self.publishes * 1e6)
        self.bus.broker.flush(self.queue)


def run(ctx: Context) -> list[Result]:
    return curves(ctx, ctx.sizes.registry_sizes, ctx.sizes.fan_outs)


def run_slow(ctx: Context) -> list[Result]:
    return curves(ctx, (1, *ctx.sizes.registry_sizes_slow), (1,))


def curves(ctx: Context, registry_sizes: tuple[int, ...], fan_outs: tuple[int, ...]) -> list[Result]:
    shapes = [(classes, 1) for classes in registry_sizes] + [(1, handlers) for handlers in fan_outs if handlers > 1]
    points: list[Point] = []
    try:
        for classes, handlers in shapes:
            log(f"  publish scaling: configure() for {classes:,} event classes, {handlers} handlers of the one sent")
            points.append(_point(ctx, classes, handlers))
        log(f"  publish scaling: {ctx.sizes.curve_rounds} rounds of {len(points)} points")
        for round_number in range(ctx.sizes.curve_rounds):
            shift = round_number % len(points)
            for point in points[shift:] + points[:shift]:
                point.measure()
    finally:
        for point in points:
            point.bus.broker.close()
        queues = [name for point in points for name in (point.queue, point.bus.config.queues.partitioned)]
        _clean_redis(ctx, queues, [point.bus.broker for point in points])
    base = points[0]
    _log_table(points, base)
    return [_row(point, base) for point in points[1:]]


def _point(ctx: Context, classes: int, handlers: int) -> Point:
    """A bus with ``classes`` event classes (one handler each) and ``handlers`` on the published one."""
    tag = f"{classes}x{handlers}"
    events = [_class(f"Event{tag}_{n}", OrderPlaced) for n in range(classes)]
    routes: dict[type, list[type]] = {event: [_class(f"Handler{tag}_{n}", Noop)] for n, event in enumerate(events)}
    routes[events[0]] = [_class(f"Handler{tag}_0_{n}", Noop) for n in range(handlers)]
    started = time.perf_counter()
    bus = EventBus().configure(
        handlers=routes,
        broker=ctx.redis_url,
        queue=ctx.name(f"curve_{tag}"),
        partitioned_queue=ctx.name(f"curve_{tag}_keyed"),
    )
    seconds = time.perf_counter() - started
    # Many handlers cost a lot per publish(): a tenth of the calls keeps the round short.
    publishes = ctx.sizes.curve_publishes if handlers < 10 else max(ctx.sizes.curve_publishes // 10, 1)
    point = Point(classes, handlers, publishes, bus, make_event(events[0]), seconds)
    bus.publish(point.event)  # the first publish() makes the connection and loads the script
    bus.broker.flush(point.queue)
    return point


def _class(name: str, base: type) -> type:
    """A class of this module named ``name``: its name is its wire name, and its handler's actor name."""
    return type(name, (base,), {"__module__": __name__, "__qualname__": name})


def _row(point: Point, base: Point) -> Result:
    ratios = [wall / base_wall for wall, base_wall in zip(point.wall, base.wall, strict=True)]
    cpu, base_cpu = statistics.median(point.cpu), statistics.median(base.cpu)
    if point.handlers > 1:
        title = f"publish() to {point.handlers} handlers of one event"
        baseline_name = "1 handler"
        more = point.handlers - 1
        wall_each = (statistics.median(point.wall) - statistics.median(base.wall)) / more
        extra = f"; each handler beyond the first: {wall_each:.0f} µs wall, {(cpu - base_cpu) / more:.0f} µs CPU"
    else:
        title = f"publish() with {point.classes:,} event classes registered"
        baseline_name = "1 class"
        extra = f"; configure() took {point.configure_seconds:.1f} s"
    return Result(
        "14",
        title,
        "redis",
        "µs",
        statistics.median(point.wall),
        statistics.median(base.wall),
        baseline_name,
        statistics.median(ratios),
        rounds=len(ratios),
        note=f"thread CPU {cpu:.0f} µs per publish() ({baseline_name}: {base_cpu:.0f} µs, "
        f"{cpu / base_cpu:.2f}x){extra}",
        ratios=ratios,
    )


def _log_table(points: list[Point], base: Point) -> None:
    log("  | event classes | handlers of the event | wall µs / publish() | thread CPU µs | wall vs 1x1 | configure s |")
    log("  | --- | --- | --- | --- | --- | --- |")
    for point in points:
        wall, cpu = statistics.median(point.wall), statistics.median(point.cpu)
        log(
            f"  | {point.classes:,} | {point.handlers} | {wall:,.0f} | {cpu:,.0f} "
            f"| {wall / statistics.median(base.wall):.2f}x | {point.configure_seconds:.2f} |"
        )
