"""Lanes that share the broker's Redis: heads handed to the broker by the lane scripts,
and lane calls batched by the bus's Redis consumer.

On a real Redis, in-process so that each step can be looked at: publish() puts each
lane's head on its broker queue in the script that appends it, with the enqueue hooks
run once per message; a fetch takes the leases of its heads in one round trip; a handled
head is finished along with its ack, which puts the next head on the queue; and a head
put back unstarted gives its lease back. The worker subprocess tests in
``test_cluster_order`` run the same path end to end.
"""

from __future__ import annotations

import gc
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from dramatiq.broker import MessageProxy
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message
from dramatiq.middleware import Middleware, SkipMessage

from dramatiq_eventbus import EventBus, EventEncodeError
from dramatiq_eventbus.brokers import EventBusRedisBroker, RedisLaneStore
from dramatiq_eventbus.ordering import LaneGate, PartitionOrdering

from ..support.broker_queues import RedisQueues
from ..support.servers import require_rabbitmq, require_redis
from .handlers import Step
from .harness import forget_lanes

pytestmark = pytest.mark.redis


class EnqueueHooks(Middleware):
    """Records the message id of every enqueue hook, per hook."""

    def __init__(self) -> None:
        self.before: list[str] = []
        self.after: list[str] = []

    def before_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        self.before.append(message.message_id)

    def after_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        self.after.append(message.message_id)


class DispatchCalls:
    """Wraps the broker's dispatch script to record the command of every call (ack, nack, ...)."""

    def __init__(self, broker: EventBusRedisBroker) -> None:
        self.commands: list[str] = []
        self._dispatch = broker.scripts["dispatch"]
        broker.scripts["dispatch"] = self

    def __call__(self, *, keys: Any, args: Any) -> Any:
        self.commands.append(str(args[0]))
        return self._dispatch(keys=keys, args=args)


@pytest.fixture
def bus() -> Iterator[EventBus]:
    run = uuid.uuid4().hex[:10]
    queues = (f"inbroker_{run}", f"inbroker_{run}_keyed")
    bus = EventBus().configure(
        handlers="tests.ordering.handlers:HANDLERS",
        broker=require_redis(),
        queue=queues[0],
        partitioned_queue=queues[1],
    )
    yield bus
    broker = bus.broker
    assert isinstance(broker, EventBusRedisBroker)
    client: Any = redis.Redis.from_url(require_redis())
    forget_lanes(client, run)
    client.close()
    probe = RedisQueues(require_redis())
    probe.delete(queues)
    probe.forget_brokers([broker.broker_id])
    probe.close()
    broker.close()


def keyed_queue(bus: EventBus) -> str:
    return bus.config.queues.partitioned


def test_publish_puts_each_lanes_head_on_the_broker_and_runs_the_hooks_once_per_message(bus: EventBus) -> None:
    hooks = EnqueueHooks()
    bus.broker.add_middleware(hooks)
    key = f"k-{keyed_queue(bus)}"
    bus.publish([Step(key, 0, n) for n in range(3)])

    # Three handlers (three lanes) of three events: only each lane's first event is on the queue.
    held = RedisQueues(require_redis()).messages(keyed_queue(bus))
    assert sorted((m["actor_name"].rsplit(".", 1)[-1], m["args"][0]["n"]) for m in held) == [
        ("OrderingA", 0),
        ("OrderingB", 0),
        ("OrderingC", 0),
    ]
    # Under its message id as its Redis id, which its body carries, as RedisBroker.enqueue writes it.
    client: Any = redis.Redis.from_url(require_redis())
    redis_ids = [rid.decode() for rid in client.lrange(f"dramatiq:{keyed_queue(bus)}", 0, -1)]
    assert sorted(redis_ids) == sorted(m["message_id"] for m in held)
    assert all(m["options"]["redis_message_id"] == m["message_id"] for m in held)
    # Every message, waiting or not, went through the enqueue hooks once, when it was published.
    assert len(hooks.before) == 9 and sorted(hooks.before) == sorted(hooks.after) and len(set(hooks.before)) == 9


