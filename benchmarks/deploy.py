"""Both sides of a comparison, set up on a real broker with this run's own queues, and cleaned up.

The bus side is an :class:`~dramatiq_eventbus.EventBus` configured with
:data:`benchmarks.workload.HANDLERS`; the raw side is Dramatiq's own broker with the
ten actors of :func:`benchmarks.workload.declare_raw_actors`. Every queue name has the
run's id in it, and :meth:`Deployment.clean` deletes what the run left in Redis and
RabbitMQ.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import dramatiq
import pika
import redis
from dramatiq.broker import Broker

from dramatiq_eventbus import EventBus

from .runner import Context
from .workers import Stats, Worker, dramatiq_worker
from .workload import declare_raw_actors, plain_broker

HANDLERS = "benchmarks.workload:HANDLERS"

#: Threads that send a raw fill (:meth:`Deployment.send_raw`).
FILL_THREADS = 8


@dataclass
class Deployment:
    """A bus and a raw baseline on one broker.

    Parameters:
      ctx(Context): The run.
      broker(str): ``redis`` or ``rabbitmq``.
      tag(str): Tells apart deployments of one run on one broker (their queues differ).
    """

    ctx: Context
    broker: str
    tag: str = ""
    bus: EventBus = field(init=False)
    raw_broker: Broker = field(init=False)
    raw: list[dramatiq.Actor[Any, Any]] = field(init=False)
    _senders: ThreadPoolExecutor = field(init=False)

    def __post_init__(self) -> None:
        self.bus = EventBus().configure(**self.bus_settings())
        self.raw_broker = plain_broker(self.url)
        self.raw = declare_raw_actors(self.raw_broker, self.queues["raw"])
        # Kept for the run: Dramatiq's brokers keep a connection per thread.
        self._senders = ThreadPoolExecutor(FILL_THREADS, thread_name_prefix="fill")

    def send_raw(self, actor: dramatiq.Actor[Any, Any], payloads: Sequence[Any]) -> int:
        """Send one raw message to ``actor`` per payload, to fill a queue; how many.

        A fill is not measured. On RabbitMQ each send waits for its publisher confirm (a
        millisecond and more apiece on a slow day), so several threads send at once: 2,000
        messages in 1.2-1.5 s rather than 3.0-3.2, a minute of ``make bench``. On Redis the
        sends cost this process's CPU more than they wait, and threads would only take turns
        holding the GIL (1.0 s rather than 0.77), so one thread sends them.
        """
        if self.broker == "redis":
            _send_each(actor, payloads)
            return len(payloads)
        step = -(-len(payloads) // FILL_THREADS)
        chunks = [payloads[start : start + step] for start in range(0, len(payloads), step)]
        for done in [self._senders.submit(_send_each, actor, chunk) for chunk in chunks]:
            done.result()
        return len(payloads)

    @property
    def url(self) -> str:
        return self.ctx.url(self.broker)

    @property
    def queues(self) -> dict[str, str]:
        return {what: self.ctx.name(f"{self.broker}{self.tag}_{what}") for what in ("events", "keyed", "raw")}

    def bus_settings(self) -> dict[str, Any]:
        settings = {
            "handlers": HANDLERS,
            "broker": self.url,
            "queue": self.queues["events"],
            "partitioned_queue": self.queues["keyed"],
            "lane_prefix": self.ctx.lane_prefix,
        }
        if self.broker != "redis":
            settings["redis_url"] = self.ctx.redis_url  # the lanes of partitioned events
        return settings

    def bus_worker(self, *, processes: int = 1, threads: int = 8) -> Worker:
        """``dramatiq dramatiq_eventbus.worker``, configured only by ``EVENTBUS_*`` variables."""
        env = {
            "EVENTBUS_HANDLERS": HANDLERS,
            "EVENTBUS_BROKER_URL": self.url,
            "EVENTBUS_QUEUE": self.queues["events"],
            "EVENTBUS_PARTITIONED_QUEUE": self.queues["keyed"],
            "EVENTBUS_LANE_PREFIX": self.ctx.lane_prefix,
        }
        if self.broker != "redis":
            env["EVENTBUS_REDIS_URL"] = self.ctx.redis_url
        name = f"bus-{self.broker}{self.tag}-{processes}x{threads}"
        return dramatiq_worker(self.ctx, "dramatiq_eventbus.worker", env, name, processes=processes, threads=threads)

    def raw_worker(self, *, processes: int = 1, threads: int = 8, extra_queues: Sequence[str] = ()) -> Worker:
        """``dramatiq benchmarks.raw_worker``; ``extra_queues`` get an actor each, and so consumers."""
        env = {"BENCH_BROKER_URL": self.url, "BENCH_RAW_QUEUE": self.queues["raw"]}
        if extra_queues:
            env["BENCH_RAW_EXTRA_QUEUES"] = ",".join(extra_queues)
        name = f"raw-{self.broker}{self.tag}-{processes}x{threads}"
        return dramatiq_worker(self.ctx, "benchmarks.raw_worker", env, name, processes=processes, threads=threads)

    def empty_queues(self) -> None:
        """Drop what no worker consumed, so the broker does not slow down under a growing backlog."""
        for queue in self.queues.values():
            self.raw_broker.flush(queue)

    def clean(self) -> None:
        """Delete this deployment's queues, lanes and heartbeats; close its connections."""
        self._senders.shutdown()
        self.bus.broker.close()
        self.raw_broker.close()
        if self.broker == "redis":
            _clean_redis(self.ctx, list(self.queues.values()), [self.bus.broker, self.raw_broker])
        else:
            _delete_rabbitmq_queues(self.url, list(self.queues.values()))


