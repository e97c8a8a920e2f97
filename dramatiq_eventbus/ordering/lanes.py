"""Lanes in Redis: per-(handler, partition key) order that holds across a whole cluster."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from . import scripts

logger = logging.getLogger("dramatiq_eventbus.ordering")

#: How long a running head's lease lasts without renewal; a worker renews every third of it.
DEFAULT_LEASE_SECONDS = 15.0
#: How long a head may wait to be started (or to be retried after its due time) before it
#: is sent again: the bound on a lane stalled by a lost message.
DEFAULT_STALL_SECONDS = 60.0


def lane_name(actor_name: str, partition_key: str) -> str:
    """One lane per handler and key: a retrying handler never blocks another handler's lane."""
    return f"{actor_name}:{partition_key}"


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Finished:
    """What finishing a lane's head led to.

    Parameters:
      status(str): ``next`` (a new head to send), ``sent`` (a new head, already on its
        broker queue), ``idle`` (the lane is empty),
        ``retrying`` (the head waits for its retry), ``gone`` (the head had already moved
        on) or ``lost`` (the lease had expired and another delivery holds the head).
      next_message(bytes | None): The new head's encoded message, for ``next``.
    """

    status: str
    next_message: bytes | None = None

    @classmethod
    def from_reply(cls, reply: Sequence[bytes]) -> Finished:
        """What the FINISH script replied."""
        status = reply[0].decode()
        return cls(status, reply[1] if status == "next" else None)


