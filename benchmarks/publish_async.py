"""publish_async(): the design kept, measured against the obvious alternative.

    python -m benchmarks.publish_async [redis://127.0.0.1:6379/15]

A: ``await asyncio.to_thread(bus.publish, event)``: the whole publish() in a worker thread,
   with a copy of the caller's context variables (what to_thread does).
B: ``await bus.publish_async(event)``: interested, encoding, metadata and the choice of taker
   on the loop's thread; only the backend's deliver() in a worker thread.

For each: the time per call awaited one after another; the throughput of 50 tasks publishing
at once; the longest the event loop was kept from a ticking task (its worst lag); and the
time per call inside a deferred_async() block, where B needs no thread at all.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import redis

from dramatiq_eventbus import EventBus, Handler


@dataclass(frozen=True)
class Placed:
    order_id: str
    email: str
    total: str


class Noop(Handler):
    def handle_event(self, event: Placed) -> None:
        return None


HANDLERS = {Placed: [Noop]}
SEQUENTIAL = 2000
TASKS, PER_TASK = 50, 40


async def ticker(stop: asyncio.Event, lags: list[float]) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        await asyncio.sleep(0.001)
        lags.append(time.perf_counter() - started - 0.001)


async def measure(publish: Callable[[Placed], Awaitable[object]], bus: EventBus) -> dict[str, float]:
    event = Placed("A-1", "alice@example.com", "26.99")
    for _ in range(200):  # warm-up: connections, thread pool
        await publish(event)
    stop, lags = asyncio.Event(), list[float]()
    tick = asyncio.create_task(ticker(stop, lags))
    started = time.perf_counter()
    for _ in range(SEQUENTIAL):
        await publish(event)
    sequential = (time.perf_counter() - started) / SEQUENTIAL

    async def one_task() -> None:
        for _ in range(PER_TASK):
            await publish(event)

    started = time.perf_counter()
    await asyncio.gather(*(one_task() for _ in range(TASKS)))
    throughput = TASKS * PER_TASK / (time.perf_counter() - started)
    stop.set()
    await tick
    started = time.perf_counter()
    async with bus.deferred_async():
        for _ in range(SEQUENTIAL):
            await publish(event)
        buffered = (time.perf_counter() - started) / SEQUENTIAL
    return {
        "per call (us)": sequential * 1e6,
        "throughput, 50 tasks (/s)": throughput,
        "loop lag p50 (us)": statistics.median(lags) * 1e6,
        "loop lag max (us)": max(lags) * 1e6,
        "per call in deferred_async (us)": buffered * 1e6,
    }


async def main(url: str) -> None:
    queue = f"bench-async-{uuid.uuid4().hex[:8]}"
    bus = EventBus().configure(handlers=HANDLERS, broker=url, queue=queue, partitioned_queue=f"{queue}-p")

    async def whole_in_thread(event: Placed) -> object:
        return await asyncio.to_thread(bus.publish, event)

    try:
        results: dict[str, list[dict[str, float]]] = {}
        for _ in range(2):  # alternate, so that neither always runs on a warmer Redis
            for name, publish in (("A to_thread(publish)", whole_in_thread), ("B publish_async", bus.publish_async)):
                results.setdefault(name, []).append(await measure(publish, bus))
        for name, runs in results.items():
            print(name)
            for key in runs[0]:
                print(f"  {key:34} {' / '.join(f'{run[key]:10.1f}' for run in runs)}")
    finally:
        client = redis.Redis.from_url(url)
        for key in client.scan_iter(match=f"dramatiq:{queue}*"):
            client.delete(key)
        bus.broker.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "redis://127.0.0.1:6379/15"))
