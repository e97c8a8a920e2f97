"""The scenarios of issue 6, one module each (1-4 share one): ``run(ctx)`` returns table rows.

| # | what | module | needs |
| --- | --- | --- | --- |
| 1-4 | publish() against raw sends: 1 handler, 10 handlers, none interested, 100 events | publishing | each broker |
| 5 | worker throughput, bus against raw actors | throughput | each broker, workers |
| 6 | throughput with partition keys, against without | throughput | Redis, workers |
| 7 | codec time and size, typed against pickle | codec_cost | - |
| 8 | latency publish() -> handler start at steady rates, p50 to p99.9; idle calls | latency | each broker, workers |
| 9 | a worker's memory after 1,000,000 events against 10,000 | memory | Redis, workers, ``--slow`` |
| 10 | Celery: enqueue a fan-out, and worker throughput | celery_fan_out | Redis, workers |
| 11 | reading a forged message at max_message_bytes: slowest shape, and growth with size | hostile_reading | - |
| 12 | tracing and metrics: cost per publish() and per handler run, and off | instrument_cost | Redis |
| 13 | worker throughput, handlers waiting 1 ms on I/O, bus against raw actors | io_handlers | each broker, workers |
| 14 | publish() time against event classes registered (10,000: ``--slow``), fan-out | publish_scaling | Redis |
| 15 | lanes' Redis memory per waiting event; left after drained (1,000,000: ``--slow``) | lane_memory | redis-server |
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..runner import Context, Result
from . import (
    celery_fan_out,
    codec_cost,
    hostile_reading,
    instrument_cost,
    io_handlers,
    lane_memory,
    latency,
    memory,
    publish_scaling,
    publishing,
    throughput,
)


@dataclass(frozen=True)
class Scenario:
    """A group of the issue's scenarios that run together.

    Parameters:
      numbers(tuple[str, ...]): The issue's scenario numbers it reports.
      run(Callable[[Context], list[Result]]): Measures and returns the rows.
      slow(bool): Only with ``--slow`` (or tiny, with ``--smoke``).
      quick(bool): Part of ``--quick``'s early look.
    """

    numbers: tuple[str, ...]
    run: Callable[[Context], list[Result]]
    slow: bool = False
    quick: bool = False


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(("1", "2", "3", "4"), publishing.run, quick=True),
    Scenario(("5", "6"), throughput.run, quick=True),
    Scenario(("13",), io_handlers.run),  # after 5 and 6: it reuses their workers
    Scenario(("7",), codec_cost.run, quick=True),
    Scenario(("11",), hostile_reading.run),
    Scenario(("12",), instrument_cost.run),
    Scenario(("8",), latency.run),
    Scenario(("10",), celery_fan_out.run),
    Scenario(("14",), publish_scaling.run),
    Scenario(("15",), lane_memory.run),
    Scenario(("14",), publish_scaling.run_slow, slow=True),
    Scenario(("15",), lane_memory.run_slow, slow=True),
    Scenario(("9",), memory.run, slow=True),
)
