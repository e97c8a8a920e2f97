"""Lanes in a Redis beside a RabbitMQ broker, with lane calls batched by the bus's RabbitMQ consumer.

On a real RabbitMQ and Redis, in-process so that each step can be looked at: what the
consumer reads at once takes its leases in one round trip; a handled head is finished
before its ack, and its lane's next head published in the same write; a failed finish
holds the acks back until the lanes answer; deliveries read but not started give their
leases back; and a delay queue's deliveries take none. The worker subprocess tests in
``test_cluster_order`` run the same path end to end.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from dramatiq.broker import MessageProxy
from dramatiq.common import dq_name

from dramatiq_eventbus import EventBus
from dramatiq_eventbus.brokers import EventBusRabbitmqBroker
from dramatiq_eventbus.brokers.rabbitmq import consumer as consumer_module
from dramatiq_eventbus.ordering import DeliveryLaneGate, PartitionOrdering

from ..support.broker_queues import RabbitmqQueues
from ..support.servers import require_rabbitmq, require_redis
from .handlers import Step
from .harness import forget_lanes

pytestmark = [pytest.mark.redis, pytest.mark.rabbitmq]


@pytest.fixture
def bus() -> Iterator[EventBus]:
    run = uuid.uuid4().hex[:10]
    queues = (f"beside_{run}", f"beside_{run}_keyed")
    bus = EventBus().configure(
        handlers="tests.ordering.handlers:HANDLERS",
        broker=require_rabbitmq(),
        redis_url=require_redis(),
        queue=queues[0],
        partitioned_queue=queues[1],
    )
    yield bus
    bus.broker.close()
    client: Any = redis.Redis.from_url(require_redis())
    forget_lanes(client, run)
    client.close()
    RabbitmqQueues(require_rabbitmq()).delete(queues)


def gate_of(bus: EventBus) -> DeliveryLaneGate:
    broker = bus.broker
    assert isinstance(broker, EventBusRabbitmqBroker) and isinstance(broker.delivery_hook, DeliveryLaneGate)
    return broker.delivery_hook


def ordering_of(bus: EventBus) -> PartitionOrdering:
    return next(m for m in bus.broker.middleware if isinstance(m, PartitionOrdering))


def keyed_queue(bus: EventBus) -> str:
    return bus.config.queues.partitioned


def read_all(consumer: Any, count: int) -> list[MessageProxy]:
    """``count`` deliveries, reading on while the consumer's waits time out."""
    found: list[MessageProxy] = []
    deadline = time.monotonic() + 10
    while len(found) < count and time.monotonic() < deadline:
        message = next(consumer)
        if message is not None:
            found.append(message)
    assert len(found) == count, f"read {len(found)} of {count} deliveries"
    return found


def lane_states(bus: EventBus, key: str) -> dict[str, tuple[str, int]]:
    """Each lane of ``key``, by its handler's short name: its head's state and how many events wait."""
    return {
        lane.handler.rsplit(".", 1)[-1]: (lane.state, lane.pending) for lane in bus.lanes() if lane.partition_key == key
    }


def settle(consumer: Any, seconds: float = 0.3) -> None:
    """Let the consumer's connection do its I/O: deliveries arrive, callbacks (its acks) run."""
    consumer.connection.sleep(seconds)


def handled_head_of_two(bus: EventBus) -> tuple[str, Any, list[MessageProxy], MessageProxy]:
    """Two events of one key published; the three lanes' heads read; lane A's run and handled,
    its finish waiting for its ack. Returns the key, the consumer, the heads and lane A's."""
    broker, ordering = bus.broker, ordering_of(bus)
    key = f"k-{keyed_queue(bus)}"
    bus.publish([Step(key, 0, n) for n in range(2)])
    consumer = broker.consume(keyed_queue(bus), prefetch=3, timeout=100)
    heads = read_all(consumer, 3)
    head = next(proxy for proxy in heads if proxy.actor_name.endswith("OrderingA"))
    ordering.before_process_message(broker, head)
    ordering.after_process_message(broker, head)
    return key, consumer, heads, head


def test_deliveries_read_together_take_their_leases_in_one_round_trip(bus: EventBus) -> None:
    lanes = gate_of(bus).lanes
    key = f"k-{keyed_queue(bus)}"
    bus.publish(Step(key, 0, 0))  # three handlers: three lanes, three heads on the queue
    entered: list[int] = []
    enter_many = lanes.enter_many

    def recording_enter_many(entries: Any) -> Any:
        entered.append(len(entries))
        return enter_many(entries)

    lanes.enter_many = recording_enter_many  # type: ignore[method-assign]
    consumer = bus.broker.consume(keyed_queue(bus), prefetch=3, timeout=100)
    settle(consumer)  # RabbitMQ delivers the three; pika reads them
    heads = read_all(consumer, 3)
    assert entered == [3]  # with the first delivery, the two read along with it
    assert {state for state, _ in lane_states(bus, key).values()} == {"running"}
    for head in heads:
        ordering_of(bus).before_process_message(bus.broker, head)  # runs on the verdict taken at reading
    assert entered == [3]
    consumer.close()


