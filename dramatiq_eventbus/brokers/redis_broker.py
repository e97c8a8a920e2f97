"""The Redis broker the bus makes from a URL: Dramatiq's, with a consumer that strands nothing.

Dramatiq's Redis consumer fetches a batch of bodies without their Redis ids and decodes
them one by one; one body it cannot decode raises out of the consumer, and the rest of
the batch stays in the worker's ack set until that worker dies and its heartbeat times
out. Recovery of a dead worker's messages also waits for "queue maintenance", which
runs on about one Redis call in a thousand, so on a quiet queue it can take minutes
after the heartbeat timeout.

:class:`EventBusRedisBroker` keeps Dramatiq's keys, scripts and semantics, and changes
its consumer only:

- it fetches each body with its Redis id, so a body that cannot be run is dead-lettered
  (moved to ``<queue>.XQ`` by Dramatiq's own ``nack``) with one log line, and the rest
  of the batch goes on;
- it heartbeats and runs queue maintenance on a clock, every quarter of the heartbeat
  timeout (0.25 s to 15 s), so a dead worker's messages return to their queue within
  ``heartbeat_timeout`` plus that interval, and a worker whose threads are all busy on
  long handlers still heartbeats;
- it knows which of the ids in its worker's ack set the process still holds in memory,
  and puts back the others: those Dramatiq drops when a connection error restarts a
  consumer (its fetched batch, its delayed retries), and those of a fetch whose reply
  was lost. Dramatiq leaves them there until the worker dies and its heartbeat times out;
- on shutdown it puts back the messages it had fetched but not yet handed to the worker;
- while every message it prefetched is with the workers, it waits half a millisecond,
  doubling to 20 ms, for their acks, rather than Dramatiq's backoff for an empty queue
  (5 ms and up, doubling on each miss), which left no-op workers idle most of the time;
- it sends acks in batches: the worker thread that acks while no send is in flight sends
  the acks of all the threads until none is left, so under load a round trip carries many
  (Dramatiq's consumer makes one per ack: most of a worker's CPU time with no-op handlers);
- with the bus's lanes in this Redis (:attr:`EventBusRedisBroker.lane_gate`), it takes
  the leases of a fetch's lane heads right after the fetch, and finishes the handled
  heads with their acks, each in one round trip per batch
  (see :mod:`dramatiq_eventbus.ordering.gate`).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import Any

import redis
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import compute_backoff, current_millis, q_name
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message

from ..ordering import HandledHead, LaneGate, warn_if_lost
from .inspection import Refusal, inspect_body, log_dead_lettered

logger = logging.getLogger("dramatiq_eventbus.brokers")

#: Dramatiq's "fetch" (dispatch.lua), returning each body's Redis id along with it.
_FETCH_WITH_IDS = """
local namespace = KEYS[1]
local queue_name, worker_id, timestamp, count = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
redis.call("zadd", namespace .. ":__heartbeats__", timestamp, worker_id)
local queue = namespace .. ":" .. queue_name
local acks = namespace .. ":__acks__." .. worker_id .. "." .. queue_name
local ids = {}
for i = 1, count do
    local id = redis.call("lpop", queue)
    if not id then
        break
    end
    ids[i] = id
    redis.call("sadd", acks, id)
end
if #ids == 0 then
    return {{}, {}}
end
return {ids, redis.call("hmget", queue .. ".msgs", unpack(ids))}
"""

#: The longest a consumer whose prefetch is all with the workers waits before it looks again.
#: Its waits start at half a millisecond and double while it stays full.
FULL_PREFETCH_MAX_WAIT_MS = 40

#: Dramatiq's "ack" (dispatch.lua) for many ids of one queue in one call.
#: KEYS: the worker's ack set of the queue, the queue's ``.msgs`` hash. ARGV: the Redis ids.
_ACK_MANY = """
local acks, msgs = KEYS[1], KEYS[2]
for i = 1, #ARGV do
    if redis.call("srem", acks, ARGV[i]) > 0 then
        redis.call("hdel", msgs, ARGV[i])
    end
