"""The ordering middleware: each lane's events one at a time, in publish order; and the sweep."""

from __future__ import annotations

import logging
import threading
from typing import Any

from dramatiq.broker import Broker, MessageProxy
from dramatiq.message import Message
from dramatiq.middleware import Middleware
from dramatiq.worker import Worker

from ..actors import is_handler_actor
from ..untrusted import described, shown
from .coordinator import LaneCoordinator
from .lanes import lane_name
from .local import LocalLanes

#: How often, at the most, a worker renews its leases and looks for stalled lanes.
SWEEP_INTERVAL_SECONDS = 1.0


class PartitionOrdering(Middleware):
    """Handle each lane's events one at a time, in publish order, through a :class:`LaneCoordinator`.

    A message that carries a lane (the publisher had lanes) is started and finished by
    the coordinator. A handler's message with a partition key but no lane (the publisher
    had none) takes turns with its lane's others within this process.

    Parameters:
      coordinator(LaneCoordinator): How this worker keeps lanes; see :mod:`.coordinator`.
    """

    def __init__(self, coordinator: LaneCoordinator) -> None:
        self.coordinator = coordinator
        self.local = LocalLanes()
        # The deliveries (by id() of their proxy, alive until the after hooks) that took their
        # local lane: one skipped before this middleware saw it (AgeLimit, or refused by the
        # keys) took none, and must not give up the lane a delivery of the same id holds.
        self._in_local_lanes: dict[int, str] = {}

    def after_worker_boot(self, broker: Broker, worker: Worker) -> None:
        self.coordinator.worker_booted()

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        lane = message.options.get("lane")
        if isinstance(lane, str):
            self.coordinator.start(broker, message, lane)
            return
        key = message.options.get("partition_key")
        if isinstance(key, str) and is_handler_actor(broker, message.actor_name):
            local_lane = lane_name(message.actor_name, key)
            self.local.enter(local_lane, message.message_id)
            self._in_local_lanes[id(message)] = local_lane

    def before_enqueue(self, broker: Broker, message: Any, delay: int | None) -> None:
        # Retries sends a failed head again with a delay; the lane waits for it until then.
        if delay and "lane" in message.options:
            self.coordinator.retry_scheduled(message.message_id, delay)

    def after_process_message(
        self, broker: Broker, message: MessageProxy, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        self._finish(broker, message, retrying=exception is not None and not message.failed)

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        self._finish(broker, message, retrying=not message.failed)

    def _finish(self, broker: Broker, message: MessageProxy, *, retrying: bool) -> None:
        options = message.options
        lane = options.get("lane")
        if isinstance(lane, str):
            self.coordinator.finish(broker, message, lane, retrying=retrying)
            return
        local_lane = self._in_local_lanes.pop(id(message), None)
        if local_lane is not None:
            self.local.leave(local_lane, message.message_id)


class LaneSweeper(Middleware):
    """In each worker process, a thread that renews the leases of the heads this process
    holds, and sends again the heads of lanes that stopped moving (a crashed worker, a lost
    message), once every :data:`SWEEP_INTERVAL_SECONDS` or third of the lease.

    Parameters:
      coordinator(LaneCoordinator): Whose leases to renew, and whose store to sweep; a
        coordinator without a store needs no sweep.
    """

    def __init__(self, coordinator: LaneCoordinator) -> None:
        self.logger = logging.getLogger(f"{__name__}.{type(self).__name__}")
        self.coordinator = coordinator
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def after_worker_boot(self, broker: Broker, worker: Worker) -> None:
        if self.coordinator.store is None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(broker,), name="eventbus-lanes", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self, broker: Broker) -> None:
        while True:
            store = self.coordinator.store
            interval = SWEEP_INTERVAL_SECONDS if store is None else min(SWEEP_INTERVAL_SECONDS, store.lease_ms / 3000)
            if self._stop.wait(interval):
                return
            try:
                self.sweep_once(broker)
            except Exception as exc:
                # One line, not a traceback every second while the lanes' Redis is away.
                self.logger.warning("Lane maintenance failed (%s); trying again in %.1f s.", described(exc), interval)

    def sweep_once(self, broker: Broker) -> None:
        """Renew this process's leases, then send the heads of stalled lanes again."""
        coordinator = self.coordinator
        store = coordinator.store
        if store is None:
            return
        leases = coordinator.leases()
        for (lane, _), renewed in zip(leases, store.renew(leases), strict=True):
            if not renewed:
                self.logger.warning("Lost the lease on lane %s: another delivery may run its head.", shown(lane))
        for stalled in store.sweep():
            if stalled.skipped:
                self.logger.warning(
                    "Lane %s: dropped %d event(s) whose stored message was gone (evicted from Redis, or "
                    "written by hand); they can never run.",
                    shown(stalled.lane),
                    stalled.skipped,
                )
            if stalled.message is None:
                continue
            try:
                message = Message.decode(stalled.message)
            except Exception as exc:  # a stored message written by hand: the lanes after it still go
                self.logger.warning(
                    "Lane %s stalled, and its head's stored message cannot be decoded (%s); it stays stalled.",
                    shown(stalled.lane),
                    described(exc),
                )
                continue
            self.logger.warning(
                "Lane %s stalled: its head was %s for %.1f s after %d attempt(s); sending it again.",
                shown(stalled.lane),
                stalled.state,
                stalled.stalled_ms / 1000,
                stalled.attempts,
            )
            try:
                broker.enqueue(message)
            except Exception as exc:
                # Its stored message names a queue the broker does not take (one written by hand), or
                # the broker is away: raised here, it kept every stalled lane after it from being sent,
                # sweep after sweep. The sweep gave the lane a new deadline: it is looked at again then.
                self.logger.warning(
                    "Lane %s: its head could not be sent again (%s); it stays stalled.",
                    shown(stalled.lane),
                    described(exc),
                )
