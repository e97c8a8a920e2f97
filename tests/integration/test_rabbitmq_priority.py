"""Priority on RabbitMQ: a backlog is served most urgent first.

The bus maps a handler's priority p (0 most urgent) to the broker priority 9 - p on each
message and declares its queues with a max priority of 10. A backlog published before
any worker runs, then consumed by one thread with a prefetch of 1, must come out in
priority order, although it was published least urgent first.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import dramatiq_eventbus
from tests.integration import handlers
from tests.integration.support import Deployment, Records, global_broker_restored, probe_for, require, unique

pytestmark = pytest.mark.rabbitmq

ROUNDS = 3


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    url = require("rabbitmq")
    deployment = Deployment(
        broker="rabbitmq",
        url=url,
        queue=unique("eventbus_it_priority"),
        partitioned_queue=unique("eventbus_it_priority_partitioned"),
        records=Records(require("redis")),
        probe=probe_for("rabbitmq", url),
        log_dir=tmp_path,
    )
    with global_broker_restored():
        try:
            yield deployment
        finally:
            deployment.tear_down()


def test_a_backlog_is_served_most_urgent_first(deployment: Deployment) -> None:
    require("rabbitmq")
    tag = unique("priority")
    deployment.configure_publisher()
    # Each event goes to Urgency9, 6, 3 and 0, in that order: FIFO would serve the least urgent first.
    dramatiq_eventbus.publish([handlers.Prioritized(tag, seq) for seq in range(ROUNDS)])
    assert deployment.probe.count(deployment.queue) == 4 * ROUNDS, "the backlog is not on the broker"

    deployment.start_worker(threads=1, extra_env={"dramatiq_queue_prefetch": "1"})

    records = deployment.records.wait_for(tag, 4 * ROUNDS, deployment.worker)
    served = [line["handler"] for line in records]
    expected = [name for name in ("Urgency0", "Urgency3", "Urgency6", "Urgency9") for _ in range(ROUNDS)]
    assert served == expected
    # Within one priority, the broker keeps publication order.
    assert [line["seq"] for line in records] == list(range(ROUNDS)) * 4
