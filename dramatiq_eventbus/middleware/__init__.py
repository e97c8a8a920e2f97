"""Dramatiq middleware the bus installs on its broker, one concern each."""

from __future__ import annotations

from dramatiq.broker import Broker
from dramatiq.middleware import Retries

from ..brokers import EventBusRedisBroker
from ..ordering import LaneGate, LaneStore
from .dead_letters import DeadLetterReasons
from .ordering import LaneUnavailable, PartitionOrdering


def install(broker: Broker, *, lanes: LaneStore | None) -> None:
    """Add the bus's middleware to ``broker`` once; configuring again only updates it."""
    if isinstance(broker, EventBusRedisBroker):
        # Lanes in the broker's own Redis are entered and finished by its consumers, per batch.
        broker.lane_gate = LaneGate(lanes) if lanes is not None and lanes.sends_heads else None
    if not any(isinstance(m, DeadLetterReasons) for m in broker.middleware):
        broker.add_middleware(DeadLetterReasons())
    ordering = next((m for m in broker.middleware if isinstance(m, PartitionOrdering)), None)
    if ordering is not None:
        ordering.lanes = lanes
    elif any(isinstance(m, Retries) for m in broker.middleware):
        # Before Retries, so that its after_process_message runs after Retries has decided
        # between a retry and a dead letter (Dramatiq runs "after" hooks in reverse order).
        broker.add_middleware(PartitionOrdering(lanes), before=Retries)
    else:
        broker.add_middleware(PartitionOrdering(lanes))


__all__ = ["DeadLetterReasons", "LaneUnavailable", "PartitionOrdering", "install"]
