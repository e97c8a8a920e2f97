"""Celery on Redis, for scenario 10: ``celery -A benchmarks.celery_app worker``.

Ten no-op tasks, ``bench_celery_0`` to ``bench_celery_9``, the Celery version of the
fan-out: one task per handler, sent with ``apply_async``. They count themselves as the
bus's handlers do. Settings are Celery's defaults but for what a fair comparison needs:
no result backend (the bus has none), and ``task_acks_late`` so that, as with Dramatiq,
a message is acknowledged after its task ran (at-least-once). The queue is
``BENCH_CELERY_QUEUE``; the broker ``BENCH_CELERY_BROKER_URL``.
"""

from __future__ import annotations

import os
from typing import Any

import redis
from celery import Celery, Task  # type: ignore[import-untyped]
from celery.signals import worker_ready  # type: ignore[import-untyped]

from .workload import hit

app = Celery(
    "benchmarks",
    broker=os.environ.get("BENCH_CELERY_BROKER_URL", "redis://127.0.0.1:6379/0"),
    set_as_current=False,
)
app.conf.update(
    task_ignore_result=True,
    task_acks_late=True,
    task_default_queue=os.environ.get("BENCH_CELERY_QUEUE", "bench_celery"),
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


def _noop(payload: dict[str, Any]) -> None:
    hit(payload["batch"], payload["sent_at"])


TASKS: list[Task[Any, Any]] = [app.task(name=f"bench_celery_{i}")(_noop) for i in range(10)]


def configure(broker_url: str, queue: str) -> None:
    """Point the publishing side at ``broker_url`` and ``queue``, before its first task is sent."""
    app.conf.update(broker_url=broker_url, task_default_queue=queue)


@worker_ready.connect  # type: ignore[untyped-decorator]
def _announce_ready(**_kwargs: Any) -> None:
    """Say so in Redis: the benchmark starts measuring once every worker is ready."""
    key = os.environ.get("BENCH_STATS_KEY")
    if key:
        redis.Redis.from_url(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")).incr(f"{key}:celery_ready")
