"""The hazards of issue 5 one by one, with one real worker on Redis: a head that was never
sent, a second delivery after success, and later events kept out of the broker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from dramatiq.message import Message

from dramatiq_eventbus import EventBus
from dramatiq_eventbus.backends import DramatiqBackend
from dramatiq_eventbus.brokers import RedisLaneStore
from dramatiq_eventbus.delivery import Delivery

from ..support.broker_queues import RedisQueues
from ..support.servers import require_redis
from ..support.worker_process import wait_for
from .handlers import Step
from .harness import cluster

pytestmark = pytest.mark.redis


def laned_message(bus: EventBus, event: Step) -> Message[Any]:
    """The message publish() would make for OrderingA, with its lane."""
    spec = next(s for s in bus.config.registry.handlers_for(Step) if s.name.endswith("OrderingA"))
    backend = bus.config.backend
    assert isinstance(backend, DramatiqBackend)
    return backend.message_for(Delivery(spec, event, bus.config.codec.encode(event), event.key, "unused"))


def test_a_head_that_was_never_sent_is_sent_by_the_sweep(tmp_path: Path) -> None:
    redis_url = require_redis()
    with cluster(redis_url, redis_url, tmp_path) as running:
        worker = running.start_worker(threads=2)
        bus = EventBus().configure(**running.settings)
        lanes = bus.config.lanes
        assert isinstance(lanes, RedisLaneStore)
        key = f"orphan-{running.run}"
        # A publisher that died after adding the event to its lane, before sending it (lanes
        # that do not send their heads themselves, as with a RabbitMQ broker).
        message = laned_message(bus, Step(key, 0, 0)).copy(queue_name=running.queues[1])
        assert lanes.sends_heads  # the bus's own lanes share the broker's Redis: nothing is left unsent
        lanes = RedisLaneStore(lanes.client, stall_seconds=lanes.stall_ms / 1000)
        assert lanes.append([(message.options["lane"], message.message_id, message.encode(), message.queue_name)]) == [
            True
        ]
        bus.publish(Step(key, 0, 1))  # waits behind the orphan
        # lane_stall_seconds is 3 in the harness; the sweep runs every second.
        log = wait_for(lambda: (lambda log: log if len(log) == 4 else None)(running.log()), timeout=15)
        handled_a = [(e["n"]) for e in log if e["h"] == "OrderingA"]
        assert handled_a == [0, 1]
        # The worker's log reaches its file through Dramatiq's main process, a moment later.
        wait_for(lambda: f"Lane '{message.options['lane']}' stalled: its head was dispatched for" in worker.log())
        bus.broker.close()


def test_a_second_delivery_after_success_does_not_run_again(tmp_path: Path) -> None:
    redis_url = require_redis()
    with cluster(redis_url, redis_url, tmp_path) as running:
        worker = running.start_worker(threads=2)
        bus = EventBus().configure(**running.settings)
        backend = bus.config.backend
        assert isinstance(backend, DramatiqBackend)
        key = f"twice-{running.run}"
        message = laned_message(bus, Step(key, 0, 0)).copy(queue_name=running.queues[1])
        backend.send([message])  # what publish() does, keeping the message to send it again
        wait_for(lambda: len(running.log()) == 1)
        assert RedisQueues(redis_url).messages(running.queues[1]) == []  # handled and acknowledged
        bus.broker.enqueue(message)  # the broker delivers it again: same message id
        bus.publish(Step(key, 0, 1))  # a marker behind it
        skipped = f"Skipping message '{message.message_id}' of lane '{message.options['lane']}': stale"
        wait_for(lambda: skipped in worker.log())
        wait_for(lambda: sum(e["h"] == "OrderingA" for e in running.log()) >= 2)
        assert [e["n"] for e in running.log() if e["h"] == "OrderingA"] == [0, 1]
        bus.broker.close()


def test_later_events_of_a_blocked_lane_stay_out_of_the_broker(tmp_path: Path) -> None:
    redis_url = require_redis()
    with cluster(redis_url, redis_url, tmp_path) as running:
        running.extra_env["EVENTBUS_DEFAULT_ACTOR_OPTIONS"] = '{"min_backoff": 1000, "max_backoff": 3000}'
        running.extra_env["ORDERING_BLOCKED_KEY"] = key = f"held-{running.run}"
        running.start_worker(threads=2)
        bus = EventBus().configure(**running.settings)
        bus.publish([Step(key, 0, n) for n in range(10)])
        wait_for(lambda: sum(e["h"] == "OrderingA" for e in running.log()) >= 2, timeout=10)  # retrying its head
        queues = RedisQueues(redis_url)
        # By message id: while the head's attempt is acked, its retry (the same message, a new
        # Redis id) can already wait in the delay queue, and a snapshot sees both bodies.
        waiting = {
            m["message_id"]
            for queue in (running.queues[1], f"{running.queues[1]}.DQ")
            for m in queues.messages(queue)
            if m["actor_name"].endswith("OrderingA")
        }
        assert len(waiting) <= 1, "a later event of the blocked lane reached the broker"
        (lane,) = [lane for lane in bus.lanes() if lane.partition_key == key and lane.handler.endswith("OrderingA")]
        assert lane.pending == 10
        assert lane.attempts >= 2
        queues.close()
        bus.broker.close()