def test_a_partitioned_event_too_large_for_the_workers_fails_at_publish_and_no_lane_holds_it(bus: EventBus) -> None:
    key = f"k-{keyed_queue(bus)}"
    with pytest.raises(EventEncodeError, match=r"more than max_message_bytes"):
        bus.publish([Step(key, 0, 0), Step(key + "x" * (1 << 20), 0, 1)])  # the key is in the message thrice
    assert RedisQueues(require_redis()).messages(keyed_queue(bus)) == []
    client: Any = redis.Redis.from_url(require_redis())
    assert [lane for lane in client.zrange("eventbus:lanes", 0, -1) if key.encode() in lane] == []


class EnterCalls:
    """Records the size of every enter_many() round trip the gate makes after a fetch."""

    def __init__(self, lanes: Any) -> None:
        self.sizes: list[int] = []
        self._lanes = lanes
        self._enter_many = lanes.enter_many
        lanes.enter_many = self

    def __call__(self, entries: Any) -> Any:
        self.sizes.append(len(entries))
        return self._enter_many(entries)


def test_the_fetch_that_takes_lane_heads_takes_their_leases_in_the_same_round_trip(bus: EventBus) -> None:
    broker = bus.broker
    assert isinstance(broker, EventBusRedisBroker) and isinstance(broker.fetch_hook, LaneGate)
    ordering = next(m for m in broker.middleware if isinstance(m, PartitionOrdering))
    key = f"k-{keyed_queue(bus)}"
    bus.publish(Step(key, 0, 0))
    entered = EnterCalls(broker.fetch_hook.lanes)
    consumer = broker.consume(keyed_queue(bus), prefetch=3, timeout=100)
    heads = [next(consumer) for _ in range(3)]
    assert entered.sizes == []  # the three lanes' heads, leased by the fetch script itself
    assert {lane.state for lane in bus.lanes() if lane.partition_key == key} == {"running"}
    for head in heads:
        assert head is not None
        ordering.before_process_message(broker, head)  # runs on the verdict taken at fetch
    assert entered.sizes == []
    # What maps a head's Redis id to its lane is gone once the head is fetched.
    assert not broker.client.exists(broker.keys.lane_heads(keyed_queue(bus)))
    consumer.close()


def lane_states(bus: EventBus, key: str) -> dict[str, str]:
    return {lane.handler.rsplit(".", 1)[-1]: lane.state for lane in bus.lanes() if lane.partition_key == key}


def test_a_head_whose_body_was_forged_gives_back_the_lease_its_fetch_took(bus: EventBus) -> None:
    broker = bus.broker
    assert isinstance(broker, EventBusRedisBroker)
    key = f"k-{keyed_queue(bus)}"
    bus.publish(Step(key, 0, 0))
    queue = keyed_queue(bus)
    bodies = {
        Message.decode(body).actor_name.rsplit(".", 1)[-1]: (rid, body)
        for rid, body in broker.client.hgetall(broker.keys.messages(queue)).items()
    }
    # One head's body is not a message at all; another's is a copy of the head under another message id.
    unreadable_id, _ = bodies["OrderingA"]
    broker.client.hset(broker.keys.messages(queue), unreadable_id, b"not a message")
    copied_id, head_body = bodies["OrderingB"]
    copy = Message.decode(head_body).copy(message_id=str(uuid.uuid4()))
    broker.client.hset(broker.keys.messages(queue), copied_id, copy.encode())
    entered = EnterCalls(bus.config.lanes)
    consumer = broker.consume(queue, prefetch=3, timeout=100)
    fetched = [next(consumer) for _ in range(3)]
    # The unreadable body is dead-lettered and the copy runs under no lease of the fetch (it enters
    # as its body says, a stale head): both give back the lease their fetch took, rather than keep
    # their lanes from moving until it runs out.
    assert lane_states(bus, key) == {"OrderingA": "retrying", "OrderingB": "retrying", "OrderingC": "running"}
    assert entered.sizes == [1]
    assert sorted(m.actor_name.rsplit(".", 1)[-1] for m in fetched if m is not None) == ["OrderingB", "OrderingC"]
    consumer.close()