class Shared:
    """What the scenarios of one run share: deployments, running workers, the stats reader.

    Worker start-up is slow on a small machine, so a worker started for one scenario
    serves the next ones too; while one worker is measured, the others are paused
    (:meth:`others`). :meth:`close` stops every worker and deletes every queue and key.

    Parameters:
      ctx(Context): The run.
    """

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.stats = Stats(ctx)
        self._deployments: dict[tuple[str, str], Deployment] = {}
        self._workers: dict[str, Worker] = {}

    def deployment(self, broker: str, tag: str = "") -> Deployment:
        if (broker, tag) not in self._deployments:
            self._deployments[broker, tag] = Deployment(self.ctx, broker, tag)
        return self._deployments[broker, tag]

    def workers(self, wanted: dict[str, Callable[[], Worker]]) -> list[Worker]:
        """The workers named in ``wanted``, in its order; those not running yet start together."""
        new = {name: make() for name, make in wanted.items() if name not in self._workers}
        try:
            for worker in new.values():
                worker.launch()
            for worker in new.values():
                worker.wait_ready()
        finally:
            self._workers.update(new)
        return [self._workers[name] for name in wanted]

    def others(self, *workers: Worker) -> list[Worker]:
        """Every running worker but ``workers``: to pause while those are measured."""
        return [worker for worker in self._workers.values() if worker not in workers]

    def stop_worker(self, worker: Worker) -> None:
        worker.stop()
        self._workers = {name: w for name, w in self._workers.items() if w is not worker}

    def close(self) -> None:
        for worker in self._workers.values():
            worker.stop()
        for deployment in self._deployments.values():
            deployment.clean()
        self.stats.clean()


def _send_each(actor: dramatiq.Actor[Any, Any], payloads: Sequence[Any]) -> None:
    for payload in payloads:
        actor.send(payload)


def _clean_redis(ctx: Context, queues: list[str], brokers: list[Broker]) -> None:
    client: Any = redis.Redis.from_url(ctx.redis_url)
    for queue in queues:
        keys = [f"dramatiq:{queue}{suffix}" for suffix in ("", ".msgs", ".DQ", ".DQ.msgs", ".XQ", ".XQ.msgs")]
        keys += [key for key in client.scan_iter(match=f"dramatiq:__acks__.*.{queue}*", count=1000)]
        client.delete(*keys)
    broker_ids = [getattr(broker, "broker_id", None) for broker in brokers]
    client.zrem("dramatiq:__heartbeats__", *[broker_id for broker_id in broker_ids if broker_id] or ["-"])
    # The lanes of this run, under its own prefix: no worker of another run, or of the tests, sweeps them.
    lane_keys = [*client.scan_iter(match=f"{ctx.lane_prefix}:*", count=1000)]
    if lane_keys:
        client.delete(*lane_keys)
    client.close()


def _delete_rabbitmq_queues(url: str, queues: list[str]) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        for queue in queues:
            for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
                channel.queue_delete(queue=name)
    finally:
        connection.close()