end
"""

#: A dispatch command that no branch of dispatch.lua handles: the call only heartbeats
#: and, with maintenance forced on, recovers dead workers' messages for one queue.
_TEND = "eventbus_tend"


def same_redis(a: redis.Redis, b: redis.Redis) -> bool:
    """Whether two clients reach the same Redis database (same address, or socket, and db)."""
    fields = ("host", "port", "path", "db")
    first, second = a.connection_pool.connection_kwargs, b.connection_pool.connection_kwargs
    return a is b or all(first.get(name) == second.get(name) for name in fields)


class _Fetched:
    """One fetched body, held by the consumer until the worker takes its message."""

    __slots__ = ("__weakref__", "body", "message", "redis_id")

    def __init__(self, redis_id: str, body: bytes | None) -> None:
        self.redis_id = redis_id
        self.body = body
        self.message: Message[Any] | None = None


class _Ack:
    """An ack the worker handed over and the consumer has not sent yet."""

    __slots__ = ("head", "message", "redis_id")

    def __init__(self, redis_id: str, message: MessageProxy, head: HandledHead | None) -> None:
        self.redis_id = redis_id
        self.message = message
        self.head = head


class Holdings:
    """The Redis ids this process fetched from one queue and still holds in memory.

    Each id maps to a weak reference to what holds it: the fetched body, then the message
    the worker runs or delays. An id in the worker's ack set whose holder is gone (or that
    was never known) is stranded, and can be put back on the queue. The lock keeps a fetch
    and a reclaim apart, so that ids just fetched are never taken for stranded ones.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._held: dict[str, weakref.ref[Any]] = {}

    def hold(self, redis_id: str, holder: object) -> None:
        self._held[redis_id] = weakref.ref(holder)

    def release(self, redis_id: str) -> None:
        self._held.pop(redis_id, None)

    def holds(self, redis_id: str) -> bool:
        ref = self._held.get(redis_id)
        return ref is not None and ref() is not None

    def forget_dead(self) -> None:
        for redis_id, ref in list(self._held.items()):
            if ref() is None:
                self._held.pop(redis_id, None)


class EventBusRedisBroker(RedisBroker):
    """Dramatiq's RedisBroker with a consumer that never strands a prefetched batch.

    It takes RedisBroker's arguments. See the module's docstring for what changes; the
    keys in Redis, the enqueue path and the dead-letter queues are Dramatiq's.

    Parameters:
      **kwargs: Passed to :class:`dramatiq.brokers.redis.RedisBroker`.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)  # type: ignore[no-untyped-call]
        self.fetch_with_ids = self.client.register_script(_FETCH_WITH_IDS)
        self.ack_many = self.client.register_script(_ACK_MANY)
        #: Set when the bus's lanes live in this broker's Redis: see :mod:`dramatiq_eventbus.ordering.gate`.
        self.lane_gate: LaneGate | None = None
        self._holdings: dict[str, Holdings] = {}
        self._holdings_lock = threading.Lock()

    def holdings(self, queue_name: str) -> Holdings:
        """What this process holds of ``queue_name``, shared by its consumers of it."""
        with self._holdings_lock:
            return self._holdings.setdefault(queue_name, Holdings())

    def acks_key(self, queue_name: str) -> str:
        """The set of ids this process fetched from ``queue_name`` and has not acknowledged yet."""
        return f"{self.namespace}:__acks__.{self.broker_id}.{queue_name}"

    @property
    def consumer_class(self) -> type[_RedisConsumer]:
        return _GuardedRedisConsumer

    @property
    def tend_interval(self) -> float:
        """Seconds between a consumer's heartbeat-and-maintenance calls."""
        return min(max(float(self.heartbeat_timeout) / 4000, 0.25), 15.0)

    def tend(self, queue_name: str) -> None:
        """Heartbeat, and move the messages of workers silent for ``heartbeat_timeout`` back to the queue."""
        self.scripts["dispatch"](
            keys=[self.namespace],
            args=[
                _TEND,
                current_millis(),
                queue_name,
                self.broker_id,
                self.heartbeat_timeout,
                self.dead_message_ttl,
                1,
                self._max_unpack_size(),  # type: ignore[no-untyped-call]
            ],
        )


