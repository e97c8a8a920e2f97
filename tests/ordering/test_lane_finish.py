"""Finishing a lane's head on a real Redis: what the lane scripts answer to the lease holder,
to another delivery's lease, and to a head that has moved on."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dramatiq_eventbus.brokers import RedisLaneStore
from dramatiq_eventbus.brokers.redis.keys import RedisKeys
from dramatiq_eventbus.ordering.lanes import FinishStatus, Verdict

from ..support.lane_stores import scratch_lane_store


@pytest.fixture
def lanes() -> Iterator[RedisLaneStore]:
    with scratch_lane_store("lane-finish") as store:
        yield store


def two_events(lanes: RedisLaneStore, lane: str) -> None:
    """Append ``m1`` then ``m2`` to ``lane``, empty before: ``m1`` is its head, not yet leased."""
    assert lanes.append([(lane, "m1", b"first", "q"), (lane, "m2", b"second", "q")]) == [True, False]


@pytest.mark.redis
def test_a_head_is_finished_by_its_lease_lost_to_another_and_gone_once_it_moved_on(lanes: RedisLaneStore) -> None:
    lane = "handler:order-1"
    two_events(lanes, lane)
    assert lanes.enter_many([(lane, "m1", "lease-1")]) == [Verdict.RUN]

    # Another delivery's lease does not finish the head, nor does it move the lane on.
    assert lanes.finish(lane, "m1", "lease-2", queue_name="q").status is FinishStatus.LOST
    finished = lanes.finish(lane, "m1", "lease-1", queue_name="q")
    assert finished.status is FinishStatus.NEXT and finished.next_message == b"second"

    # The lease of a head that moved on finishes nothing: gone, not lost.
    assert lanes.finish(lane, "m1", "lease-1", queue_name="q").status is FinishStatus.GONE
    # The new head, not yet leased, is lost to any lease, until its own delivery enters.
    assert lanes.finish(lane, "m2", "lease-1", queue_name="q").status is FinishStatus.LOST
    assert lanes.enter_many([(lane, "m2", "lease-3")]) == [Verdict.RUN]
    assert lanes.finish(lane, "m2", "lease-3", queue_name="q").status is FinishStatus.IDLE


@pytest.mark.redis
def test_a_head_written_before_heads_named_their_id_is_still_told_from_a_stale_delivery(
    lanes: RedisLaneStore,
) -> None:
    # The head's state names its message id, so a lease is taken without reading the lane's
    # list; a head an older version wrote has no id there, and the list answers.
    lane = "handler:order-2"
    two_events(lanes, lane)
    head_key = lanes.keys.head(lane)
    assert lanes.client.hget(head_key, "id") == b"m1"
    lanes.client.hdel(head_key, "id")
    assert lanes.enter_many([(lane, "m2", "lease-1")]) == [Verdict.STALE]
    assert lanes.enter_many([(lane, "m1", "lease-1")]) == [Verdict.RUN]
    assert lanes.finish(lane, "m1", "lease-1", queue_name="q").status is FinishStatus.NEXT
    assert lanes.client.hget(head_key, "id") == b"m2"
    assert lanes.enter_many([(lane, "m1", "lease-2")]) == [Verdict.STALE]
    assert lanes.enter_many([(lane, "m2", "lease-2")]) == [Verdict.RUN]


@pytest.mark.redis
def test_a_new_head_keeps_nothing_of_the_lease_before_it(lanes: RedisLaneStore) -> None:
    lane = "handler:order-3"
    two_events(lanes, lane)
    assert lanes.enter_many([(lane, "m1", "lease-1")]) == [Verdict.RUN]
    assert lanes.finish(lane, "m1", "lease-1", queue_name="q").status is FinishStatus.NEXT
    # Not busy: the lease of m1 ended with it, though its time has not run out.
    assert lanes.enter_many([(lane, "m2", "lease-2")]) == [Verdict.RUN]
    assert lanes.finish(lane, "m2", "lease-1", queue_name="q").status is FinishStatus.LOST
    assert lanes.finish(lane, "m2", "", queue_name="q").status is FinishStatus.LOST
    assert [(view.state, view.attempts) for view in lanes.lanes()] == [("running", 1)]


@pytest.mark.redis
def test_lanes_lists_lanes_whose_keys_were_written_by_hand(lanes: RedisLaneStore) -> None:
    # What Redis holds may be forged: bytes that are not UTF-8, numbers that are not numbers.
    # ``eventbus lanes`` (and the bus's lanes()) raised on them and listed nothing.
    lane = "handler:order-4"
    assert lanes.append([(lane, "m1", b"first", "q")]) == [True]
    lanes.client.hset(lanes.keys.head(lane), mapping={"state": b"\xff", "head_since": b"soon", "attempts": b"x\xfe"})
    forged = b"handler:\xff"
    lanes.client.rpush(f"{lanes.prefix}:lane:".encode() + forged + b":ids", b"\xfe")
    lanes.client.zadd(lanes.keys.lanes, {forged: 0})
    listed = {status.head_message_id: status for status in lanes.lanes()}
    assert len(listed) == 2
    first = listed["m1"]
    assert (first.state, first.attempts, first.pending) == ("unknown", 0, 1)
    (other,) = [status for key, status in listed.items() if key != "m1"]
    assert other.handler == "handler" and other.partition_key == "\ufffd" and other.head_message_id == "\ufffd"
    # The metrics' bounded read too (summary, on every scrape).
    assert lanes.summary(max_lanes=10).waiting == 2


@pytest.mark.redis
def test_a_head_whose_stored_message_is_gone_is_skipped_with_a_count_not_a_stuck_sweep(
    lanes: RedisLaneStore,
) -> None:
    # A body evicted from Redis (or a lane written by hand) can never run. Finishing the head
    # before it sent nothing; the sweep then returned that head without a message, the sweeper
    # raised decoding it, and the stalled lanes after it in the same sweep, marked as sent
    # again, were not sent; the lane itself never moved past it.
    lane, other = "handler:order-5", "handler:order-6"
    assert lanes.append([(lane, f"m{n}", f"body {n}".encode(), "q") for n in range(1, 5)]) == [True] + [False] * 3
    assert lanes.append([(other, "o1", b"other", "q")]) == [True]
    for gone in ("m2", "m3"):
        lanes.client.hdel(lanes.keys.messages(lane), gone)
    assert lanes.enter_many([(lane, "m1", "lease-1")]) == [Verdict.RUN]
    finished = lanes.finish(lane, "m1", "lease-1", queue_name="q")
    assert (finished.status, finished.next_message) == (FinishStatus.NEXT, None)
    lanes.client.zadd(lanes.keys.lanes, {lane: 0, other: 0})  # both due now
    swept = {stalled.lane: stalled for stalled in lanes.sweep()}
    assert set(swept) == {lane, other}
    assert (swept[lane].skipped, swept[lane].message) == (2, b"body 4")
    assert (swept[other].skipped, swept[other].message) == (0, b"other")
    assert {status.head_message_id for status in lanes.lanes()} == {"m4", "o1"}


@pytest.mark.redis
def test_finishing_before_a_head_whose_stored_message_is_gone_raises_nothing_when_lanes_send_heads() -> None:
    # With the lanes in the broker's Redis the script puts the new head on its queue: with its
    # message gone it raised a Lua error, half done, and the worker's whole batch of acks with it.
    with scratch_lane_store("lane-finish-sends") as scratch:
        namespace = f"{scratch.prefix}-broker"
        lanes = RedisLaneStore(scratch.client, prefix=scratch.prefix, broker_keys=RedisKeys(namespace))
        lane = "handler:order-7"
        two_events(lanes, lane)
        lanes.client.hdel(lanes.keys.messages(lane), "m2")
        assert lanes.enter_many([(lane, "m1", "lease-1")]) == [Verdict.RUN]
        finished = lanes.finish(lane, "m1", "lease-1", queue_name="q")
        assert (finished.status, finished.next_message) == (FinishStatus.NEXT, None)
        queue = RedisKeys(namespace).queue("q")
        assert lanes.client.lrange(queue, 0, -1) == [b"m1"]  # only the first head went on the queue
        lanes.client.delete(queue, f"{queue}.msgs", f"{queue}:lane-heads")
