"""Scenario 11: what reading a forged message costs a worker, at the size limit.

Issue 13's bound: every payload up to ``max_message_bytes`` (1 MiB by default) is decoded
or refused in time linear in its size, and in at most 50 ms at the limit. Each shape below
fills a message up to the limit with what costs most per byte (numbers, the most objects
and lists allowed, tagged values, the longest fractions and ints); a worker reads it as the
bus's consumer does (:func:`~dramatiq_eventbus.brokers.inspect_body`, then the handler
actor's codec). The bus's row is the slowest shape's median; its baseline is raw Dramatiq
reading the same bytes (its JSON decoding alone, which a worker pays anyway). A second row
gives the steepest growth of the cost per byte, from an eighth of the limit to the limit:
1.0 is linear.
"""

from __future__ import annotations

import contextlib
import gc
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dramatiq.message import Message

from dramatiq_eventbus import EventBus, Handler
from dramatiq_eventbus.brokers import inspect_body
from dramatiq_eventbus.brokers.inspection import Refusal
from dramatiq_eventbus.brokers.limits import containers_allowed
from dramatiq_eventbus.handler import handler_name

from ..runner import Context, Result, Target, log

BOUND_MS = 50.0


@dataclass(frozen=True)
class Anything:
    """An event with a field that takes any value: the widest door a forged payload can use."""

    value: Any


@dataclass(frozen=True)
class Line:
    sku: str
    quantity: int


@dataclass(frozen=True)
class Lines:
    lines: list[Line]


class TakesAnything(Handler):
    def handle_event(self, event: Anything) -> None:
        pass


class TakesLines(Handler):
    def handle_event(self, event: Lines) -> None:
        pass


_HEX = "0x" + "f" * 4095  # the longest int part a $fraction may have


