"""Lanes: what per-(handler, partition key) order is made of, and the store that keeps them.

A lane is one (handler, partition key). Its events wait in a :class:`LaneStore` in
publish order; only its head is ever in the broker. The worker that runs the head holds
a lease on it, renewed while it runs; when the head is handled or dead-lettered, the
lane's next event becomes the head and is sent. The store's one implementation keeps
lanes in Redis (:class:`dramatiq_eventbus.brokers.redis.RedisLaneStore`), so the order
holds across a whole cluster.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, NamedTuple, Protocol

from dramatiq.message import Message

from ..untrusted import shown

logger = logging.getLogger(__name__)

#: How long a running head's lease lasts without renewal; a worker renews every third of it.
DEFAULT_LEASE_SECONDS = 15.0
#: How long a head may wait to be started (or to be retried after its due time) before it
#: is sent again: the bound on a lane stalled by a lost message.
DEFAULT_STALL_SECONDS = 60.0
#: The prefix of the lanes' keys in Redis (``configure(lane_prefix=...)``).
DEFAULT_LANE_PREFIX = "eventbus"


def lane_name(actor_name: str, partition_key: str) -> str:
    """One lane per handler and key: a retrying handler never blocks another handler's lane."""
    return f"{actor_name}:{partition_key}"


class _Word(str, Enum):
    """An enum whose members are the words the lane scripts store and reply."""

    def __str__(self) -> str:
        return str(self.value)


class HeadState(_Word):
    """What a lane's head is doing."""

    DISPATCHED = "dispatched"  # sent to the broker, not started yet
    RUNNING = "running"  # a worker holds its lease
    RETRYING = "retrying"  # failed, waiting for its retry


class Verdict(_Word):
    """Whether a delivery may run now."""

    RUN = "run"  # it is its lane's head, now leased to this delivery
    BUSY = "busy"  # another delivery of the head holds the lease
    STALE = "stale"  # not the head: handled already (a second delivery)
    LOST = "lost"  # its lease, taken at fetch, ran out before it started


#: Verdict by its word: a dict lookup, where the Enum's own lookup costs a call per delivery.
VERDICTS = {verdict.value: verdict for verdict in Verdict}


class FinishStatus(_Word):
    """What finishing a lane's head led to."""

    NEXT = "next"  # a new head, for the caller to send
    SENT = "sent"  # a new head, already on its broker queue
    IDLE = "idle"  # the lane is empty
    RETRYING = "retrying"  # the head waits for its retry
    GONE = "gone"  # the head had already moved on
    LOST = "lost"  # the lease had expired and another delivery holds the head


@dataclass(frozen=True)
class Finished:
    """What finishing a lane's head led to.

    Parameters:
      status(FinishStatus): See :class:`FinishStatus`.
      next_message(bytes | None): The new head's encoded message, for ``NEXT``.
    """

    status: FinishStatus
    next_message: bytes | None = None


@dataclass(frozen=True)
class Redispatch:
    """A head the sweep sends again because its lane stopped moving.

    Parameters:
      lane(str): The lane.
      state(str): What the head was doing: dispatched, running or retrying.
      stalled_ms(int): How long it had been in that state.
      attempts(int): How many times it had been started.
      message(bytes | None): The head's encoded message; None when the lane emptied after
        ``skipped``.
      skipped(int): Heads dropped before it, whose messages were not stored (evicted from
        Redis, or a lane written by hand): they can never run.
    """

    lane: str
    state: str
    stalled_ms: int
    attempts: int
    message: bytes | None
    skipped: int = 0


@dataclass(frozen=True)
class LaneStatus:
    """One lane as ``eventbus lanes`` shows it.

    Parameters:
      handler(str): The handler's actor name.
      partition_key(str): The key.
      state(str): The head's state: dispatched, running or retrying.
      head_message_id(str): The head's Dramatiq message id.
      event_type(str): The head event's type name.
      age_seconds(float): How long the head has been the head.
      attempts(int): How many times the head has been started.
      pending(int): Events in the lane, the head included.
      event_id(str): The head event's ``event_id`` (``"unknown"`` for a message without one).
    """

    handler: str
    partition_key: str
    state: str
    head_message_id: str
    event_type: str
    age_seconds: float
    attempts: int
    pending: int
    event_id: str = "unknown"


