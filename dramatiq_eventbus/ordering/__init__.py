"""Per-(handler, partition key) ordering: cluster-wide lanes in Redis, or one process's order."""

from .lanes import DEFAULT_LEASE_SECONDS, DEFAULT_STALL_SECONDS, DeliveryAck, LaneStatus, LaneStore, lane_name
from .local import LocalLanes

__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "DEFAULT_STALL_SECONDS",
    "DeliveryAck",
    "LaneStatus",
    "LaneStore",
    "LocalLanes",
    "lane_name",
]
