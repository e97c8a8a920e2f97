"""Lane coordinators: how a worker runs each lane's events one at a time, in publish order.

:class:`LaneCoordinator` is the one interface the ordering middleware talks to. Three
implementations, chosen by configure() from what the bus has:

- :class:`LocalCoordinator`: no Redis for lanes; order holds within each process only
  (the reference's OSS mode);
- :class:`SharedCallsCoordinator`: lanes in a Redis the consumer does not batch for (a
  Dramatiq broker made elsewhere, lanes in a Redis apart from a Redis broker's); the
  worker threads share their lane round trips (:mod:`.group_call`);
- :class:`GatedCoordinator`: lanes with a bus's consumer (Redis, with the lanes in the
  broker's own Redis; RabbitMQ), which takes the leases of a whole fetch at once and
  finishes handled heads with their acks (:mod:`.gate`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from dramatiq.broker import Broker, MessageProxy
from dramatiq.common import current_millis
from dramatiq.message import Message
from dramatiq.middleware import MiddlewareError, SkipMessage

from ..actors import is_handler_actor
from ..signing import Signer
from ..untrusted import described, shown
from .gate import LaneGate, new_token
from .group_call import GroupCall
from .lanes import Finished, HandledHead, LaneStore, Verdict, warn_if_lost

logger = logging.getLogger(__name__)

#: Sends a batch of messages to the broker (the broker's ``enqueue_many``, or one by one).
Send = Callable[[Sequence[Message[Any]]], None]


class LaneUnavailable(MiddlewareError):
    """The lane store could not be asked whether a message may run.

    A MiddlewareError, so that Dramatiq fails the message (and retries it) instead of
    running it outside its lane's order.
    """


class LaneCoordinator(Protocol):
    """Starts and finishes the messages of one worker process that carry a lane."""

    @property
    def store(self) -> LaneStore | None:
        """The store of cluster-wide lanes, or None when order holds within this process only."""

    def worker_booted(self) -> None:
        """The worker started: say what order it keeps, where that is worth saying."""

    def authenticated_by(self, signer: Signer | None) -> None:
        """The keys that verify every message of the bus's handlers before :meth:`start` sees
        it (the authentication middleware runs first); None when the worker has no key."""

    def start(self, broker: Broker, message: MessageProxy, lane: str) -> None:
        """Let ``message`` of ``lane`` run now, or wait until it may.

        Raises:
          SkipMessage: It must not run now (handled already, or another delivery runs it).
          LaneUnavailable: The lanes cannot be reached; Dramatiq retries the message.
        """

    def retry_scheduled(self, message_id: str, delay_ms: int) -> None:
        """Retries will send the running ``message_id`` again after ``delay_ms``."""

    def finish(self, broker: Broker, message: MessageProxy, lane: str, *, retrying: bool) -> None:
        """``message`` was handled, dead-lettered (``message.failed``), or will be retried.

        A message dead-lettered without :meth:`start` having let it run (a middleware before
        the ordering failed it: AgeLimit's max_age, or the lanes unreachable on every attempt)
        moves its lane on too, when it is the lane's head.
        """

    def leases(self) -> list[tuple[str, str]]:
        """The ``(lane, token)`` leases this process holds, to renew."""


class LocalCoordinator:
    """No cluster-wide lanes: order holds within each worker process only.

    Publishers without lanes send partitioned messages without a lane, and those take
    turns per lane in each process (:class:`.local.LocalLanes`, in the middleware). A
    message that does carry a lane was published by a bus with lanes: it runs unordered,
    with an error that says to configure the worker like the publisher.

    Parameters:
      warns(bool): Say at worker start that order holds within each process only. Not for
        a StubBroker: its one process is all the cluster there is, so the warning would
        only be noise in every test and demo.
    """

    store: LaneStore | None = None

    def __init__(self, *, warns: bool = True) -> None:
        self.warns = warns

    def worker_booted(self) -> None:
        if not self.warns:
            return
        logger.warning(
            "Partitioned events are ordered only within each worker process: give the bus a Redis "
            "(a Redis broker, configure(redis_url=...) or EVENTBUS_REDIS_URL) for order across the cluster."
        )

    def authenticated_by(self, signer: Signer | None) -> None:
        pass  # no lane to take over: a laned message runs unordered here anyway

    def start(self, broker: Broker, message: MessageProxy, lane: str) -> None:
        logger.error(
            "Message %s belongs to lane %s, but this worker has no Redis for lanes; running it "
            "unordered, and the lane will not move on. Configure the worker like the publisher.",
            shown(message.message_id),
            shown(lane),
        )

    def retry_scheduled(self, message_id: str, delay_ms: int) -> None:
        pass  # a retry goes to the back of the queue, as in the reference

    def finish(self, broker: Broker, message: MessageProxy, lane: str, *, retrying: bool) -> None:
        pass

    def leases(self) -> list[tuple[str, str]]:
        return []


class SharedCallsCoordinator:
    """Cluster-wide lanes, entered and finished by the worker threads, who share the round trips.

    Only a lane's head is ever in the broker: this runs it under a lease, and when it is
    handled or dead-lettered, sends the lane's next event. A retry keeps the head, so the
    later events wait in the store without running, spending no retries and holding no
    thread.

    Parameters:
      store(LaneStore): The lanes.
      send(Send): Sends new heads to the broker, in batches.
    """

    def __init__(self, store: LaneStore, send: Send) -> None:
        self.store = store
        self._send = send
        self._signer: Signer | None = None
        self._lock = threading.Lock()
        # Per delivery (two deliveries of one message may meet in one process): the running
        # heads' lane, lease token and message id.
        self._running: dict[int, tuple[str, str, str]] = {}
        self._retry_at: dict[str, int] = {}  # message id -> when Retries will send it again (ms)
        # Only the sends are not waited for, so only their failures need reporting.
        self._entering: GroupCall[tuple[str, str, str], Verdict] = GroupCall(
            store.enter_many, on_error=_log_lane_failure
        )
        self._finishing: GroupCall[tuple[HandledHead, str], Finished] = GroupCall(
            store.finish_many, on_error=_log_lane_failure
        )
        self._sending: GroupCall[bytes, None] = GroupCall(self._send_heads, on_error=_log_lane_failure)

    def worker_booted(self) -> None:
        pass

    def authenticated_by(self, signer: Signer | None) -> None:
        self._signer = signer

    def start(self, broker: Broker, message: MessageProxy, lane: str) -> None:
        try:
            verdict, token = self._enter(message, lane)
        except Exception as exc:
            raise LaneUnavailable(f"cannot reach the lanes' Redis: {exc}") from exc
        if verdict is Verdict.RUN:
            with self._lock:
                self._running[id(message)] = (lane, token, message.message_id)
            return
        self._log_skip(broker, message, lane, verdict)
        raise SkipMessage(str(verdict))

    def _log_skip(self, broker: Broker, message: MessageProxy, lane: str, verdict: Verdict) -> None:
        """Say why a delivery of ``lane`` does not run: at INFO when it is a duplicate, at WARNING
        when it may be the real head that a forged message with its id ran in place of."""
        args = (shown(message.message_id), shown(lane), verdict)
        # A verified message under an id that the lane handled or runs is a duplicate (the
        # signature covers the id), and a lease that ran out in the prefetch is ours. Without a
        # key, a forgery with the head's id runs as the head, and this skip of the real head is
        # the only sign of it. Duplicates come only from a worker killed or a connection lost
        # between handling and acknowledging, or from a re-send by the sweep (which warns of
        # it): rare, so warning for them too adds little noise.
        if verdict is Verdict.LOST or (self._signer is not None and is_handler_actor(broker, message.actor_name)):
            logger.info("Skipping message %s of lane %s: %s.", *args)
            return
        logger.warning(
            "Skipping message %s of lane %s: %s. This worker has no secret key, so a duplicate delivery cannot "
            "be told from a forged message carrying the same id: if this message never ran, a forgery ran in "
            "its place. Configure secret_key to refuse forged messages.",
            *args,
        )

    def _enter(self, message: MessageProxy, lane: str) -> tuple[Verdict, str]:
        """The verdict on running ``message`` now, and its lease token."""
        token = new_token()
        return self._entering((lane, message.message_id, token)), token

    def retry_scheduled(self, message_id: str, delay_ms: int) -> None:
        with self._lock:
            running = any(running_id == message_id for _, _, running_id in self._running.values())
        if running:
            self._retry_at[message_id] = current_millis() + delay_ms

    def finish(self, broker: Broker, message: MessageProxy, lane: str, *, retrying: bool) -> None:
        with self._lock:
            entry = self._running.pop(id(message), None)
        if entry is None:
            if message.failed and not retrying:
                self._finish_unstarted(broker, message, lane)
            return
        _, token, _ = entry
        retry_at = self._retry_at.pop(message.message_id, None)
        if message.failed:
            logger.warning(
                "Lane %s moves on past dead-lettered message %s (event %s).",
                shown(lane),
                shown(message.message_id),
                shown(message.options.get("event_id")),
            )
        elif not retrying:
            self._finish_handled(message, HandledHead(lane, message.message_id, token))
            return
        if retrying and retry_at is None:
            retry_at = current_millis()
        finished = self.store.finish(
            lane, message.message_id, token, queue_name=message.queue_name, retry_at_ms=retry_at if retrying else None
        )
        warn_if_lost(lane, message.message_id, finished.status)
        if finished.next_message is not None:
            broker.enqueue(Message.decode(finished.next_message))

    def _finish_unstarted(self, broker: Broker, message: MessageProxy, lane: str) -> None:
        """Move ``lane`` on past ``message``, dead-lettered before :meth:`start` saw it, if it is the head.

        Dramatiq's AgeLimit runs before the ordering: it fails and skips a head past its max_age,
        which then never entered its lane, and nothing finished it. The lanes' sweep sent the head
        again every lane_stall_seconds, AgeLimit skipped it again (its timestamp travels with
        it), and the lane's later events never ran. Such a head is dead-lettered as surely as one
        that failed while running, so its lane moves on the same way: the lease is taken now, as
        :meth:`start` would, and the head finished at once. A message that is not the head (a
        second delivery), or whose head another delivery holds, leaves the lane alone.
        """
        signer = self._signer
        if signer is not None and is_handler_actor(broker, message.actor_name) and signer.problem(message) is not None:
            # Refused by the keys (and so failed and skipped too): a forgery carrying the head's id
            # must not move the lane past the real head.
            return
        try:
            verdict, token = self._enter(message, lane)
            if verdict is not Verdict.RUN:
                return
            finished = self.store.finish(lane, message.message_id, token, queue_name=message.queue_name)
        except Exception as exc:
            # Dramatiq would log a traceback for an after-hook that raises: say what it means instead.
            logger.warning(
                "Could not move lane %s on past message %s, dead-lettered before it started (%s); the lanes' "
                "sweep sends it again within lane_stall_seconds.",
                shown(lane),
                shown(message.message_id),
                described(exc),
            )
            return
        logger.warning(
            "Lane %s moves on past message %s (event %s), dead-lettered before it started (e.g. past its max_age).",
            shown(lane),
            shown(message.message_id),
            shown(message.options.get("event_id")),
        )
        warn_if_lost(lane, message.message_id, finished.status)
        if finished.next_message is not None:
            try:
                broker.enqueue(Message.decode(finished.next_message))
            except Exception as exc:
                _log_lane_failure(exc)

    def _finish_handled(self, message: MessageProxy, head: HandledHead) -> None:
        # Finished before its delivery is acked, or a worker killed in between would leave the
        # head to run twice; the next head is sent without waiting, since one lost with a
        # killed worker is only late: the sweep sends it.
        finished = self._finishing((head, message.queue_name))
        warn_if_lost(head.lane, head.message_id, finished.status)
        if finished.next_message is not None:
            self._sending.submit(finished.next_message)

    def _send_heads(self, bodies: list[bytes]) -> list[None]:
        """Send new lane heads, one batch for all the threads that have some."""
        self._send([Message.decode(body) for body in bodies])
        return [None] * len(bodies)

    def leases(self) -> list[tuple[str, str]]:
        with self._lock:
            return [(lane, token) for lane, token, _ in self._running.values()]


class GatedCoordinator(SharedCallsCoordinator):
    """Cluster-wide lanes, entered and finished by the bus's consumer per batch.

    The consumer took the lease when it fetched the message, and finishes the head with
    its ack; this uses the verdict and hands the handled head over. A delivery the
    consumer did not enter (fetched before the gate was set, or while the lanes' Redis
    failed) is entered as by :class:`SharedCallsCoordinator`.

    Parameters:
      gate(LaneGate): The consumer's hook, holding verdicts and handled heads.
      send(Send): Sends new heads to the broker, in batches.
    """

    def __init__(self, gate: LaneGate, send: Send) -> None:
        super().__init__(gate.lanes, send)
        self.gate = gate

    def authenticated_by(self, signer: Signer | None) -> None:
        super().authenticated_by(signer)
        self.gate.signer = signer  # a forged message takes no lease at fetch either

    def _enter(self, message: MessageProxy, lane: str) -> tuple[Verdict, str]:
        entered = self.gate.take_entered(message)
        if entered is None or entered.lane != lane:
            return super()._enter(message, lane)
        if entered.verdict is Verdict.RUN and time.monotonic() - entered.at > self.store.lease_ms / 3000:
            # It waited in the prefetch: make sure of the lease before running.
            return (Verdict.RUN if self.store.renew([(lane, entered.token)])[0] else Verdict.LOST), entered.token
        return entered.verdict, entered.token

    def _finish_handled(self, message: MessageProxy, head: HandledHead) -> None:
        # Finished by the consumer, with the delivery's ack and the other acks of its batch.
        self.gate.finish_with_ack(message, head)

    def leases(self) -> list[tuple[str, str]]:
        return super().leases() + self.gate.waiting_leases()


def _log_lane_failure(exc: BaseException) -> None:
    logger.warning(
        "Could not send the next heads of lanes (%s); the lanes' sweep will send them within lane_stall_seconds.",
        described(exc),
    )