@dataclass(frozen=True)
class Redispatch:
    """A head the sweeper sends again because its lane stopped moving.

    Parameters:
      lane(str): The lane.
      state(str): What the head was doing: dispatched, running or retrying.
      stalled_ms(int): How long it had been in that state.
      attempts(int): How many times it had been started.
      message(bytes): The head's encoded message.
    """

    lane: str
    state: str
    stalled_ms: int
    attempts: int
    message: bytes


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
    """

    handler: str
    partition_key: str
    state: str
    head_message_id: str
    event_type: str
    age_seconds: float
    attempts: int
    pending: int


@dataclass(frozen=True)
class HandledHead:
    """A lane's head that was handled, to be finished along with its delivery's ack.

    Parameters:
      lane(str): Its lane.
      message_id(str): Its message id.
      token(str): The owner token of the lease it ran under.
    """

    lane: str
    message_id: str
    token: str


def warn_if_lost(lane: str, message_id: str, status: str) -> None:
    """The one line that says a head ran without its lease to the end."""
    if status == "lost":
        logger.warning("Lane %s: the lease on %s expired while it ran.", lane, message_id)


class LaneStore:
    """The lanes of one bus, in one Redis.

    Parameters:
      client(redis.Redis): The Redis that holds the lanes; with a Redis broker, its own.
      prefix(str): The prefix of every key.
      lease_seconds(float): See :data:`DEFAULT_LEASE_SECONDS`.
      stall_seconds(float): See :data:`DEFAULT_STALL_SECONDS`.
      broker_namespace(str | None): When ``client`` is the Redis of a Dramatiq RedisBroker,
        that broker's namespace: each new head then goes straight onto its broker queue
        from the script that makes it the head (see :mod:`~dramatiq_eventbus.ordering.scripts`).
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "eventbus",
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        stall_seconds: float = DEFAULT_STALL_SECONDS,
        broker_namespace: str | None = None,
    ) -> None:
        # redis-py types every reply as a union of its sync and async forms; the bus uses
        # the sync client only.
        self.client: Any = client
        self.prefix = prefix
        self.lease_ms = int(lease_seconds * 1000)
        self.stall_ms = int(stall_seconds * 1000)
        self.broker_namespace = broker_namespace
        self._append = client.register_script(scripts.APPEND)
        self._enter = client.register_script(scripts.ENTER)
        self._renew = client.register_script(scripts.RENEW)
        self._finish = client.register_script(scripts.FINISH)
        self._finish_many = client.register_script(scripts.FINISH_MANY)
        self._finish_handled = client.register_script(scripts.FINISH_HANDLED)
        self._sweep = client.register_script(scripts.SWEEP)

    @property
    def sends_heads(self) -> bool:
        """Whether the scripts put new heads on the broker's queues themselves."""
        return self.broker_namespace is not None

    def append(self, entries: Sequence[tuple[str, str, bytes, str]]) -> list[bool]:
        """Add ``(lane, message id, encoded message, queue name)`` entries in order, atomically,
        in one round trip.

        Returns, for each, whether it became its lane's head: then, unless :attr:`sends_heads`
        (it is on its broker queue already), it must be sent now.
        """
        now = _now_ms()
        args: list[Any] = [self.prefix, now, now + self.stall_ms]
        for lane, message_id, body, queue_name in entries:
            args += (lane, message_id, body, self._broker_queue(queue_name))
        return [bool(is_head) for is_head in self._append(args=args)]

    def enter_many(self, entries: Sequence[tuple[str, str, str]]) -> list[str]:
        """Try to start messages, each ``(lane, message id, token)``, in one round trip: for
        each, ``run`` (it is the head, now leased to the token), ``busy`` (another delivery
        of the head is running) or ``stale`` (not the head: handled already)."""
        now = _now_ms()
        args: list[Any] = [self.prefix, now, now + self.lease_ms]
        for entry in entries:
            args += entry
        return [verdict.decode() for verdict in self._enter(args=args)]

    def renew(self, leases: Sequence[tuple[str, str]]) -> list[bool]:
        """Extend ``(lane, token)`` leases; False for each one that was lost."""
        if not leases:
            return []
        args: list[Any] = [self.prefix, _now_ms() + self.lease_ms]
        for lease in leases:
            args += lease
        return [bool(renewed) for renewed in self._renew(args=args)]

    def finish(
        self, lane: str, message_id: str, token: str, *, queue_name: str, retry_at_ms: int | None = None
    ) -> Finished:
        """The head was handled (or dead-lettered), or, with ``retry_at_ms``, will be retried then.

        ``queue_name`` is where the lane's next head goes.
        """
        now = _now_ms()
        outcome, deadline = (
            ("done", now + self.stall_ms) if retry_at_ms is None else ("retry", retry_at_ms + self.stall_ms)
        )
        args: list[Any] = [self.prefix, lane, message_id, token, outcome, now, deadline, self._broker_queue(queue_name)]
        return Finished.from_reply(self._finish(args=args))

    def finish_many(self, heads: Sequence[tuple[HandledHead, str]]) -> list[Finished]:
        """Finish handled heads, each ``(head, the queue its lane's next head goes to)``, in one
        round trip."""
        now = _now_ms()
        args: list[Any] = [self.prefix, now, now + self.stall_ms]
        for head, queue_name in heads:
            args += (head.lane, head.message_id, head.token, self._broker_queue(queue_name))
        return [Finished.from_reply(reply) for reply in self._finish_many(args=args)]

    def finish_handled(
        self, heads: Sequence[tuple[HandledHead, str]], *, queue_name: str, acks_key: str, other_acks: Sequence[str]
    ) -> list[str]:
        """Finish handled heads and acknowledge their deliveries, with ``other_acks``, in one
        round trip; the lanes must be in the broker's Redis (:attr:`sends_heads`).

        ``heads`` are ``(head, its delivery's Redis id)``; ``queue_name`` is the broker queue
        they came from (where the next heads go), and ``acks_key`` the ack set of the worker
        that fetched them. Returns, for each head, ``gone``, ``lost``, ``idle`` or ``sent``.
        """
        if not self.sends_heads:
            raise ValueError(
                "a delivery can be acknowledged with its lane only when the lanes are in the broker's Redis"
            )
        now = _now_ms()
        args: list[Any] = [self.prefix, now, now + self.stall_ms, self._broker_queue(queue_name), acks_key, len(heads)]
        for head, redis_id in heads:
            args += (head.lane, head.message_id, head.token, redis_id)
        args += other_acks
        return [status.decode() for status in self._finish_handled(args=args)]

    def give_back(self, leases: Sequence[tuple[str, str, str]], *, queue_name: str) -> None:
        """Release ``(lane, message id, token)`` leases of heads that did not run: each head
        waits for its next delivery, as a head due for a retry does."""
        now = _now_ms()
        for lane, message_id, token in leases:
            self.finish(lane, message_id, token, queue_name=queue_name, retry_at_ms=now)

    def _broker_queue(self, queue_name: str) -> str:
        """The broker's Redis key of ``queue_name``, or "" when the caller sends the heads."""
        return "" if self.broker_namespace is None else f"{self.broker_namespace}:{queue_name}"

    def sweep(self, limit: int = 100) -> list[Redispatch]:
        """Take the heads of lanes whose time is up, to be sent again."""
        now = _now_ms()
        flat = self._sweep(args=[self.prefix, now, limit, now + self.stall_ms])
        return [
            Redispatch(lane.decode(), state.decode(), now - int(since), int(attempts), body)
            for lane, state, since, attempts, body in zip(*[iter(flat)] * 5, strict=True)
        ]

    def lanes(self, *, older_than_seconds: float = 0.0) -> list[LaneStatus]:
        """Every non-empty lane whose head has waited longer than ``older_than_seconds``, oldest first."""
        now = _now_ms()
        found = []
        for raw in self.client.zrange(f"{self.prefix}:lanes", 0, -1):
            lane = raw.decode()
            base = f"{self.prefix}:lane:{lane}"
            pipe = self.client.pipeline(transaction=True)
            pipe.lindex(f"{base}:ids", 0)
            pipe.llen(f"{base}:ids")
            pipe.hgetall(f"{base}:head")
            head_id, pending, head = pipe.execute()
            if head_id is None:
                continue
            head = {key.decode(): value.decode() for key, value in head.items()}
            age = (now - int(head.get("head_since", now))) / 1000
            if age < older_than_seconds:
                continue
            handler, _, key = lane.partition(":")
            found.append(
                LaneStatus(
                    handler=handler,
                    partition_key=key,
                    state=head.get("state", "unknown"),
                    head_message_id=head_id.decode(),
                    event_type=self._event_type(base, head_id),
                    age_seconds=age,
                    attempts=int(head.get("attempts", 0)),
                    pending=int(pending),
                )
            )
        return sorted(found, key=lambda status: -status.age_seconds)

    def _event_type(self, base: str, message_id: bytes) -> str:
        body = self.client.hget(f"{base}:msgs", message_id)
        try:
            options: dict[str, Any] = json.loads(body or b"{}").get("options", {})
            return str(options.get("event_type", "unknown"))
        except ValueError:
            return "unknown"
