"""What the integration tests share: a worker on a real broker, its records, the publishing side."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dramatiq
import dramatiq.broker
import pytest
import redis

import dramatiq_eventbus
from dramatiq_eventbus import EventBus
from tests.integration import handlers
from tests.support import servers
from tests.support.broker_queues import QueueProbe, RabbitmqQueues, RedisQueues
from tests.support.worker_process import WorkerProcess, wait_for

HANDLERS = "tests.integration.handlers:HANDLERS"
#: Fast retries, so that three attempts take well under a second of backoff.
ACTOR_OPTIONS = {"min_backoff": 50, "max_backoff": 200}
WAIT = 20.0


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def require(broker: str) -> str:
    """The broker's URL; skips loudly (fails under CI) when it, or the Redis the records go to, is down."""
    servers.require_redis()
    return servers.require_rabbitmq() if broker == "rabbitmq" else servers.require_redis()


def probe_for(broker: str, url: str) -> QueueProbe:
    return RabbitmqQueues(url) if broker == "rabbitmq" else RedisQueues(url)


class Records:
    """The lines handlers RPUSHed in the worker, one Redis list per event tag.

    Parameters:
      url(str): The Redis server of the records.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.prefix = unique("eventbus-it-records")
        self.client = redis.Redis.from_url(url)

    def of(self, tag: str) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.client.lrange(handlers.record_key(self.prefix, tag), 0, -1)]

    def wait_for(self, tag: str, count: int, worker: WorkerProcess | None = None) -> list[dict[str, Any]]:
        """Wait until ``count`` records of ``tag`` are there; return them all."""

        def describe() -> str:
            seen = [line["handler"] for line in self.of(tag)]
            return f"Expected {count} records for {tag}, have {len(seen)}: {seen}." + (
                worker.log_tail() if worker else ""
            )

        wait_for(lambda: len(self.of(tag)) >= count, timeout=WAIT, describe=describe)
        return self.of(tag)

    def env(self) -> dict[str, str]:
        return {handlers.RECORD_URL_VAR: self.url, handlers.RECORD_PREFIX_VAR: self.prefix}

    def broker_ids(self) -> set[str]:
        ids: set[str] = set()
        for key in self.client.scan_iter(match=f"{self.prefix}:*", count=1000):
            ids.update(json.loads(line).get("broker_id") or "" for line in self.client.lrange(key, 0, -1))
        return ids - {""}

    def delete(self) -> None:
        keys = list(self.client.scan_iter(match=f"{self.prefix}:*", count=1000))
        if keys:
            self.client.delete(*keys)

    def close(self) -> None:
        self.client.close()


@dataclass
class Deployment:
    """A ``dramatiq dramatiq_eventbus.worker`` on one real broker, with queues of its own.

    Parameters:
      broker(str): ``"redis"`` or ``"rabbitmq"``.
      url(str): The broker's URL.
      queue(str): The bus's default queue, unique to this run.
      partitioned_queue(str): The bus's partitioned queue, unique to this run.
      records(Records): Where the handlers record.
      probe(QueueProbe): Reads the broker's queues.
      log_dir(Path): Where worker logs go.
      handlers(str): The handlers the worker and the publisher load.
      secret_key(str | None): Signs and checks messages on both sides, when set.
      lanes_in_redis(bool): Lanes in Redis on both brokers (beside RabbitMQ, the records' Redis).
    """

    broker: str
    url: str
    queue: str
    partitioned_queue: str
    records: Records
    probe: QueueProbe
    log_dir: Path
    handlers: str = HANDLERS
    secret_key: str | None = None
    lanes_in_redis: bool = False
    workers: list[WorkerProcess] = field(default_factory=list)
    publisher_broker_ids: set[str] = field(default_factory=set)

    @property
    def worker(self) -> WorkerProcess:
        return self.workers[-1]

    @property
    def queues(self) -> tuple[str, str]:
        return (self.queue, self.partitioned_queue)

    def settings(self) -> dict[str, Any]:
        """What configure() gets besides the broker, the queues and the actor options, on both sides."""
        settings: dict[str, Any] = {"handlers": self.handlers}
        if self.secret_key is not None:
            settings["secret_key"] = self.secret_key
        if self.lanes_in_redis and self.broker == "rabbitmq":
            settings["redis_url"] = self.records.url  # a Redis broker keeps the lanes itself
        return settings

    def worker_env(self) -> dict[str, str]:
        env = {
            "EVENTBUS_HANDLERS": self.handlers,
            "EVENTBUS_BROKER_URL": self.url,
            "EVENTBUS_QUEUE": self.queue,
            "EVENTBUS_PARTITIONED_QUEUE": self.partitioned_queue,
            "EVENTBUS_DEFAULT_ACTOR_OPTIONS": json.dumps(ACTOR_OPTIONS),
            **self.records.env(),
        }
        settings = self.settings()
        if "secret_key" in settings:
            env["EVENTBUS_SECRET_KEY"] = settings["secret_key"]
        if "redis_url" in settings:
            env["EVENTBUS_REDIS_URL"] = settings["redis_url"]
        return env

    def start_worker(self, *, threads: int = 1, extra_env: dict[str, str] | None = None) -> WorkerProcess:
        worker = WorkerProcess(
            "dramatiq_eventbus.worker",
            queues=self.queues,
            env={**self.worker_env(), **(extra_env or {})},
            log_path=self.log_dir / f"worker-{self.broker}-{len(self.workers)}.log",
            threads=threads,
        )
        self.workers.append(worker)
        return worker.start()

    def configure_publisher(
        self, *, queue: str | None = None, partitioned_queue: str | None = None, **settings: Any
    ) -> EventBus:
        """Configure the default bus, in this process, the way the worker configured its own (plus ``settings``)."""
        bus = dramatiq_eventbus.configure(
            broker=self.url,
            queue=queue or self.queue,
            partitioned_queue=partitioned_queue or self.partitioned_queue,
            default_actor_options=ACTOR_OPTIONS,
            **{**self.settings(), **settings},
        )
        broker_id = getattr(bus.broker, "broker_id", None)
        if broker_id:
            self.publisher_broker_ids.add(broker_id)
        return bus

    def flush(self, tag: str) -> None:
        """Return once the worker ran everything enqueued before this call (see Flush).

        It holds for a worker with one thread: the Flush message is the queue's last and,
        at priority 9, the last of whatever the worker has prefetched.
        """
        token = f"{tag}-flush"
        dramatiq_eventbus.publish(handlers.Flush(token))
        self.records.wait_for(token, 1, self.worker)

    def tear_down(self, extra_queues: tuple[str, ...] = ()) -> None:
        try:
            for worker in self.workers:
                worker.stop()
        finally:
            self.probe.delete((*self.queues, *extra_queues))
            if isinstance(self.probe, RedisQueues):
                self.probe.forget_brokers(self.records.broker_ids() | self.publisher_broker_ids)
            self.records.delete()
            self.records.close()
            self.probe.close()


@contextmanager
def global_broker_restored() -> Iterator[None]:
    """Put Dramatiq's global broker back as it was, closing the brokers configure() made meanwhile."""
    previous = dramatiq.broker.global_broker
    try:
        yield
    finally:
        if dramatiq_eventbus.default_bus.is_configured:
            current = dramatiq_eventbus.default_bus.broker
            if current is not previous:
                current.close()
        dramatiq.broker.global_broker = previous


#: The brokers each module's deployment runs on, one module-scoped deployment each.
BROKERS = [
    pytest.param("redis", marks=pytest.mark.redis, id="redis"),
    pytest.param("rabbitmq", marks=pytest.mark.rabbitmq, id="rabbitmq"),
]
#: BROKERS, RabbitMQ a slow variant: for a behaviour of the bus's own, the same on either broker,
#: in a module whose worker would start and stop once more for it. The bus on a RabbitMQ worker
#: stays in make test (test_bus_on_brokers.py, test_dead_letters.py, test_rabbitmq_priority.py).
BROKERS_RABBITMQ_SLOW = [
    pytest.param("redis", marks=pytest.mark.redis, id="redis"),
    pytest.param("rabbitmq", marks=[pytest.mark.rabbitmq, pytest.mark.slow], id="rabbitmq"),
]


@contextmanager
def deployed(broker: str, log_dir: Path, name: str, *, threads: int = 1, **fields: Any) -> Iterator[Deployment]:
    """A Deployment on ``broker`` with queues unique to this run, its worker started, torn down after.

    Parameters:
      broker(str): ``redis`` or ``rabbitmq``.
      log_dir(Path): Where worker logs go.
      name(str): What the queues are named after.
      threads(int): The worker's threads.
      fields: Other fields of the Deployment (``handlers``, ``secret_key``, ``lanes_in_redis``).
    """
    url = require(broker)
    deployment = Deployment(
        broker=broker,
        url=url,
        queue=unique(name),
        partitioned_queue=unique(f"{name}_partitioned"),
        records=Records(require("redis")),
        probe=probe_for(broker, url),
        log_dir=log_dir,
        **fields,
    )
    with global_broker_restored():
        try:
            deployment.start_worker(threads=threads)
            yield deployment
        finally:
            deployment.tear_down()
