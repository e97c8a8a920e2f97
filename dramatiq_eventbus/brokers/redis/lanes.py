"""Lanes kept in Redis: per-(handler, partition key) order that holds across a whole cluster.

The lane scripts are ``lua/lane_*.lua``; the keys are :class:`~.keys.LaneKeys`. When the
lanes live in the Redis of the broker itself, the scripts that make a new head also put it
straight on its broker queue (Dramatiq's keys: the id pushed on the queue's list, the body
in its messages hash, under the head's message id as its Redis id), and the bus's Redis
consumer can batch starting and finishing heads with its fetches and acks
(:class:`dramatiq_eventbus.ordering.LaneGate`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import redis
from dramatiq.common import current_millis
from dramatiq.message import Message

from ...ordering.lanes import (
    DEFAULT_LANE_PREFIX,
    DEFAULT_LEASE_SECONDS,
    DEFAULT_STALL_SECONDS,
    VERDICTS,
    Finished,
    FinishStatus,
    HandledHead,
    HeadState,
    LaneStatus,
    LaneSummary,
    Redispatch,
    Verdict,
)
from . import scripts
from .broker import with_redis_id
from .keys import LaneKeys, RedisKeys
from .scripts import ThreadConnections


class RedisLaneStore:
    """The lanes of one bus, in one Redis.

    Parameters:
      client(redis.Redis): The Redis that holds the lanes; with a Redis broker, its own.
      prefix(str): The prefix of every key (``configure(lane_prefix=...)``).
      lease_seconds(float): See :data:`DEFAULT_LEASE_SECONDS`.
      stall_seconds(float): See :data:`DEFAULT_STALL_SECONDS`.
      broker_keys(RedisKeys | None): When ``client`` is the Redis of a Dramatiq RedisBroker,
        that broker's keys: each new head then goes straight onto its broker queue from the
        script that makes it the head.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = DEFAULT_LANE_PREFIX,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        stall_seconds: float = DEFAULT_STALL_SECONDS,
        broker_keys: RedisKeys | None = None,
        connections: ThreadConnections | None = None,
    ) -> None:
        # redis-py types every reply as a union of its sync and async forms; the bus uses
        # the sync client only.
        self.client: Any = client
        self.prefix = prefix
        self.lease_ms = int(lease_seconds * 1000)
        self.stall_ms = int(stall_seconds * 1000)
        self.keys = LaneKeys(prefix)
        self.broker_keys = broker_keys
        connections = ThreadConnections(client) if connections is None else connections
        self._append = scripts.register(connections, "lane_append")
        self._enter = scripts.register(connections, "lane_enter")
        self._renew = scripts.register(connections, "lane_renew")
        self._finish = scripts.register(connections, "lane_finish")
        self._finish_many = scripts.register(connections, "lane_finish_many")
        self._finish_handled = scripts.register(connections, "lane_finish_handled")
        self._sweep = scripts.register(connections, "lane_sweep")

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = DEFAULT_LANE_PREFIX,
        lease_seconds: float,
        stall_seconds: float,
        broker: tuple[redis.Redis | None, RedisKeys | None] = (None, None),
    ) -> RedisLaneStore:
        """Lanes in the Redis at ``url``. ``broker`` is the broker's Redis and keys, if it has
        some: when ``url`` names that same database, new heads go straight onto its queues.

        Raises:
          ValueError: ``url`` is not a Redis URL.
        """
        client = redis.Redis.from_url(url)
        broker_client, broker_keys = broker
        same = broker_client is not None and same_database(client, broker_client)
        return cls(
            client,
            prefix=prefix,
            lease_seconds=lease_seconds,
            stall_seconds=stall_seconds,
            broker_keys=broker_keys if same else None,
        )

    @property
    def sends_heads(self) -> bool:
        """Whether the scripts put new heads on the broker's queues themselves."""
        return self.broker_keys is not None

    def as_enqueued(self, message: Message[Any]) -> Message[Any]:
        """``message`` as the lane scripts put it on its broker queue: under its message id as its Redis id."""
        return with_redis_id(message, message.message_id)

    def append(self, entries: Sequence[tuple[str, str, bytes, str]]) -> list[bool]:
        """Add ``(lane, message id, encoded message, queue name)`` entries in order, atomically,
        in one round trip.

        Returns, for each, whether it became its lane's head: then, unless :attr:`sends_heads`
        (it is on its broker queue already), it must be sent now.
        """
        now = current_millis()
        args: list[Any] = [self.prefix, now, now + self.stall_ms]
        for lane, message_id, body, queue_name in entries:
            args += (lane, message_id, body, self._broker_queue(queue_name))
        return [bool(is_head) for is_head in self._append(args=args)]

    def enter_many(self, entries: Sequence[tuple[str, str, str]]) -> list[Verdict]:
        """Try to start messages, each ``(lane, message id, token)``, in one round trip: for
        each, ``run`` (it is the head, now leased to the token), ``busy`` (another delivery
        of the head is running) or ``stale`` (not the head: handled already)."""
        now = current_millis()
        args: list[Any] = [self.prefix, now, now + self.lease_ms]
        for entry in entries:
            args += entry
        return [VERDICTS[verdict.decode()] for verdict in self._enter(args=args)]

    def lease_arguments(self, token: str) -> list[Any]:
        """The last arguments of the broker's fetch (``fetch.lua``), by which it leases the heads it
        takes to ``token`` followed by ``:`` and the head's place in the fetch."""
        return [self.prefix, current_millis() + self.lease_ms, token]

    def renew(self, leases: Sequence[tuple[str, str]]) -> list[bool]:
        """Extend ``(lane, token)`` leases; False for each one that was lost."""
        if not leases:
            return []
        args: list[Any] = [self.prefix, current_millis() + self.lease_ms]
        for lease in leases:
            args += lease
        return [bool(renewed) for renewed in self._renew(args=args)]

    def finish(
        self, lane: str, message_id: str, token: str, *, queue_name: str, retry_at_ms: int | None = None
    ) -> Finished:
        """The head was handled (or dead-lettered), or, with ``retry_at_ms``, will be retried then.

        ``queue_name`` is where the lane's next head goes.
        """
        now = current_millis()
        outcome, deadline = (
            ("done", now + self.stall_ms) if retry_at_ms is None else ("retry", retry_at_ms + self.stall_ms)
        )
        args: list[Any] = [self.prefix, lane, message_id, token, outcome, now, deadline, self._broker_queue(queue_name)]
        return _finished(self._finish(args=args))

    def finish_many(self, heads: Sequence[tuple[HandledHead, str]]) -> list[Finished]:
        """Finish handled heads, each ``(head, the queue its lane's next head goes to)``, in one
        round trip."""
        now = current_millis()
        args: list[Any] = [self.prefix, now, now + self.stall_ms]
        for head, queue_name in heads:
            args += (head.lane, head.message_id, head.token, self._broker_queue(queue_name))
        return [_finished(reply) for reply in self._finish_many(args=args)]

    def finish_handled(
        self, heads: Sequence[tuple[HandledHead, str]], *, queue_name: str, acks_key: str, other_acks: Sequence[str]
    ) -> list[FinishStatus]:
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
        now = current_millis()
        args: list[Any] = [self.prefix, now, now + self.stall_ms, self._broker_queue(queue_name), acks_key, len(heads)]
        for head, redis_id in heads:
            args += (head.lane, head.message_id, head.token, redis_id)
        args += other_acks
        return [_FINISH_STATUSES[status] for status in self._finish_handled(args=args).split()]

    def give_back(self, leases: Sequence[tuple[str, str, str]], *, queue_name: str) -> None:
        """Release ``(lane, message id, token)`` leases of heads that did not run: each head
        waits for its next delivery, as a head due for a retry does."""
        now = current_millis()
        for lane, message_id, token in leases:
            self.finish(lane, message_id, token, queue_name=queue_name, retry_at_ms=now)

    def _broker_queue(self, queue_name: str) -> str:
        """The broker's Redis key of ``queue_name``, or "" when the caller sends the heads."""
        return "" if self.broker_keys is None else self.broker_keys.queue(queue_name)

    def sweep(self, limit: int = 100) -> list[Redispatch]:
        """Take the heads of lanes whose time is up, to be sent again."""
        now = current_millis()
        flat = self._sweep(args=[self.prefix, now, limit, now + self.stall_ms])
        # Read back from Redis: a head's fields may have been written by hand (see lanes()).
        return [
            Redispatch(
                lane.decode("utf-8", "replace"),
                _state(state.decode("utf-8", "replace")),
                now - _number(since, now),
                _number(attempts, 0),
                body,
                int(skipped),
            )
            for lane, state, since, attempts, body, skipped in zip(*[iter(flat)] * 6, strict=True)
        ]

    def summary(self, *, max_lanes: int) -> LaneSummary:
        """How many lanes wait and how long the oldest head has, in two round trips.

        :meth:`lanes` costs two round trips per lane (measured on a local Redis: 0.46 s for
        1,000 lanes, 4.2 s for 10,000), too slow for a scrape. This counts the lanes (ZCARD),
        then reads, in one pipelined round trip, whether each of the ``max_lanes`` most due
        has events and since when its head waits (about 30 ms for 1,000, whatever the total).
        Beyond ``max_lanes``, the age is the oldest among those read (the lanes due first:
        heads waiting longest to start, stalled ones), and every other lane counts as waiting.

        Parameters:
          max_lanes(int): The most lanes looked at.
        """
        total = int(self.client.zcard(self.keys.lanes))
        names: list[bytes] = self.client.zrange(self.keys.lanes, 0, max_lanes - 1)
        pipe = self.client.pipeline(transaction=False)
        for lane in names:
            pipe.exists(self.keys.read_back(lane, "ids"))
            pipe.hget(self.keys.read_back(lane, "head"), "head_since")
        replies = pipe.execute() if names else []
        now = current_millis()
        empty, oldest_since = 0, now
        for has_ids, since in zip(replies[::2], replies[1::2], strict=True):
            if not has_ids:
                empty += 1  # a lane being emptied: lanes() leaves it out too
            elif since is not None:
                oldest_since = min(oldest_since, _number(since, now))
        return LaneSummary(max(total - empty, 0), max(now - oldest_since, 0) / 1000)

    def lanes(self, *, older_than_seconds: float = 0.0) -> list[LaneStatus]:
        """Every non-empty lane whose head has waited longer than ``older_than_seconds``, oldest first."""
        now = current_millis()
        found = []
        for raw in self.client.zrange(self.keys.lanes, 0, -1):
            # Read back from Redis, so possibly written by hand: names and values that are not
            # UTF-8 show replaced (the CLI escapes what it prints), numbers that are not numbers
            # as 0; the keys are addressed by the name's own bytes.
            pipe = self.client.pipeline(transaction=True)
            pipe.lindex(self.keys.read_back(raw, "ids"), 0)
            pipe.llen(self.keys.read_back(raw, "ids"))
            pipe.hgetall(self.keys.read_back(raw, "head"))
            head_id, pending, head = pipe.execute()
            if head_id is None:
                continue
            head = {key.decode("utf-8", "replace"): value for key, value in head.items()}
            age = (now - _number(head.get("head_since"), now)) / 1000
            if age < older_than_seconds:
                continue
            handler, _, key = raw.decode("utf-8", "replace").partition(":")
            event_type, event_id = self._head_event(raw, head_id)
            found.append(
                LaneStatus(
                    handler=handler,
                    partition_key=key,
                    state=_state(head.get("state", b"").decode("utf-8", "replace")),
                    head_message_id=head_id.decode("utf-8", "replace"),
                    event_type=event_type,
                    age_seconds=age,
                    attempts=_number(head.get("attempts"), 0),
                    pending=int(pending),
                    event_id=event_id,
                )
            )
        return sorted(found, key=lambda status: -status.age_seconds)

    def _head_event(self, lane: bytes, message_id: bytes) -> tuple[str, str]:
        """The head's event type and event id, as its stored message gives them (the CLI escapes them)."""
        body = self.client.hget(self.keys.read_back(lane, "msgs"), message_id)
        try:
            options: dict[str, Any] = json.loads(body or b"{}").get("options", {})
            return str(options.get("event_type", "unknown")), str(options.get("event_id", "unknown"))
        except (ValueError, AttributeError):
            return "unknown", "unknown"


