"""Per-(handler, partition key) ordering: cluster-wide lanes, or one process's order.

:mod:`.lanes` says what a lane is and what stores them; :mod:`.coordinator` how a worker
runs them, behind one interface; :mod:`.middleware` plugs that into Dramatiq.
"""

from .coordinator import (
    GatedCoordinator,
    LaneCoordinator,
    LaneUnavailable,
    LocalCoordinator,
    SharedCallsCoordinator,
)
from .gate import AckingLaneGate, DeliveryLaneGate, LaneGate, new_token
from .group_call import GroupCall
from .lanes import (
    DEFAULT_LANE_PREFIX,
    DEFAULT_LEASE_SECONDS,
    DEFAULT_STALL_SECONDS,
    AckingLaneStore,
    Finished,
    FinishStatus,
    HandledHead,
    HeadState,
    LaneStatus,
    LaneStore,
    Verdict,
    lane_name,
)
from .local import LocalLanes
from .middleware import LaneSweeper, PartitionOrdering

__all__ = [
    "DEFAULT_LANE_PREFIX",
    "DEFAULT_LEASE_SECONDS",
    "DEFAULT_STALL_SECONDS",
    "AckingLaneGate",
    "AckingLaneStore",
    "DeliveryLaneGate",
    "FinishStatus",
    "Finished",
    "GatedCoordinator",
    "GroupCall",
    "HandledHead",
    "HeadState",
    "LaneCoordinator",
    "LaneGate",
    "LaneStatus",
    "LaneStore",
    "LaneSweeper",
    "LaneUnavailable",
    "LocalCoordinator",
    "LocalLanes",
    "PartitionOrdering",
    "SharedCallsCoordinator",
    "Verdict",
    "lane_name",
    "new_token",
]