def test_a_head_sent_again_by_the_sweep_is_leased_in_one_round_trip_after_its_fetch(bus: EventBus) -> None:
    broker = bus.broker
    assert isinstance(broker, EventBusRedisBroker) and isinstance(broker.fetch_hook, LaneGate)
    ordering = next(m for m in broker.middleware if isinstance(m, PartitionOrdering))
    key = f"k-{keyed_queue(bus)}"
    bus.publish(Step(key, 0, 0))
    # The heads leave the queue unfetched (a purge, a lost message): the sweep sends them again,
    # through the broker's enqueue, under new Redis ids the lane scripts never saw.
    broker.client.delete(broker.keys.queue(keyed_queue(bus)))
    lanes = bus.config.lanes
    assert lanes is not None
    lanes.client.zadd(
        lanes.keys.lanes, {lane: 0 for lane in lanes.client.zrange(lanes.keys.lanes, 0, -1) if key.encode() in lane}
    )
    resent = [stalled for stalled in lanes.sweep() if key.encode() in stalled.message]
    assert len(resent) == 3
    for stalled in resent:
        broker.enqueue(Message.decode(stalled.message))
    entered = EnterCalls(lanes)
    consumer = broker.consume(keyed_queue(bus), prefetch=3, timeout=100)
    heads = [next(consumer) for _ in range(3)]
    assert entered.sizes == [3]
    for head in heads:
        assert head is not None
        ordering.before_process_message(broker, head)
    assert {lane.state for lane in bus.lanes() if lane.partition_key == key} == {"running"}
    consumer.close()


def test_a_handled_head_is_finished_with_its_ack_and_its_lane_moves_on(bus: EventBus) -> None:
    broker = bus.broker
    assert isinstance(broker, EventBusRedisBroker)
    ordering = next(m for m in broker.middleware if isinstance(m, PartitionOrdering))
    key = f"k-{keyed_queue(bus)}"
    bus.publish([Step(key, 0, n) for n in range(2)])
    consumer = broker.consume(keyed_queue(bus), prefetch=3, timeout=100)
    heads = [next(consumer) for _ in range(3)]
    head = next(proxy for proxy in heads if proxy is not None and proxy.actor_name.endswith("OrderingA"))
    other, third = [p for p in heads if p is not None and p is not head]
    client: Any = redis.Redis.from_url(require_redis())
    acks_key = broker.keys.acks(broker.broker_id, keyed_queue(bus))

    ordering.before_process_message(broker, head)
    ordering.after_process_message(broker, head)  # handled: its FINISH waits for its ack
    (lane_a,) = [lane for lane in bus.lanes() if lane.partition_key == key and lane.handler == head.actor_name]
    assert lane_a.state == "running" and lane_a.pending == 2
    dispatch = DispatchCalls(broker)
    consumer.ack(head)  # the FINISH goes with the ack, in one script call
    assert dispatch.commands == []  # no ack of Dramatiq's own
    assert not client.sismember(acks_key, head.options["redis_message_id"])
    assert not client.hexists(f"dramatiq:{keyed_queue(bus)}.msgs", head.options["redis_message_id"])
    # Lane A's next head is on the queue, and the next fetch gets it.
    consumer.ack(other)
    following = next(consumer)
    assert following is not None and following.actor_name == head.actor_name
    assert following.args[0]["n"] == 1 and following.message_id != head.message_id
    assert {rid.decode() for rid in client.smembers(acks_key)} == {
        third.options["redis_message_id"],
        following.options["redis_message_id"],
    }
    consumer.close()


