"""A worker SIGKILLed mid-run: after a new worker starts, every handler has handled every event.

On RabbitMQ the server gives a dead connection's unacknowledged messages back at once.
On Redis they wait in the dead worker's ack set until its heartbeat times out
(``redis_heartbeat_seconds``) and a live worker's consumer, which tends its queue every
quarter of that timeout, moves them back: the bound is the timeout plus that quarter.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import redis

from tests.support.worker_process import wait_for

from .conftest import broker_url
from .harness import Deployment, ack_sets, publish_in_batches, report

HEARTBEAT_SECONDS = 2
THREADS = 8
REDIS, RABBITMQ, SLOW = pytest.mark.redis, pytest.mark.rabbitmq, pytest.mark.slow
#: make test kills a worker on Redis, where the recovery is the bus's own (the heartbeat timeout,
#: then a live consumer's tend). On RabbitMQ, where the server gives the messages back, and with
#: 10,000 events, the same fault is a slow variant.
CASES = [
    pytest.param("redis", 2_000, marks=REDIS, id="redis-2000"),
    pytest.param("rabbitmq", 2_000, marks=[RABBITMQ, SLOW], id="rabbitmq-2000"),
    pytest.param("redis", 10_000, marks=[REDIS, SLOW], id="redis-10000"),
    pytest.param("rabbitmq", 10_000, marks=[RABBITMQ, SLOW], id="rabbitmq-10000"),
]


@pytest.mark.parametrize(("kind", "events"), CASES)
def test_a_sigkilled_worker_loses_nothing(kind: str, events: int, deploy: list[Deployment], tmp_path: Path) -> None:
    deployment = Deployment(
        broker_url(kind),
        broker_url("redis"),
        tmp_path,
        env={"EVENTBUS_REDIS_HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS)},
        settings={"redis_heartbeat_seconds": HEARTBEAT_SECONDS},
    )
    deploy.append(deployment)
    publish_in_batches(deployment.publisher(), deployment.run, range(events))
    victim = deployment.start_worker(threads=THREADS)
    # A third of the way: the backlog is there, and the worker is busy on it.
    wait_for(lambda: deployment.processed_count() >= events, timeout=60, describe=victim.log_tail)

    doomed_sets = ack_sets(redis.Redis.from_url(deployment.broker_url), deployment.queues[0]) if kind == "redis" else {}
    os.killpg(victim.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    done_at_kill = deployment.processed_count()
    deployment.start_worker(threads=THREADS)

    if doomed_sets:
        # What the dead worker had fetched goes back within the heartbeat timeout plus a tend interval.
        client = redis.Redis.from_url(deployment.broker_url)
        wait_for(lambda: not set(doomed_sets) & set(ack_sets(client, deployment.queues[0])), timeout=30)
        recovered_after = time.monotonic() - killed_at
        assert recovered_after <= HEARTBEAT_SECONDS + 0.5 + 2.5, recovered_after
    tally = deployment.wait_until_processed(range(events), timeout=90)

    assert tally.lost == 0
    # Only a message whose handler finished before the kill, but whose ack had not reached
    # the broker yet, runs twice. A worker holds at most its prefetch (2 per thread) unacknowledged.
    assert tally.duplicated <= 2 * THREADS, tally
    note = f"killed after {done_at_kill} runs"
    if doomed_sets:
        note += f"; {sum(map(len, doomed_sets.values()))} fetched messages back after {recovered_after:.1f} s"
    report(f"worker SIGKILLed mid-run ({events} events x 3 handlers)", kind, tally, note)
