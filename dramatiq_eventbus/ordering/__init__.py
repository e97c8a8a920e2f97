"""Per-(handler, partition key) ordering: cluster-wide lanes in Redis, or one process's order."""

from .gate import LaneGate, new_token
from .group_call import GroupCall
from .lanes import (
    DEFAULT_LEASE_SECONDS,
    DEFAULT_STALL_SECONDS,
    Finished,
    HandledHead,
    LaneStatus,
    LaneStore,
    lane_name,
    warn_if_lost,
)
from .local import LocalLanes

__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "DEFAULT_STALL_SECONDS",
    "Finished",
    "GroupCall",
    "HandledHead",
    "LaneGate",
    "LaneStatus",
    "LaneStore",
    "LocalLanes",
    "lane_name",
    "new_token",
    "warn_if_lost",
]
