"""A plain Dramatiq RedisBroker made outside the bus (as django_dramatiq or flask-dramatiq make
theirs), passed to configure() in publishers and in real ``dramatiq`` workers: order and dead
letters hold as with the bus's own broker, and configure() says once what that broker lacks."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from dramatiq.brokers.redis import RedisBroker

from dramatiq_eventbus import EventBus

from ..support.broker_queues import RedisQueues
from ..support.servers import require_redis
from ..support.worker_process import wait_for
from .handlers import Step
from .harness import check_lanes, cluster

pytestmark = pytest.mark.redis

WARNING = "configure() was given a RedisBroker made elsewhere"


def test_configure_warns_once_naming_what_a_plain_redis_broker_lacks_and_what_to_use(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = RedisBroker(url=require_redis())
    with caplog.at_level(logging.WARNING, logger="dramatiq_eventbus"):
        EventBus().configure(handlers="tests.ordering.handlers:HANDLERS", broker=broker)
    (line,) = [r.getMessage() for r in caplog.records if WARNING in r.getMessage()]
    assert "stranding" in line and "dramatiq_eventbus.brokers.EventBusRedisBroker" in line
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dramatiq_eventbus"):
        EventBus().configure(handlers="tests.ordering.handlers:HANDLERS", broker="stub")
    assert not [r for r in caplog.records if "made elsewhere" in r.getMessage()]
    broker.close()


def test_order_holds_on_a_plain_redis_broker(tmp_path: Path) -> None:
    redis_url = require_redis()
    with cluster(redis_url, redis_url, tmp_path, plain_broker=True, ORDERING_FAIL_FIRST="0.1") as running:
        worker = running.start_worker()
        running.start_worker()
        keys = running.publish_concurrently(8, 10)
        log = running.wait_for_successes(3 * 8 * 10)
        successes = check_lanes(log, keys, 10)
        assert set(successes.values()) == {1}
        assert [e for e in log if not e["ok"]], "no first attempt failed: the retries were not exercised"
        assert WARNING in worker.log()


def test_a_plain_redis_broker_dead_letters_with_the_last_reason_and_the_lane_moves_on(tmp_path: Path) -> None:
    redis_url = require_redis()
    with cluster(redis_url, redis_url, tmp_path, plain_broker=True) as running:
        blocked = f"blocked-{running.run}"
        running.extra_env["ORDERING_BLOCKED_KEY"] = blocked
        worker = running.start_worker(threads=2)
        bus = EventBus().configure(**running.settings)
        bus.publish([Step(blocked, 0, n) for n in range(2)])
        # OrderingA fails every attempt on this key: four attempts, then a dead letter, and
        # the lane goes on to the next event, which fails the same way.
        probe = RedisQueues(redis_url)
        dead = wait_for(
            lambda: (lambda found: found if len(found) == 2 else None)(probe.dead_letters(running.queues[1])),
            timeout=40,
            describe=lambda: worker.log_tail(20),
        )
        assert sorted(d["args"][0]["n"] for d in dead) == [0, 1]
        for letter in dead:
            # The last attempt's failure, written over the stored dead letter (Redis keeps the
            # body as last enqueued: the third retry's, without the fourth failure).
            assert letter["options"]["retries"] == 4
            assert "OrderingA.handle_event failed" in letter["options"]["traceback"]
        wait_for(lambda: worker.log().count("Dead-lettered message") == 2, describe=lambda: worker.log_tail(20))
        assert "after 4 attempt(s)" in worker.log()
        probe.delete([running.queues[1]])
        probe.close()
        bus.broker.close()
