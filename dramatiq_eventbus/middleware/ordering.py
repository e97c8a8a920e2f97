"""The worker's side of partition ordering: run a lane's head only, then send the next one."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from dramatiq.broker import Broker, MessageProxy
from dramatiq.message import Message
from dramatiq.middleware import Middleware, MiddlewareError, SkipMessage
from dramatiq.worker import Worker

from ..actors import is_handler_actor
from ..brokers import EventBusRedisBroker
from ..brokers.batch import enqueue_all
from ..ordering import Finished, GroupCall, HandledHead, LaneGate, LaneStore, LocalLanes, new_token, warn_if_lost

logger = logging.getLogger("dramatiq_eventbus.ordering")

#: How often, at the most, a worker looks for stalled lanes.
SWEEP_INTERVAL_SECONDS = 1.0


class LaneUnavailable(MiddlewareError):
    """The lane store could not be asked whether a message may run.

    A MiddlewareError, so that Dramatiq fails the message (and retries it) instead of
    running it outside its lane's order.
    """


class PartitionOrdering(Middleware):
    """Handle each lane's events one at a time, in publish order.

    With a :class:`~dramatiq_eventbus.ordering.LaneStore`, only a lane's head is ever in
    the broker: this runs it under a lease, and when it is handled or dead-lettered,
    sends the lane's next event. A retry keeps the head, so the later events wait in
    Redis without running, spending no retries and holding no thread. A background
    thread renews the leases of running heads and sends again the heads of lanes that
    stopped moving (a crashed worker, a lost message).

    When the lanes live in the broker's own Redis, the bus's Redis consumer has already
    taken the lease when it fetched the message, and finishes the head with its ack (see
    :mod:`~dramatiq_eventbus.ordering.gate`); this then only uses the verdict and hands
    the handled head over. Otherwise the worker threads share their lane calls (see
    :mod:`~dramatiq_eventbus.ordering.group_call`).

    Without one, messages with a partition key take turns per lane within this process.

    Parameters:
      lanes(LaneStore | None): The cluster-wide lanes, or None for the in-process fallback.
    """

    def __init__(self, lanes: LaneStore | None) -> None:
        self.lanes = lanes
        self.local = LocalLanes()
        self._lock = threading.Lock()
        # Per delivery (two deliveries of one message may meet in one process): the running
        # heads' lane, lease token and message id.
        self._running: dict[int, tuple[str, str, str]] = {}
        self._retry_at: dict[str, int] = {}  # message id -> when Retries will send it again (ms)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Without a gate, the worker threads share their lane round trips. Only the sends are
        # not waited for, so only their failures need reporting.
        self._entering: GroupCall[tuple[str, str, str], str] = GroupCall(
            lambda batch: self._lanes().enter_many(batch), on_error=_log_lane_failure
        )
        self._finishing: GroupCall[tuple[HandledHead, str], Finished] = GroupCall(
            lambda batch: self._lanes().finish_many(batch), on_error=_log_lane_failure
        )
        self._sending: GroupCall[tuple[Broker, bytes], None] = GroupCall(_send_heads, on_error=_log_lane_failure)

    # -- worker lifetime -------------------------------------------------------------------

    def after_worker_boot(self, broker: Broker, worker: Worker) -> None:
        if self.lanes is None:
            logger.warning(
                "Partitioned events are ordered only within each worker process: give the bus a Redis "
                "(a Redis broker, configure(redis_url=...) or EVENTBUS_REDIS_URL) for order across the cluster."
            )
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._maintain, args=(broker, self.lanes), name="eventbus-lanes", daemon=True
        )
        self._thread.start()

    def before_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _maintain(self, broker: Broker, lanes: LaneStore) -> None:
        interval = min(SWEEP_INTERVAL_SECONDS, lanes.lease_ms / 3000)
        while not self._stop.wait(interval):
            try:
                with self._lock:
                    leases = [(lane, token) for lane, token, _ in self._running.values()]
                gate = _gate(broker)
                if gate is not None:
                    leases += gate.waiting_leases()
                for (lane, _), renewed in zip(leases, lanes.renew(leases), strict=True):
                    if not renewed:
                        logger.warning("Lost the lease on lane %s: another delivery may run its head.", lane)
                for stalled in lanes.sweep():
                    logger.warning(
                        "Lane %s stalled: its head was %s for %.1f s after %d attempt(s); sending it again.",
                        stalled.lane,
                        stalled.state,
                        stalled.stalled_ms / 1000,
                        stalled.attempts,
                    )
                    broker.enqueue(Message.decode(stalled.message))
            except Exception as exc:
                # One line, not a traceback every second while the lanes' Redis is away.
                logger.warning(
                    "Lane maintenance failed (%s: %s); trying again in %.1f s.", type(exc).__name__, exc, interval
                )

    # -- each message ----------------------------------------------------------------------

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        lane = message.options.get("lane")
        if lane is None:
            key = message.options.get("partition_key")
            if key is not None and is_handler_actor(broker, message.actor_name):
                self.local.enter(f"{message.actor_name}:{key}", message.message_id)
            return
        if self.lanes is None:
            logger.error(
                "Message %s belongs to lane %s, but this worker has no Redis for lanes; running it "
                "unordered, and the lane will not move on. Configure the worker like the publisher.",
                message.message_id,
                lane,
            )
            return
        try:
            verdict, token = self._enter(broker, message, lane, self.lanes)
        except Exception as exc:
            raise LaneUnavailable(f"cannot reach the lanes' Redis: {exc}") from exc
        if verdict == "run":
            with self._lock:
                self._running[id(message)] = (lane, token, message.message_id)
            return
        # "stale": handled already (a second delivery); "busy": another delivery is running it;
        # "lost": the lease taken at fetch ran out before it started.
        logger.info("Skipping message %s of lane %s: %s.", message.message_id, lane, verdict)
        raise SkipMessage(verdict)

    def _enter(self, broker: Broker, message: MessageProxy, lane: str, lanes: LaneStore) -> tuple[str, str]:
        """The verdict on running ``message`` now, and its lease token: the one the consumer took
        at fetch (see :mod:`~dramatiq_eventbus.ordering.gate`), or one asked for now."""
        gate = _gate(broker)
        entered = gate.take_entered(message.options["redis_message_id"]) if gate is not None else None
        if entered is None or entered.lane != lane:
            token = new_token()
            return self._entering((lane, message.message_id, token)), token
        if entered.verdict == "run" and time.monotonic() - entered.at > lanes.lease_ms / 3000:
            # It waited in the prefetch: make sure of the lease before running.
            return ("run" if lanes.renew([(lane, entered.token)])[0] else "lost"), entered.token
        return entered.verdict, entered.token

    def before_enqueue(self, broker: Broker, message: Any, delay: int | None) -> None:
        # Retries sends a failed head again with a delay; remember when, so the lane can wait for it.
        if not delay:
            return
        with self._lock:
            running = any(message_id == message.message_id for _, _, message_id in self._running.values())
        if running:
            self._retry_at[message.message_id] = int(time.time() * 1000) + delay

    def after_process_message(
        self, broker: Broker, message: MessageProxy, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        self._finish(broker, message, retrying=exception is not None and not message.failed)

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        self._finish(broker, message, retrying=not message.failed)

    def _finish(self, broker: Broker, message: MessageProxy, *, retrying: bool) -> None:
        if message.options.get("partition_key") is None and "lane" not in message.options:
            return  # most messages: no lock to take
        with self._lock:
            entry = self._running.pop(id(message), None)
        if entry is None:
            key = message.options.get("partition_key")
            if "lane" not in message.options and key is not None:
                self.local.leave(f"{message.actor_name}:{key}", message.message_id)
            return
        assert self.lanes is not None
        lane, token, _ = entry
        retry_at = self._retry_at.pop(message.message_id, None)
        if message.failed:
            logger.warning("Lane %s moves on past dead-lettered message %s.", lane, message.message_id)
        if retrying and retry_at is None:
            retry_at = int(time.time() * 1000)
        if not retrying and not message.failed:
            head = HandledHead(lane, message.message_id, token)
            gate = _gate(broker)
            if gate is not None:
                # Finished by the consumer, with the delivery's ack and the other acks of its batch.
                gate.finish_with_ack(message.options["redis_message_id"], head)
            else:
                # Finished before its delivery is acked, or a worker killed in between would leave
                # the head to run twice; the next head is sent without waiting, since one lost with
                # a killed worker is only late: the sweep sends it.
                finished = self._finishing((head, message.queue_name))
                warn_if_lost(lane, message.message_id, finished.status)
                if finished.next_message is not None:
                    self._sending.submit((broker, finished.next_message))
            return
        finished = self.lanes.finish(
            lane, message.message_id, token, queue_name=message.queue_name, retry_at_ms=retry_at if retrying else None
        )
        warn_if_lost(lane, message.message_id, finished.status)
        if finished.next_message is not None:
            broker.enqueue(Message.decode(finished.next_message))

    def _lanes(self) -> LaneStore:
        assert self.lanes is not None, "lane calls are made only with lanes"
        return self.lanes


def _send_heads(batch: list[tuple[Broker, bytes]]) -> list[None]:
    """Send new lane heads, one batch for all the threads that have some."""
    enqueue_all(batch[0][0], [Message.decode(body) for _, body in batch])
    return [None] * len(batch)


def _log_lane_failure(exc: BaseException) -> None:
    logger.warning(
        "Could not send the next heads of lanes (%s: %s); the lanes' sweep will send them within lane_stall_seconds.",
        type(exc).__name__,
        exc,
    )


def _gate(broker: Broker) -> LaneGate | None:
    return broker.lane_gate if isinstance(broker, EventBusRedisBroker) else None