def _shapes(limit: int) -> dict[str, tuple[type[Handler], Callable[[], list[Any]]]]:
    """Each shape: its handler, and the items of its payload's list, filling ``limit`` bytes."""
    allowed = containers_allowed(limit) - 16  # the envelope's and the payload's own

    def filled(item: str = "", scalar: str = "1", each: int = 1) -> Callable[[], list[Any]]:
        def items() -> list[Any]:
            room = limit - 700
            count = min(allowed // each, room // (len(item) + 1)) if item else 0
            rest = max(0, (room - count * (len(item) + 1)) // (len(scalar) + 1))
            parsed: list[Any] = json.loads("[" + ",".join([item] * count + [scalar] * rest) + "]")
            return parsed

        return items

    return {
        "numbers": (TakesAnything, filled()),
        "short strings": (TakesAnything, filled(scalar='"x"')),
        "empty lists and numbers": (TakesAnything, filled("[]")),
        "empty objects and numbers": (TakesAnything, filled("{}")),
        "nested lists and numbers": (TakesAnything, filled("[[[[]]]]", each=4)),
        "$float objects and numbers": (TakesAnything, filled('{"$float":"nan"}')),
        "$tuple objects and numbers": (TakesAnything, filled('{"$tuple":[]}', each=2)),
        "$set of ints and numbers": (
            TakesAnything,
            filled('{"$set":[' + ",".join(map(str, range(200))) + "]}", each=2),
        ),
        "$map of ints": (
            TakesAnything,
            filled('{"$map":[' + ",".join(f"[{i},{i}]" for i in range(100)) + "]}", each=102),
        ),
        "largest $fraction": (TakesAnything, filled(_tagged("$fraction", f"{_HEX}/{_HEX[:-1]}d"))),
        "largest $int": (TakesAnything, filled(_tagged("$int", _HEX))),
        "$datetime with zones": (TakesAnything, filled('{"$datetime":"2026-01-01T00:00:00","tz":"Europe/Paris"}')),
        "records": (TakesLines, filled(json.dumps({"$type": _wire(Line), "sku": "a", "quantity": 1}))),
    }


def _tagged(tag: str, value: str) -> str:
    return json.dumps({tag: value})


def _wire(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _body(bus: EventBus, handler: type[Handler], payload: Any) -> bytes:
    actor = bus.broker.actors[handler_name(handler)]
    message: Message[Any] = Message(
        queue_name=actor.queue_name, actor_name=actor.actor_name, args=(payload,), kwargs={}, options={}
    )
    return message.encode()


def _reading(bus: EventBus, body: bytes, limit: int) -> Callable[[], float]:
    """One read of ``body`` as a worker does it: inspection, then the codec; returns its thread's CPU seconds.

    CPU time, not wall time: it is what a read takes from a worker's other threads (it holds
    the GIL throughout), and it moves far less than wall time on a shared machine.
    """
    actors, codec = bus.broker.actors, bus.config.codec
    queue = json.loads(body)["queue_name"]

    def read() -> float:
        gc.collect()  # each read starts from the same heap, as a worker's next message would
        started = time.thread_time()
        message = inspect_body(body, actors, queue, max_bytes=limit)
        if not isinstance(message, Refusal):
            with contextlib.suppress(Exception):  # refused by the codec: a cost like any other
                codec.decode(message.args[0])
        return time.thread_time() - started

    return read


def _raw_reading(body: bytes) -> Callable[[], float]:
    """One read of ``body`` as raw Dramatiq's worker does it: its JSON decoding alone; returns CPU seconds."""

    def read() -> float:
        gc.collect()
        started = time.thread_time()
        Message.decode(body)
        return time.thread_time() - started

    return read


def run(ctx: Context) -> list[Result]:
    limit, rounds = ctx.sizes.hostile_bytes, ctx.sizes.hostile_rounds
    bus = EventBus().configure(
        handlers={Anything: [TakesAnything], Lines: [TakesLines]}, broker="stub", max_message_bytes=limit
    )
    costs: dict[str, tuple[float, float, float]] = {}  # shape -> median seconds: at the limit, raw, at 1/8
    for name, (handler, _) in _shapes(limit).items():
        bodies = []
        for size in (limit, limit // 8):
            payload: dict[str, Any] = {"$type": _wire(Anything if handler is TakesAnything else Lines)}
            payload["lines" if handler is TakesLines else "value"] = _shapes(size)[name][1]()
            bodies.append(_body(bus, handler, payload))
        reads = (_reading(bus, bodies[0], limit), _raw_reading(bodies[0]), _reading(bus, bodies[1], limit))
        medians = [statistics.median(read() for _ in range(rounds)) for read in reads]
        costs[name] = (medians[0], medians[1], medians[2])
        log(
            f"    {name}: {medians[0] * 1000:.1f} ms at {limit // 1024} KiB (raw Dramatiq {medians[1] * 1000:.1f} ms), "
            f"{medians[2] * 1000:.1f} ms at 1/8"
        )
    slowest = max(costs, key=lambda name: costs[name][0])
    worst, raw, _ = costs[slowest]
    growth = {name: at_limit / (8 * eighth) for name, (at_limit, _, eighth) in costs.items() if eighth > 0}
    steepest = max(growth, key=lambda name: growth[name])
    return [
        Result(
            "11",
            f"read a forged message at max_message_bytes ({limit // 1024} KiB): slowest of {len(costs)} shapes",
            "-",
            "ms CPU",
            worst * 1000,
            raw * 1000,
            "raw Dramatiq decoding the same bytes",
            worst / raw,
            Target("<=", BOUND_MS, f"≤ {BOUND_MS:g} ms", on="bus"),
            rounds,
            note=f"slowest: {slowest}; refused or decoded, inspection included",
        ),
        Result(
            "11",
            "read a forged message: cost per byte at the limit / at an eighth of it (steepest shape)",
            "-",
            "x",
            growth[steepest],
            1.0,
            "linear",
            growth[steepest],
            Target("<=", 1.5),
            rounds,
            note=f"steepest: {steepest}",
        ),
    ]