class _GuardedRedisConsumer(_RedisConsumer):
    broker: EventBusRedisBroker

    def __init__(self, broker: EventBusRedisBroker, queue_name: str, prefetch: int, timeout: int) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)  # type: ignore[no-untyped-call]
        self.message_cache: list[_Fetched] = []
        self._holdings = broker.holdings(queue_name)
        self._acks_key = broker.acks_key(queue_name)
        self._messages_key = f"{broker.namespace}:{queue_name}.msgs"
        # Acks come from the worker threads; see ack().
        self._acks_lock = threading.Lock()
        self._unsent: list[_Ack] = []
        self._sending = False
        self._delayed = q_name(queue_name) != queue_name
        self.full_waits = 0
        self._tended_at = float("-inf")

    def __next__(self) -> MessageProxy | None:
        try:
            while True:
                self._tend()
                if self.message_cache:
                    fetched = self.message_cache.pop(0)
                    self.misses = 0
                    message = fetched.message
                    assert message is not None  # _fetch() keeps only the admitted
                    proxy = MessageProxy(message)
                    self._holdings.hold(fetched.redis_id, proxy)
                    self.queued_message_ids.add(message.message_id)
                    return proxy
                if self.outstanding_message_count >= self.prefetch:
                    # Every prefetched message is with the worker threads, which ack as they
                    # finish: wait briefly for one, rather than back off as for an empty queue.
                    self.full_waits, wait_ms = compute_backoff(
                        self.full_waits, factor=1, jitter=False, max_backoff=FULL_PREFETCH_MAX_WAIT_MS
                    )
                    time.sleep(wait_ms / 2000)
                    return None
                self.full_waits = 0
                self.message_cache = self._fetch(self.prefetch - self.outstanding_message_count)
                if not self.message_cache:
                    # As Dramatiq's consumer does: poll less often while the queue stays empty.
                    self.misses, backoff_ms = compute_backoff(self.misses, max_backoff=self.timeout)
                    time.sleep(backoff_ms / 1000)
                    return None
        except redis.ConnectionError as exc:
            raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]

    def ack(self, message: MessageProxy) -> None:
        # Dramatiq's worker threads ack as they finish. The first to find no send in flight
        # sends the acks of all of them until none is left; the others only leave theirs: a
        # batch per round trip under load, no wait when idle. Not a waited GroupCall: threads
        # that waited for their ack would take no new message meanwhile, and batches shrank
        # (measured: half the throughput of this).
        redis_id = message.options["redis_message_id"]
        self.queued_message_ids.discard(message.message_id)
        gate = self.broker.lane_gate
        head = gate.take_handled(redis_id) if gate is not None else None
        with self._acks_lock:
            # The message rides along, so that its id counts as held until the ack is sent.
            self._unsent.append(_Ack(redis_id, message, head))
            if self._sending:
                return
            self._sending = True
        self._send_unsent()

    def _send_unsent(self) -> None:
        while True:
            with self._acks_lock:
                batch, self._unsent = self._unsent, []
                if not batch:
                    self._sending = False
                    return
            try:
                self._send(batch)
            except BaseException as exc:
                with self._acks_lock:
                    self._unsent[:0] = batch  # whoever acks next sends them again
                    self._sending = False
                if isinstance(exc, redis.ConnectionError):
                    raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]
                raise
            for ack in batch:
                self._holdings.release(ack.redis_id)

    def _send(self, batch: list[_Ack]) -> None:
        """The acks, and the FINISH of every handled lane head among them, in one round trip."""
        ids = [ack.redis_id for ack in batch if ack.head is None]
        heads = [(ack.head, ack.redis_id) for ack in batch if ack.head is not None]
        gate = self.broker.lane_gate
        if not heads or gate is None:
            self.broker.ack_many(keys=[self._acks_key, self._messages_key], args=ids)
            return
        statuses = gate.lanes.finish_handled(heads, queue_name=self.queue_name, acks_key=self._acks_key, other_acks=ids)
        for (head, _), status in zip(heads, statuses, strict=True):
            warn_if_lost(head.lane, head.message_id, status)

    def nack(self, message: MessageProxy) -> None:
        super().nack(message)  # type: ignore[no-untyped-call]
        self._holdings.release(message.options["redis_message_id"])

    def requeue(self, messages: Any) -> None:
        # What the worker had not started when it stopped: it goes back, and so do its leases.
        messages = list(messages)
        ids = [message.options["redis_message_id"] for message in messages]
        self._release_leases(ids)
        super().requeue(messages)  # type: ignore[no-untyped-call]
        for redis_id in ids:
            self._holdings.release(redis_id)

    def close(self) -> None:
        # Dramatiq leaves the fetched-but-unhanded bodies in the ack set when a consumer stops.
        # Put them back now; if Redis is unreachable, the next consumer's reclaim will.
        with self._acks_lock:
            idle, self._sending = not self._sending, True
        if idle:  # else the thread sending now sends them all
            try:
                self._send_unsent()
            except ConnectionClosed:
                logger.warning("Could not send %d ack(s) to Redis: those messages will run again.", len(self._unsent))
        cached, self.message_cache = self.message_cache, []
        ids = [fetched.redis_id for fetched in cached]
        if not ids:
            return
        try:
            self._release_leases(ids)
            self.broker.do_requeue(self.queue_name, *ids)
        except redis.ConnectionError:
            return
        for redis_id in ids:
            self._holdings.release(redis_id)

    def _release_leases(self, redis_ids: list[str]) -> None:
        gate = self.broker.lane_gate
        if gate is not None:
            gate.release(redis_ids, self.queue_name)

    def _tend(self) -> None:
        now = time.monotonic()
        if now - self._tended_at >= self.broker.tend_interval:
            self._tended_at = now
            self.broker.tend(self.queue_name)
            self._reclaim()

    def _reclaim(self) -> None:
        """Put back the ids in this worker's ack set that nothing in this process holds any more."""
        with self._holdings.lock:
            members: Any = self.broker.client.smembers(self._acks_key)
            stranded = [m.decode() for m in members if not self._holdings.holds(m.decode())]
            if stranded:
                # Dramatiq's requeue moves an id back only if it is still in the ack set, so an
                # ack that lands meanwhile wins, and nothing runs twice.
                self.broker.do_requeue(self.queue_name, *stranded)
            self._holdings.forget_dead()
        if stranded:
            logger.warning(
                "Put %d message(s) back on queue %r that this worker had fetched but no longer held "
                "(dropped when a connection to Redis failed).",
                len(stranded),
                self.queue_name,
            )

    def _fetch(self, count: int) -> list[_Fetched]:
        count = min(count, self.broker._max_unpack_size())  # type: ignore[no-untyped-call]
        with self._holdings.lock:
            ids, bodies = self.broker.fetch_with_ids(
                keys=[self.broker.namespace],
                args=[self.queue_name, self.broker.broker_id, current_millis(), count],
            )
            fetched = [_Fetched(redis_id.decode(), body) for redis_id, body in zip(ids, bodies, strict=True)]
            for entry in fetched:
                self._holdings.hold(entry.redis_id, entry)
        admitted = []
        for entry in fetched:
            entry.message = self._admit(entry)
            if entry.message is not None:
                admitted.append(entry)
        gate = self.broker.lane_gate
        if gate is not None and not self._delayed:
            # Delayed messages wait here for their time, then go to their queue, where they are entered.
            gate.enter_fetched([entry.message for entry in admitted if entry.message is not None])
        return admitted

    def _admit(self, fetched: _Fetched) -> Message[Any] | None:
        """The message to run, or None once a delivery that cannot run was dealt with."""
        redis_id, body = fetched.redis_id, fetched.body
        inspected = inspect_body(self.broker, body)
        if isinstance(inspected, Refusal):
            if body is None:
                # Nothing to keep: drop the id, or it stays in this worker's ack set.
                logger.warning("Dropped id %s from queue %r: %s.", redis_id, self.queue_name, inspected.reason)
                self.broker.do_ack(self.queue_name, redis_id)
            else:
                log_dead_lettered(self.queue_name, inspected, where=f"Redis id {redis_id}")
                self.broker.do_nack(self.queue_name, redis_id)
            self._holdings.release(redis_id)
            return None
        if inspected.options.get("redis_message_id") != redis_id:
            # Acks go by this option: a message written by hand without it, or with another
            # message's id, would otherwise be acked under the wrong id, or never.
            inspected = inspected.copy(options={"redis_message_id": redis_id})
        return inspected
