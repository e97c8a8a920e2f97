"""Finishing a lane's head on a real Redis: what the lane scripts answer to the lease holder,
to another delivery's lease, and to a head that has moved on."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dramatiq_eventbus.brokers import RedisLaneStore
from dramatiq_eventbus.ordering.lanes import FinishStatus, Verdict

from ..support.lane_stores import scratch_lane_store


@pytest.fixture
def lanes() -> Iterator[RedisLaneStore]:
    with scratch_lane_store("lane-finish") as store:
        yield store


@pytest.mark.redis
def test_a_head_is_finished_by_its_lease_lost_to_another_and_gone_once_it_moved_on(lanes: RedisLaneStore) -> None:
    lane = "handler:order-1"
    assert lanes.append([(lane, "m1", b"first", "q"), (lane, "m2", b"second", "q")]) == [True, False]
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
