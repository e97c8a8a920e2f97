"""A small cluster for the ordering tests: real workers, concurrent publishers, and the checks."""

from __future__ import annotations

import itertools
import json
import threading
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from dramatiq.brokers.redis import RedisBroker

from dramatiq_eventbus import EventBus
from dramatiq_eventbus.ordering import DEFAULT_LANE_PREFIX

from ..support.broker_queues import RabbitmqQueues
from ..support.worker_process import WorkerProcess, wait_for
from .handlers import Step, log_key

HANDLER_NAMES = ("OrderingA", "OrderingB", "OrderingC")


@dataclass
class Cluster:
    """Workers and publishers sharing one broker and one Redis for lanes.

    Parameters:
      broker_url(str): The broker.
      redis_url(str): The Redis that holds the lanes and the handlers' log.
      tmp(Path): Where worker logs go.
      extra_env(dict[str, str]): More variables for the workers.
      plain_broker(bool): Publishers and workers get a plain ``dramatiq.brokers.redis.RedisBroker``
        made outside the bus (as django_dramatiq would make it), not a broker URL.
    """

    broker_url: str
    redis_url: str
    tmp: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    plain_broker: bool = False
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    workers: list[WorkerProcess] = field(default_factory=list)

    @property
    def queues(self) -> tuple[str, str]:
        return f"ord_{self.run}", f"ord_{self.run}_keyed"

    @property
    def settings(self) -> dict[str, Any]:
        return {
            "handlers": "tests.ordering.handlers:HANDLERS",
            "broker": RedisBroker(url=self.broker_url) if self.plain_broker else self.broker_url,
            "queue": self.queues[0],
            "partitioned_queue": self.queues[1],
            "redis_url": self.redis_url,
            "lane_lease_seconds": 2.0,
            "lane_stall_seconds": 3.0,
        }

    def env(self) -> dict[str, str]:
        return {
            "EVENTBUS_HANDLERS": "tests.ordering.handlers:HANDLERS",
            "EVENTBUS_BROKER_URL": self.broker_url,
            "EVENTBUS_QUEUE": self.queues[0],
            "EVENTBUS_PARTITIONED_QUEUE": self.queues[1],
            "EVENTBUS_REDIS_URL": self.redis_url,
            "EVENTBUS_LANE_LEASE_SECONDS": "2",
            "EVENTBUS_LANE_STALL_SECONDS": "3",
            "EVENTBUS_DEFAULT_ACTOR_OPTIONS": json.dumps({"min_backoff": 20, "max_backoff": 200}),
            "ORDERING_RUN": self.run,
            "ORDERING_REDIS_URL": self.redis_url,
            **self.extra_env,
        }

    def start_worker(self, threads: int = 8) -> WorkerProcess:
        worker = WorkerProcess(
            "tests.ordering.plain_broker_worker" if self.plain_broker else "dramatiq_eventbus.worker",
            queues=self.queues,
            env=self.env(),
            log_path=self.tmp / f"worker-{len(self.workers)}.log",
            threads=threads,
        )
        self.workers.append(worker.start())
        return worker

    def publish_concurrently(self, keys_count: int, per_key: int, publishers: int = 2) -> list[str]:
        """Each publisher publishes ``per_key // publishers`` events per key, keys interleaved; return the keys."""
        keys = [f"k{i}-{self.run}" for i in range(keys_count)]
        errors: list[BaseException] = []

        def publish(publisher: int) -> None:
            try:
                bus = EventBus().configure(**self.settings)
                for n in range(per_key // publishers):
                    bus.publish([Step(key, publisher, n) for key in keys])
                bus.broker.close()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=publish, args=(p,)) for p in range(publishers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not errors, errors
        return keys

    def log(self) -> list[dict[str, Any]]:
        client = redis.Redis.from_url(self.redis_url)
        return [json.loads(raw) for raw in client.lrange(log_key(self.run), 0, -1)]

    def wait_for_successes(self, count: int, timeout: float = 60.0) -> list[dict[str, Any]]:
        def done() -> list[dict[str, Any]] | None:
            log = self.log()
            return log if len({_identity(e) for e in log if e.get("ok")}) >= count else None

        return wait_for(
            done,
            timeout=timeout,
            interval=0.2,
            describe=lambda: (
                f"{len({_identity(e) for e in self.log() if e.get('ok')})} of {count} handled."
                + "".join(worker.log_tail(15) for worker in self.workers)
            ),
        )

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        client = redis.Redis.from_url(self.redis_url)
        for pattern in (f"ordering:{self.run}:*", f"dramatiq:{self.queues[0]}*"):
            keys = list(client.scan_iter(pattern))
            if keys:
                client.delete(*keys)
        forget_lanes(client, self.run)
        if self.broker_url.startswith("amqp"):
            RabbitmqQueues(self.broker_url).delete(self.queues)


def forget_lanes(client: Any, run: str, *, prefix: str = DEFAULT_LANE_PREFIX) -> None:
    """Delete the lanes whose partition keys or queues carry ``run``: their keys and their place in the sweep."""
    keys = list(client.scan_iter(match=f"{prefix}:lane:*{run}*", count=1000))
    if keys:
        client.delete(*keys)
    lanes = [lane for lane in client.zrange(f"{prefix}:lanes", 0, -1) if run.encode() in lane]
    if lanes:
        client.zrem(f"{prefix}:lanes", *lanes)


def _identity(entry: dict[str, Any]) -> tuple[Any, ...]:
    return entry["h"], entry["key"], entry["pub"], entry["n"]


@contextmanager
def cluster(
    broker_url: str, redis_url: str, tmp: Path, *, plain_broker: bool = False, **extra_env: str
) -> Iterator[Cluster]:
    running = Cluster(broker_url, redis_url, tmp, dict(extra_env), plain_broker=plain_broker)
    try:
        yield running
    finally:
        running.stop()


def check_lanes(
    log: list[dict[str, Any]], keys: list[str], per_key: int, *, handlers: tuple[str, ...] = HANDLER_NAMES
) -> Counter[tuple[Any, ...]]:
    """Assert the guarantee on a run's log; return how many times each event succeeded.

    For each (handler, key): executions never overlap, and the handled order is the
    publish order: each publisher's events in its own order, and the same interleaving
    of the publishers for every handler (the bus assigns it atomically at publish).
    """
    lanes: defaultdict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for entry in log:
        if "key" in entry and entry["h"] in handlers:
            lanes[entry["h"], entry["key"]].append(entry)
    successes: Counter[tuple[Any, ...]] = Counter(_identity(e) for e in log if e.get("ok") and "key" in e)
    for key in keys:
        orders = {}
        for handler in handlers:
            executions = sorted(lanes[handler, key], key=lambda e: e["start"])
            for before, after in itertools.pairwise(executions):
                assert after["start"] >= before["end"], f"{handler}/{key}: overlapping executions {before} {after}"
            handled = [(e["pub"], e["n"]) for e in executions if e["ok"]]
            first_success = list(dict.fromkeys(handled))
            assert len(first_success) == per_key, f"{handler}/{key}: {len(first_success)} of {per_key} handled"
            for publisher in {p for p, _ in first_success}:
                mine = [n for p, n in first_success if p == publisher]
                assert mine == sorted(mine), f"{handler}/{key}: publisher {publisher} out of order: {mine}"
            orders[handler] = first_success
        first, *others = handlers
        for other in others:
            assert orders[other] == orders[first], f"{key}: {other} handled in another order than {first}"
    return successes
