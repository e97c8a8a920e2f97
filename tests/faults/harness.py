"""A deployment for one fault test: queues of its own, real workers, publishers, and the tally.

Every handler run is counted in the shared test Redis (see handlers.py), so after a
fault the test can say, per (handler, event): processed at least once, or lost; and how
many runs beyond the first there were (duplicates).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from dramatiq_eventbus import EventBus
from tests.support.broker_queues import RabbitmqQueues, RedisQueues
from tests.support.worker_process import WorkerProcess, wait_for

from . import handlers

HANDLERS = "tests.faults.handlers:HANDLERS"


@dataclass(frozen=True)
class Tally:
    """What a fault did to a workload, per (handler, event) message.

    Parameters:
      sent(int): Messages that had to be processed.
      processed(int): Of those, how many a handler finished at least once.
      lost(int): How many no handler ever finished.
      duplicated(int): Runs finished beyond the first, summed over every message.
    """

    sent: int
    processed: int
    lost: int
    duplicated: int


@dataclass(frozen=True)
class Figure:
    fault: str
    broker: str
    tally: Tally
    note: str = ""


#: Every figure the fault tests measured in this session, for the summary at the end.
FIGURES: list[Figure] = []


def report(fault: str, broker: str, tally: Tally, note: str = "") -> None:
    FIGURES.append(Figure(fault, broker, tally, note))
    print(f"\n[faults] {fault} on {broker}: {tally} {note}".rstrip(), file=sys.stderr)


@dataclass
class Deployment:
    """Workers and publishers on one broker, with queues unique to the test.

    Parameters:
      broker_url(str): What the workers and publishers connect to.
      record_url(str): The shared Redis where handlers count their runs.
      tmp(Path): Where worker logs go.
      env(dict[str, str]): More ``EVENTBUS_*`` (or other) variables for the workers.
      settings(dict[str, Any]): More configure() arguments for the publishers, the same settings.
    """

    broker_url: str
    record_url: str
    tmp: Path
    env: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    workers: list[WorkerProcess] = field(default_factory=list)
    buses: list[EventBus] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return "rabbitmq" if self.broker_url.startswith("amqp") else "redis"

    @property
    def queues(self) -> tuple[str, str]:
        return f"faults_{self.run}", f"faults_{self.run}_keyed"

    def worker_env(self) -> dict[str, str]:
        return {
            "EVENTBUS_HANDLERS": HANDLERS,
            "EVENTBUS_BROKER_URL": self.broker_url,
            "EVENTBUS_QUEUE": self.queues[0],
            "EVENTBUS_PARTITIONED_QUEUE": self.queues[1],
            handlers.RECORD_URL_VAR: self.record_url,
            **self.env,
        }

    def start_worker(self, *, threads: int = 8, env: dict[str, str] | None = None) -> WorkerProcess:
        worker = WorkerProcess(
            "dramatiq_eventbus.worker",
            queues=self.queues,
            env={**self.worker_env(), **(env or {})},
            log_path=self.tmp / f"worker-{self.run}-{len(self.workers)}.log",
            threads=threads,
        )
        self.workers.append(worker)
        return worker.start()

    def publisher(self, **overrides: Any) -> EventBus:
        """A bus of its own, configured as the workers are, from arguments rather than variables."""
        settings = {
            "handlers": HANDLERS,
            "broker": self.broker_url,
            "queue": self.queues[0],
            "partitioned_queue": self.queues[1],
            **self.settings,
        }
        bus = EventBus().configure(**{**settings, **overrides})
        self.buses.append(bus)
        return bus

    # -- what the handlers recorded -------------------------------------------------------

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.record_url)

    def counts(self, kind: str = "finished") -> dict[str, int]:
        raw: Any = self.client().hgetall(handlers.counter_key(self.run, kind))
        return {key.decode(): int(value) for key, value in raw.items()}

    def attempts(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.client().lrange(handlers.attempts_key(self.run), 0, -1)]

    def tally(self, events: Iterable[int], names: Iterable[str] = handlers.TICK_HANDLERS) -> Tally:
        expected = [f"{name}|{n}" for n in events for name in names]
        counts = self.counts()
        processed = sum(1 for key in expected if counts.get(key, 0) >= 1)
        duplicated = sum(max(0, counts.get(key, 0) - 1) for key in expected)
        return Tally(sent=len(expected), processed=processed, lost=len(expected) - processed, duplicated=duplicated)

    def wait_until_processed(
        self, events: Iterable[int], *, timeout: float, names: Iterable[str] = handlers.TICK_HANDLERS
    ) -> Tally:
        """Wait until every (handler, event) finished once; return the tally either way, failing on a timeout."""
        events, names = list(events), list(names)

        def done() -> Tally | None:
            tally = self.tally(events, names)
            return tally if tally.lost == 0 else None

        def describe() -> str:
            tails = "".join(worker.log_tail(15) for worker in self.workers[-2:])
            return f"{self.tally(events, names)}{tails}"

        return wait_for(done, timeout=timeout, interval=0.2, describe=describe)

    def processed_count(self) -> int:
        """How many (handler, event) messages finished at least once, cheaply."""
        return int(self.client().hlen(handlers.counter_key(self.run, "finished")))

    # -- clean-up --------------------------------------------------------------------------

    def tear_down(self) -> None:
        try:
            # The test is over: no need for a graceful stop (seconds each), and the queues go anyway.
            for worker in self.workers:
                if worker.process is not None and worker.process.poll() is None:
                    os.killpg(worker.process.pid, signal.SIGKILL)
                    worker.process.wait(timeout=10)
        finally:
            for bus in self.buses:
                bus.broker.close()
            if self.kind == "rabbitmq":
                try:
                    RabbitmqQueues(_unnamed(self.broker_url)).delete(self.queues)
                except Exception as exc:  # the broker may be the one a test broke
                    print(f"[faults] could not delete queues {self.queues}: {exc}", file=sys.stderr)
            else:
                try:
                    probe = RedisQueues(self.broker_url)
                    probe.delete(self.queues)
                    probe.close()
                except redis.ConnectionError:
                    pass
            client = self.client()
            client.delete(*(handlers.counter_key(self.run, kind) for kind in ("started", "finished")))
            client.delete(handlers.attempts_key(self.run))
            client.close()


def _unnamed(url: str) -> str:
    return url.split("?", 1)[0]


def ack_sets(client: redis.Redis, queue: str) -> dict[str, set[str]]:
    """Every worker's set of fetched-but-unacknowledged Redis ids for ``queue`` (and its delay queue)."""
    sets = {}
    for key in client.scan_iter(match="dramatiq:__acks__.*", count=1000):
        name = key.decode() if isinstance(key, bytes) else key
        if name.endswith((f".{queue}", f".{queue}.DQ")):
            members: Any = client.smembers(name)
            sets[name] = {member.decode() for member in members}
    return {name: members for name, members in sets.items() if members}


def publish_in_batches(bus: EventBus, run: str, events: range, batch: int = 100) -> None:
    for start in range(events.start, events.stop, batch):
        bus.publish([handlers.Tick(run, n) for n in range(start, min(start + batch, events.stop))])


def elapsed_since(start: float) -> float:
    return time.monotonic() - start
