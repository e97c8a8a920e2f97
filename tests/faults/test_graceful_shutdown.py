"""SIGTERM to a worker in the middle of a batch: the handlers running finish, what it had
fetched but not started goes back to the queue, and a new worker handles the rest once."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis

from tests.support.broker_queues import RabbitmqQueues
from tests.support.worker_process import wait_for

from . import handlers
from .conftest import broker_url
from .harness import Deployment, ack_sets, publish_in_batches, report

EVENTS = 200
THREADS = 8
HANDLER_SECONDS = 0.05
#: make test stops a worker on Redis; the same fault on RabbitMQ is a slow variant.
KINDS = [
    pytest.param("redis", marks=pytest.mark.redis, id="redis"),
    pytest.param("rabbitmq", marks=[pytest.mark.rabbitmq, pytest.mark.slow], id="rabbitmq"),
]


@pytest.mark.parametrize("kind", KINDS)
def test_sigterm_mid_batch_finishes_or_requeues_everything(kind: str, deploy: list[Deployment], tmp_path: Path) -> None:
    deployment = Deployment(broker_url(kind), broker_url("redis"), tmp_path)
    deploy.append(deployment)
    publish_in_batches(deployment.publisher(), deployment.run, range(EVENTS))
    first = deployment.start_worker(threads=THREADS, env={handlers.HANDLER_SECONDS_VAR: str(HANDLER_SECONDS)})
    wait_for(lambda: deployment.processed_count() >= EVENTS, timeout=30, describe=first.log_tail)

    assert first.process is not None
    first.process.send_signal(signal.SIGTERM)
    stopping = time.monotonic()
    try:
        first.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker did not stop within 20 s of SIGTERM.{first.log_tail()}")
    stopped_in = time.monotonic() - stopping

    started, finished = deployment.counts("started"), deployment.counts("finished")
    interrupted = {key: count for key, count in started.items() if finished.get(key, 0) != count}
    assert interrupted == {}, "handlers were cut off by SIGTERM"
    in_flight = sum(finished.values())
    if kind == "redis":
        # Fetched and not run means back on the queue: nothing waits for a heartbeat timeout.
        assert ack_sets(redis.Redis.from_url(deployment.broker_url), deployment.queues[0]) == {}
    else:
        assert RabbitmqQueues(deployment.broker_url).count(deployment.queues[0]) == 3 * EVENTS - in_flight

    deployment.start_worker(threads=THREADS)
    tally = deployment.wait_until_processed(range(EVENTS), timeout=60)
    assert tally.lost == 0 and tally.duplicated == 0, tally
    report(
        f"SIGTERM mid-batch ({EVENTS} events x 3 handlers, {HANDLER_SECONDS * 1000:.0f} ms each)",
        kind,
        tally,
        f"{in_flight} done before the stop, which took {stopped_in:.1f} s; 0 handlers cut off",
    )