class HandledHead(NamedTuple):
    """A lane's head that was handled, to be finished (a named tuple: one is made per handled
    head, in half the time a frozen dataclass takes: 220 against 430 ns).

    Parameters:
      lane(str): Its lane.
      message_id(str): Its message id.
      token(str): The owner token of the lease it ran under.
    """

    lane: str
    message_id: str
    token: str


def warn_if_lost(lane: str, message_id: str, status: FinishStatus) -> None:
    """The one line that says a head ran without its lease to the end."""
    if status is FinishStatus.LOST:
        logger.warning("Lane %s: the lease on %s expired while it ran.", shown(lane), shown(message_id))


class LeasedAtFetch(NamedTuple):
    """The lease a broker's fetch took (or tried to take) of a lane head it fetched.

    Parameters:
      lane(str): The head's lane, as the lane scripts recorded it when they put it on the queue.
      verdict(str): ``run`` (the lease is the fetch's), ``busy`` or ``stale``.
      token(str): The lease's owner token.
    """

    lane: str
    verdict: str
    token: str


class LaneStore(Protocol):
    """Where lanes are kept; each call is atomic, and each batch one round trip."""

    #: How long a lease lasts without renewal, and how long a head may stall, in ms.
    lease_ms: int
    stall_ms: int

    @property
    def sends_heads(self) -> bool:
        """Whether the store puts new heads on their broker queues itself."""

    def as_enqueued(self, message: Message[Any]) -> Message[Any]:
        """``message`` as the store puts it on its broker queue, when :attr:`sends_heads`."""

    def append(self, entries: Sequence[tuple[str, str, bytes, str]]) -> list[bool]:
        """Add ``(lane, message id, encoded message, queue name)`` entries in order; for each,
        whether it became its lane's head (to be sent now, unless :attr:`sends_heads`)."""

    def enter_many(self, entries: Sequence[tuple[str, str, str]]) -> list[Verdict]:
        """Try to start ``(lane, message id, token)`` deliveries."""

    def renew(self, leases: Sequence[tuple[str, str]]) -> list[bool]:
        """Extend ``(lane, token)`` leases; False for each one that was lost."""

    def finish(
        self, lane: str, message_id: str, token: str, *, queue_name: str, retry_at_ms: int | None = None
    ) -> Finished:
        """The head was handled (or dead-lettered), or, with ``retry_at_ms``, will be retried then;
        ``queue_name`` is where the lane's next head goes."""

    def finish_many(self, heads: Sequence[tuple[HandledHead, str]]) -> list[Finished]:
        """Finish handled heads, each ``(head, the queue its lane's next head goes to)``."""

    def give_back(self, leases: Sequence[tuple[str, str, str]], *, queue_name: str) -> None:
        """Release ``(lane, message id, token)`` leases of heads that did not run."""

    def sweep(self, limit: int = 100) -> list[Redispatch]:
        """Take the heads of lanes whose time is up, to be sent again."""

    def lanes(self, *, older_than_seconds: float = 0.0) -> list[LaneStatus]:
        """Every non-empty lane whose head has waited longer than ``older_than_seconds``, oldest first."""

    def summary(self, *, max_lanes: int) -> LaneSummary:
        """How many lanes wait and how long the oldest head has, at a bounded cost (for metrics):
        at most ``max_lanes`` lanes are looked at, those due first."""


class LaneSummary(NamedTuple):
    """What :meth:`LaneStore.summary` reads.

    Attributes:
      waiting(int): Lanes with events not handled yet.
      oldest_head_age_seconds(float): How long the oldest head of the lanes looked at has been
        its lane's head; 0 without lanes.
    """

    waiting: int
    oldest_head_age_seconds: float


class AckingLaneStore(LaneStore, Protocol):
    """A store in the broker's own Redis, which can lease heads as they are fetched, and finish
    heads and acknowledge deliveries at once."""

    def lease_arguments(self, token: str) -> list[Any]:
        """What the broker's fetch needs to lease the heads it takes to ``token`` (and its
        suffixes ``:1``, ``:2``...): see ``fetch.lua``."""

    def finish_handled(
        self, heads: Sequence[tuple[HandledHead, str]], *, queue_name: str, acks_key: str, other_acks: Sequence[str]
    ) -> list[FinishStatus]:
        """Finish ``(head, its delivery's Redis id)`` and acknowledge those deliveries and
        ``other_acks`` of ``queue_name`` from the ack set ``acks_key``, in one round trip."""