#: The states the lane scripts write.
_STATES = frozenset(state.value for state in HeadState)
#: FinishStatus by the word lane_finish_handled.lua replies with; a dict lookup, where the
#: Enum's own lookup costs a call per head.
_FINISH_STATUSES = {status.value.encode(): status for status in FinishStatus}


def _number(value: bytes | None, default: int) -> int:
    """A whole number the lane scripts wrote, or ``default`` for none or anything else."""
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def _state(found: str) -> str:
    """A head's state as the lane scripts write it; anything else (a key written by hand) reads
    "unknown", so that a log line or the CLI never shows what Redis held."""
    return found if found in _STATES else "unknown"


def _finished(reply: Sequence[bytes]) -> Finished:
    """What lane_finish.lua replied."""
    status = FinishStatus(reply[0].decode())
    # A "next" without a body: the new head's message is not stored; the sweep drops it.
    return Finished(status, reply[1] if status is FinishStatus.NEXT and len(reply) > 1 else None)


def same_database(a: redis.Redis, b: redis.Redis) -> bool:
    """Whether two clients reach the same Redis database (same address, or socket, and db)."""
    fields = ("host", "port", "path", "db")
    first, second = a.connection_pool.connection_kwargs, b.connection_pool.connection_kwargs
    return a is b or all(first.get(name) == second.get(name) for name in fields)