def test_a_handled_head_is_finished_before_its_ack_and_its_next_head_published_with_it(bus: EventBus) -> None:
    broker, ordering = bus.broker, ordering_of(bus)
    key, consumer, heads, head = handled_head_of_two(bus)
    assert lane_states(bus, key)["OrderingA"] == ("running", 2)
    consumer.ack(head)
    following = read_all(consumer, 1)[0]  # the ack's callback ran in the consumer's I/O loop
    assert following.actor_name == head.actor_name and following.args[0]["n"] == 1
    assert lane_states(bus, key)["OrderingA"] == ("running", 1)  # the next head, entered as it was read
    for proxy in heads:
        if proxy is not head:
            consumer.ack(proxy)  # unkeyed by the gate: plain acks
    ordering.before_process_message(broker, following)
    ordering.after_process_message(broker, following)
    consumer.ack(following)
    settle(consumer)
    consumer.close()
    assert "OrderingA" not in lane_states(bus, key)  # its lane drained
    assert RabbitmqQueues(require_rabbitmq()).count(keyed_queue(bus)) == 0, "a delivery was not acked"


def test_acks_held_back_by_a_failed_finish_are_sent_once_the_lanes_answer(
    bus: EventBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    lanes = gate_of(bus).lanes
    monkeypatch.setattr(consumer_module, "FINISH_RETRY_SECONDS", 0.2)
    key, consumer, _, head = handled_head_of_two(bus)
    finish_many = lanes.finish_many

    tries: list[float] = []

    def unreachable(*_: Any, **__: Any) -> None:
        tries.append(time.monotonic())
        raise redis.ConnectionError("Redis went away")

    lanes.finish_many = unreachable  # type: ignore[method-assign]
    consumer.ack(head)
    started = time.monotonic()
    while time.monotonic() - started < 0.5:
        assert next(consumer) is None  # the consumer waits, as Dramatiq's consumer thread does
    assert 1 <= len(tries) <= 4, f"{len(tries)} tries in 0.5 s: one per FINISH_RETRY_SECONDS (0.2 s)"
    settle(consumer)
    assert lane_states(bus, key)["OrderingA"] == ("running", 2)  # not finished, and so not acked
    lanes.finish_many = finish_many  # type: ignore[method-assign]
    following = read_all(consumer, 1)[0]  # the retry finished it, and published the next head
    assert following.actor_name == head.actor_name and following.args[0]["n"] == 1
    consumer.close()
    # Closed with the others unacked: RabbitMQ has them back, and only them.
    assert RabbitmqQueues(require_rabbitmq()).count(keyed_queue(bus)) == 3


def test_deliveries_read_but_not_started_give_their_leases_back(bus: EventBus) -> None:
    broker = bus.broker
    key = f"k-{keyed_queue(bus)}"
    bus.publish(Step(key, 0, 0))
    consumer = broker.consume(keyed_queue(bus), prefetch=3, timeout=100)
    settle(consumer)
    first = next(consumer)  # reads the three heads, enters them, hands over one
    assert first is not None
    consumer.requeue([first])  # Dramatiq's worker shutting down with it in its work queue
    consumer.close()  # the two it still held go back too
    assert {state for state, _ in lane_states(bus, key).values()} == {"retrying"}
    # Whoever reads them next runs them at once.
    again = broker.consume(keyed_queue(bus), prefetch=3, timeout=100)
    for message in read_all(again, 3):
        ordering_of(bus).before_process_message(broker, message)  # SkipMessage if it were "busy"
    again.close()


def test_a_delay_queue_takes_no_lease(bus: EventBus) -> None:
    broker = bus.broker
    key = f"k-{keyed_queue(bus)}"
    bus.publish(Step(key, 0, 0))
    consumer = broker.consume(keyed_queue(bus), prefetch=3, timeout=100)
    heads = read_all(consumer, 3)
    head = next(proxy for proxy in heads if proxy.actor_name.endswith("OrderingA"))
    consumer.requeue(heads)  # gives the leases back
    consumer.close()
    assert lane_states(bus, key)["OrderingA"][0] == "retrying"
    # What Retries does with a failed head: send it again with a delay, through the delay queue.
    broker.enqueue(head._message.copy(), delay=60_000)
    delayed = broker.consume(dq_name(keyed_queue(bus)), prefetch=3, timeout=100)
    (waiting,) = read_all(delayed, 1)
    assert waiting.message_id == head.message_id
    # It waits in the worker until its time, then goes to its queue, and is entered there: a
    # lease taken now would make that delivery "busy" and skip it.
    assert lane_states(bus, key)["OrderingA"][0] == "retrying"
    delayed.close()
