"""Scenario 10: the same fan-out with Celery on Redis, the library users would pick instead.

Enqueue: one publish() to 10 handlers against 10 ``apply_async`` calls, one per task.
Worker: the bus's worker (1 process x 8 threads) against a Celery worker (threads pool,
concurrency 8), each draining the same number of no-op messages. Celery's settings are
in :mod:`benchmarks.celery_app`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis

from .. import celery_app
from ..runner import Context, Result, Target, log, per_call, side_by_side
from ..workers import Worker, cli_command, stats_env
from ..workload import OrderPaid, OrderPlaced, make_event, raw_payload
from .throughput import WARM_UP, cpu_note, publish_fill, rate

US = 1e6


def run(ctx: Context) -> list[Result]:
    log("  celery on redis")
    sizes = ctx.sizes
    shared = ctx.shared
    queue = ctx.name("celery")
    celery_app.configure(ctx.redis_url, queue)
    deployment = shared.deployment("redis")
    client: Any = redis.Redis.from_url(ctx.redis_url)
    paid = make_event(OrderPaid)

    def celery_fan_out() -> None:
        payload = raw_payload(paid)
        for task in celery_app.TASKS:
            task.apply_async(args=(payload,))

    def timed(call: Callable[[], object]) -> Callable[[], float]:
        def one_round() -> float:
            seconds = per_call(call, sizes.celery_fan_outs)
            deployment.empty_queues()
            client.delete(queue)
            return seconds * US

        return one_round

    def celery_fill(batch: int) -> int:
        task = celery_app.TASKS[0]
        for n in range(sizes.drain):
            task.apply_async(args=(raw_payload(make_event(OrderPlaced, n, batch=batch)),))
        return sizes.drain

    try:
        timed(lambda: deployment.bus.publish(paid))()  # warm-up
        timed(celery_fan_out)()
        bus_us, celery_us, enqueue_ratio, enqueue_ratios = side_by_side(
            timed(lambda: deployment.bus.publish(paid)), timed(celery_fan_out), sizes.rounds
        )
        bus_worker, celery = shared.workers(
            {"bus-redis": deployment.bus_worker, "celery": lambda: celery_worker(ctx, queue)}
        )
        rate(shared, bus_worker, publish_fill(deployment, OrderPlaced, min(sizes.drain, WARM_UP)))()
        rate(shared, celery, celery_fill)()
        bus_cpu: list[float] = []
        celery_cpu: list[float] = []
        bus_rate, celery_rate, drain_ratio, _ = side_by_side(
            rate(shared, bus_worker, publish_fill(deployment, OrderPlaced, sizes.drain), bus_cpu),
            rate(shared, celery, celery_fill, celery_cpu),
            sizes.celery_rounds,
        )
        shared.stop_worker(celery)
    finally:
        _clean_celery(client, queue)
    return [
        Result(
            "10",
            "enqueue a fan-out to 10 handlers",
            "redis",
            "µs",
            bus_us,
            celery_us,
            "Celery, 10 apply_async",
            enqueue_ratio,
            Target("<=", 1 / 3, "≤ 0.33x (≥ 3x faster)"),
            rounds=sizes.rounds,
            ratios=enqueue_ratios,
        ),
        Result(
            "10",
            "worker throughput, no-op, 8 threads",
            "redis",
            "msg/s",
            bus_rate,
            celery_rate,
            "Celery worker, threads pool",
            drain_ratio,
            rounds=sizes.celery_rounds,
            note=f"{sizes.drain} messages per round; Celery with task_acks_late and no result backend; "
            + cpu_note(bus_cpu, celery_cpu, "Celery"),
        ),
    ]


def celery_worker(ctx: Context, queue: str) -> Worker:
    command = [
        *cli_command("celery"),
        "-A",
        "benchmarks.celery_app",
        "worker",
        "--pool",
        "threads",
        "--concurrency",
        "8",
        "--queues",
        queue,
        "--loglevel",
        "WARNING",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    env = {**stats_env(ctx), "BENCH_CELERY_BROKER_URL": ctx.redis_url, "BENCH_CELERY_QUEUE": queue}
    ready_key = f"{stats_env(ctx)['BENCH_STATS_KEY']}:celery_ready"
    client: Any = redis.Redis.from_url(ctx.redis_url)
    return Worker(command, env, ctx.workdir / "celery.log", lambda _worker: bool(client.get(ready_key)))


def _clean_celery(client: Any, queue: str) -> None:
    keys = [*client.scan_iter(match=f"{queue}*", count=1000), *client.scan_iter(match=f"_kombu.binding.{queue}*")]
    if keys:
        client.delete(*keys)
    client.close()