def test_a_handled_heads_ack_that_could_not_be_sent_still_finishes_the_head_when_sent_again(
    bus: EventBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = bus.broker
    assert isinstance(broker, EventBusRedisBroker) and isinstance(broker.fetch_hook, LaneGate)
    lanes = broker.fetch_hook.lanes
    ordering = next(m for m in broker.middleware if isinstance(m, PartitionOrdering))
    key = f"k-{keyed_queue(bus)}"
    bus.publish([Step(key, 0, n) for n in range(2)])
    consumer = broker.consume(keyed_queue(bus), prefetch=3, timeout=100)
    fetched = [p for p in (next(consumer) for _ in range(3)) if p is not None]
    head = next(p for p in fetched if p.actor_name.endswith("OrderingA"))
    other = next(p for p in fetched if p is not head)
    ordering.before_process_message(broker, head)
    ordering.after_process_message(broker, head)

    def unreachable(*_: Any, **__: Any) -> None:
        raise redis.ConnectionError("Redis went away")

    monkeypatch.setattr(lanes, "finish_handled", unreachable)
    with pytest.raises(ConnectionClosed):
        consumer.ack(head)  # Dramatiq's worker restarts the consumer; the ack is sent with the next one
    monkeypatch.undo()
    consumer.ack(other)  # the next ack sends the one that failed along with it
    (lane_a,) = [lane for lane in bus.lanes() if lane.partition_key == key and lane.handler == head.actor_name]
    assert lane_a.pending == 1 and lane_a.state == "dispatched", "the head was acked without finishing its lane"
    consumer.close()


def test_a_head_put_back_unstarted_gives_its_lease_back(bus: EventBus) -> None:
    broker = bus.broker
    assert isinstance(broker, EventBusRedisBroker)
    key = f"k-{keyed_queue(bus)}"
    bus.publish(Step(key, 0, 0))
    consumer = broker.consume(keyed_queue(bus), prefetch=3, timeout=100)
    first = next(consumer)  # fetches all three heads; hands over one
    assert first is not None
    assert sorted(lane.attempts for lane in bus.lanes() if lane.partition_key == key) == [1, 1, 1]
    consumer.close()  # the two it still had go back, and their leases with them
    states = {lane.handler: lane.state for lane in bus.lanes() if lane.partition_key == key}
    assert states[first.actor_name] == "running"
    assert sorted(state for handler, state in states.items() if handler != first.actor_name) == ["retrying"] * 2
    # Whoever fetches them next runs them at once.
    again = broker.consume(keyed_queue(bus), prefetch=3, timeout=100)
    ordering = next(m for m in broker.middleware if isinstance(m, PartitionOrdering))
    for _ in range(2):
        message = next(again)
        assert message is not None
        ordering.before_process_message(broker, message)  # SkipMessage if it were "busy"
    # Each lease counted an attempt.
    assert sorted(lane.attempts for lane in bus.lanes() if lane.partition_key == key) == [1, 2, 2]
    again.close()


def test_a_failed_head_is_left_to_the_consumer_to_dead_letter(bus: EventBus) -> None:
    broker = bus.broker
    assert isinstance(broker, EventBusRedisBroker)
    ordering = next(m for m in broker.middleware if isinstance(m, PartitionOrdering))
    bus.publish(Step(f"k-{keyed_queue(bus)}", 0, 0))
    consumer = broker.consume(keyed_queue(bus), prefetch=3, timeout=100)
    head: MessageProxy = next(p for p in (next(consumer) for _ in range(3)) if p is not None)
    dispatch = DispatchCalls(broker)
    ordering.before_process_message(broker, head)
    head.fail()  # what Retries does when a message is out of retries
    ordering.after_process_message(broker, head, exception=RuntimeError("boom"))
    assert broker.client.sismember(
        broker.keys.acks(broker.broker_id, keyed_queue(bus)), head.options["redis_message_id"]
    )
    consumer.nack(head)
    assert dispatch.commands == ["nack"]
    consumer.close()


def test_lanes_hand_heads_to_the_broker_only_when_they_share_its_redis() -> None:
    redis_url = require_redis()
    other_db = redis_url.rsplit("/", 1)[0] + "/5"

    def lanes(**settings: Any) -> RedisLaneStore:
        bus = EventBus().configure(handlers="tests.ordering.handlers:HANDLERS", **settings)
        assert bus.config.lanes is not None
        bus.broker.close()
        return bus.config.lanes

    assert lanes(broker=redis_url).sends_heads
    assert lanes(broker=redis_url, redis_url=redis_url).sends_heads
    assert not lanes(broker=redis_url, redis_url=other_db).sends_heads
    assert not lanes(broker=require_rabbitmq(), redis_url=redis_url).sends_heads


def test_the_leases_of_fetched_messages_are_renewed_while_they_wait_and_forgotten_once_dropped(bus: EventBus) -> None:
    broker = bus.broker
    assert isinstance(broker, EventBusRedisBroker) and isinstance(broker.fetch_hook, LaneGate)
    gate = broker.fetch_hook
    bus.publish(Step(f"k-{keyed_queue(bus)}", 0, 0))
    consumer = broker.consume(keyed_queue(bus), prefetch=3, timeout=100)
    first = next(consumer)  # fetches the three heads
    assert first is not None
    waiting = gate.waiting_leases()
    assert len(waiting) == 3
    assert bus.config.lanes is not None and bus.config.lanes.renew(waiting) == [True] * 3
    # What Dramatiq does after a connection error: drop the consumer and all it had fetched.
    del consumer, first
    gc.collect()
    assert gate.waiting_leases() == []


def test_a_second_delivery_of_a_running_head_in_the_same_worker_leaves_the_first_alone(bus: EventBus) -> None:
    broker = bus.broker
    assert isinstance(broker, EventBusRedisBroker)
    ordering = next(m for m in broker.middleware if isinstance(m, PartitionOrdering))
    key = f"k-{keyed_queue(bus)}"
    bus.publish(Step(key, 0, 0))
    consumer = broker.consume(keyed_queue(bus), prefetch=3, timeout=100)
    head = next(p for p in (next(consumer) for _ in range(3)) if p is not None and p.actor_name.endswith("OrderingA"))
    # The same message delivered again (the sweep sent it again), while the first runs here.
    again = MessageProxy(head._message.copy(options={"redis_message_id": "another-delivery"}))
    ordering.before_process_message(broker, head)
    with pytest.raises(SkipMessage):
        ordering.before_process_message(broker, again)  # busy
    ordering.after_skip_message(broker, again)
    (lane,) = [lane for lane in bus.lanes() if lane.partition_key == key and lane.handler == head.actor_name]
    assert lane.state == "running"  # still the first delivery's lease
    ordering.after_process_message(broker, head)
    consumer.ack(head)  # finishes the lane: it had only this event
    assert [lane for lane in bus.lanes() if lane.partition_key == key and lane.handler == head.actor_name] == []
    consumer.close()


def test_what_older_consumers_leave_in_the_lane_heads_hash_goes_when_the_queue_drains(bus: EventBus) -> None:
    broker = bus.broker
    assert isinstance(broker, EventBusRedisBroker)
    key = f"k-{keyed_queue(bus)}"
    bus.publish(Step(key, 0, 0))  # three heads on the queue, each with its entry
    lane_heads = broker.keys.lane_heads(keyed_queue(bus))
    # An entry whose head a consumer of an older version fetched and finished without removing it.
    broker.client.hset(lane_heads, "fetched-by-an-older-worker", "some-lane")
    consumer = broker.consume(keyed_queue(bus), prefetch=1, timeout=100)
    assert next(consumer) is not None
    # The queue still holds two heads: their entries, and so the stale one, stay.
    assert broker.client.hlen(lane_heads) == 3
    consumer.close()
    drainer = broker.consume(keyed_queue(bus), prefetch=10, timeout=100)
    assert next(drainer) is not None  # this fetch takes the other two: the queue is empty
    assert not broker.client.exists(lane_heads)
    drainer.close()
