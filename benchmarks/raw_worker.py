"""The baseline's worker: ``dramatiq benchmarks.raw_worker``, plain Dramatiq actors, no bus.

Its broker is Dramatiq's own, set up as the bus sets up its brokers (on RabbitMQ:
publisher confirms, queues with ``x-max-priority`` 10), from ``BENCH_BROKER_URL``; its
ten actors consume ``BENCH_RAW_QUEUE`` and only count themselves, as the bus's handlers do.
"""

from __future__ import annotations

import os

import dramatiq

from .workload import declare_raw_actors, plain_broker

broker = plain_broker(os.environ["BENCH_BROKER_URL"])
dramatiq.set_broker(broker)
actors = declare_raw_actors(broker, os.environ["BENCH_RAW_QUEUE"])
