"""The baseline's worker: ``dramatiq benchmarks.raw_worker``, plain Dramatiq actors, no bus.

Its broker is Dramatiq's own, set up as the bus sets up its brokers (on RabbitMQ:
publisher confirms, queues with ``x-max-priority`` 10), from ``BENCH_BROKER_URL``; its
ten actors consume ``BENCH_RAW_QUEUE`` and only count themselves, as the bus's handlers do;
two more there wait on I/O first, as scenario 13's handlers do (:func:`declare_raw_io_actors`).
``BENCH_RAW_EXTRA_QUEUES`` (comma-separated) adds an actor on each of those queues.
"""

from __future__ import annotations

import os

import dramatiq

from .workload import declare_raw_actors, declare_raw_io_actors, plain_broker, raw_noop

broker = plain_broker(os.environ["BENCH_BROKER_URL"])
dramatiq.set_broker(broker)
actors = declare_raw_actors(broker, os.environ["BENCH_RAW_QUEUE"])
actors += declare_raw_io_actors(broker, os.environ["BENCH_RAW_QUEUE"]).values()
for extra in filter(None, os.environ.get("BENCH_RAW_EXTRA_QUEUES", "").split(",")):
    actors.append(
        dramatiq.Actor(
            raw_noop, broker=broker, actor_name=f"bench_raw_{extra}", queue_name=extra, priority=0, options={}
        )
    )
