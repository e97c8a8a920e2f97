"""The bus's Redis consumer: Dramatiq's, made so that one message strands nothing.

Dramatiq's Redis consumer fetches a batch of bodies without their Redis ids and decodes
them one by one; one body it cannot decode raises out of the consumer, and the rest of
the batch stays in the worker's ack set until that worker dies and its heartbeat times
out. Recovery of a dead worker's messages also waits for "queue maintenance", which
runs on about one Redis call in a thousand, so on a quiet queue it can take minutes
after the heartbeat timeout. This consumer keeps Dramatiq's keys and semantics, and:

- fetches each body with its Redis id, so a body that cannot be run is dead-lettered
  (moved to ``<queue>.XQ`` by Dramatiq's own ``nack``) with one log line, and the rest
  of the batch goes on;
- heartbeats and runs queue maintenance on a clock, every quarter of the heartbeat
  timeout (0.25 s to 15 s), so a dead worker's messages return to their queue within
  ``heartbeat_timeout`` plus that interval, and a worker whose threads are all busy on
  long handlers still heartbeats;
- knows which of the ids in its worker's ack set the process still holds in memory,
  and puts back the others: those Dramatiq drops when a connection error restarts a
  consumer (its fetched batch, its delayed retries), and those of a fetch whose reply
  was lost. Dramatiq leaves them there until the worker dies and its heartbeat times out;
- on shutdown puts back the messages it had fetched but not yet handed to the worker;
- waits for an empty queue to have a message, rather than polling it: it blocks on the queue
  itself (``BLMOVE`` of its head onto the queue's wake list, with the worker timeout as the
  limit), so any message pushed onto the queue, by whoever pushes it, wakes it at once, and
  only one waiting consumer per message; its next fetch puts the id back and takes it. A
  wait that times out proves the queue stayed empty, so the consumer waits again without a
  fetch (see "Waking on publish" in docs/design/internals.md for why no wake-up is lost);
- while every message it prefetched is with the workers, waits half a millisecond,
  doubling to 20 ms, for their acks, rather than Dramatiq's backoff for an empty queue
  (5 ms and up, doubling on each miss), which left no-op workers idle most of the time;
- sends acks in batches: the worker thread that acks while no send is in flight sends
  the acks of all the threads until none is left, so under load a round trip carries many
  (Dramatiq's consumer makes one per ack: most of a worker's CPU time with no-op handlers);
- hands its fetches and acks to a :class:`FetchHook` when the broker has one: the fetch
  script itself leases the lane heads the lane scripts put on the queue (any other laned
  message, in one round trip per fetch right after it), and the bus's ordering finishes
  handled heads with their acks, in one round trip per batch.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import redis
from dramatiq.broker import Consumer, MessageProxy
from dramatiq.common import compute_backoff, current_millis, q_name
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message

from ...ordering.lanes import LeasedAtFetch
from ...untrusted import shown
from ..inspection import Refusal, holding_fields, inspect_delivery, log_dead_lettered
from . import upstream

if TYPE_CHECKING:
    from .broker import EventBusRedisBroker

#: The longest a consumer whose prefetch is all with the workers waits before it looks again.
#: Its waits start at half a millisecond and double while it stays full.
FULL_PREFETCH_MAX_WAIT_MS = 40

#: Seconds a waiting consumer's socket outlasts its longest wait, before it counts as dead.
WAIT_SOCKET_MARGIN = 5.0

#: How many worker timeouts a consumer that holds no message waits at once on its empty queue (a
#: consumer that holds some, as one of a delay queue holds its delayed messages until they are due,
#: waits one, as Dramatiq's polls). The worker's shutdown wakes it (:func:`.broker.stop_waiting`).
IDLE_WAIT_TIMEOUTS = 2

#: The client name of a waiting consumer's connection (``CLIENT LIST``), before ``:<queue>``.
WAITER_NAME = "eventbus-wait"


class FetchHook(Protocol):
    """What a Redis consumer tells the bus's ordering about its fetches and acks.

    :class:`dramatiq_eventbus.ordering.AckingLaneGate` is the one implementation: it needs the
    broker's own Redis, and this is how the consumer reaches it without either package
    importing the other.
    """

    def lease_arguments(self) -> Sequence[Any]:
        """The last arguments of a fetch from a main queue, by which ``fetch.lua`` leases the lane
        heads it takes: the lanes' prefix, the lease's deadline (ms) and a token for the fetch."""

    def fetched(self, messages: Sequence[Message[Any]], leased: Mapping[str, LeasedAtFetch], queue_name: str) -> None:
        """Messages just fetched from the main queue ``queue_name`` (not a delay queue), before any
        runs; ``leased`` holds the leases the fetch took, by Redis id, also of fetched deliveries
        that are not among ``messages`` (refused), which must be given back."""

    def put_back(self, redis_ids: Sequence[str], queue_name: str) -> None:
        """Fetched deliveries that go back to their queue without running."""

    def ack(self, redis_ids: Sequence[str], *, queue_name: str, acks_key: str) -> bool:
        """When handled lane heads are among these deliveries of ``queue_name`` (fetched into
        the ack set ``acks_key``), finish them and acknowledge every delivery, in one round
        trip, and return True; else do nothing and return False."""


class _Fetched:
    """One fetched body, held by the consumer until the worker takes its message."""

    __slots__ = ("__weakref__", "body", "message", "redis_id")

    def __init__(self, redis_id: str, body: bytes | None) -> None:
        self.redis_id = redis_id
        self.body = body
        self.message: Message[Any] | None = None


class _Ack:
    """An ack the worker handed over and the consumer has not sent yet; the message rides
    along so that its id counts as held until the ack is sent."""

    __slots__ = ("message", "redis_id")

    def __init__(self, redis_id: str, message: MessageProxy) -> None:
        self.redis_id = redis_id
        self.message = message


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


class RedisConsumer(Consumer):
    """Consumes one queue of an :class:`~.broker.EventBusRedisBroker`; see the module's docstring.

    Parameters:
      broker(EventBusRedisBroker): The broker.
      queue_name(str): The queue.
      prefetch(int): How many messages it may hold at once, fetched or with the workers.
      timeout(int): The longest wait (ms) between looks at an empty queue.
    """

    def __init__(self, broker: EventBusRedisBroker, queue_name: str, prefetch: int, timeout: int) -> None:
        self.logger = logging.getLogger(f"{__name__}.{type(self).__name__}")
        self.broker = broker
        self.queue_name = queue_name
        self.prefetch = prefetch
        self.timeout = timeout
        self.message_cache: list[_Fetched] = []
        self.queued_message_ids: set[str] = set()
        self.misses = 0
        self.full_waits = 0
        self._holdings = broker.holdings(queue_name, self)
        keys = broker.keys
        self._fetch_keys = [keys.heartbeats, keys.queue(queue_name), keys.messages(queue_name)]
        self._acks_key = keys.acks(broker.broker_id, queue_name)
        self._fetch_keys.append(self._acks_key)
        self._messages_key = keys.messages(queue_name)
        self._queue_key = keys.queue(queue_name)
        self._wake_key = keys.wake(queue_name)
        self._fetch_keys += [self._wake_key, keys.lane_heads(queue_name)]
        #: Called after a fetch finds the queue empty, right before the consumer waits (tests race it).
        self.before_wait: Callable[[], None] | None = None
        # The blocking wait's own client, made at the first wait; False once Redis lacks BLMOVE.
        self._waiter: redis.Redis | bool | None = None
        self._waiter_id: int | None = None  # its connection's CLIENT ID
        # Whether the next look at the queue must fetch, or may wait at once: False right after a
        # wait that timed out, or a fetch that got fewer than it asked for, either of which proves
        # the queue empty (at that moment: the wait returns at once if anything arrived since).
        self._look = True
        # Acks come from the worker threads; see ack().
        self._acks_lock = threading.Lock()
        self._unsent: list[_Ack] = []
        self._sending = False
        self._delayed = q_name(queue_name) != queue_name
        self._tended_at = float("-inf")

    @property
    def outstanding_message_count(self) -> int:
        return len(self.queued_message_ids) + len(self.message_cache)

    def __next__(self) -> MessageProxy | None:
        woke = False
        try:
            while True:
                tended = self._tend()
                if self.message_cache:
                    fetched = self.message_cache.pop(0)
                    self.misses = 0
                    message = fetched.message
                    assert message is not None  # _fetch() keeps only the admitted
                    proxy = holding_fields(MessageProxy(message), message)
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
                if self._look or tended:  # a tend looks too: for ids a waiter that died left on the wake list
                    count = min(self.prefetch - self.outstanding_message_count, upstream.max_unpack_size(self.broker))
                    self.message_cache, got = self._fetch(count)
                    # A fetch that got fewer than it asked for left the queue empty: the next look
                    # may be a wait, which returns at once if anything arrived since.
                    self._look = got >= count
                    if self.message_cache:
                        continue
                    if woke:  # another consumer took what woke this one
                        self._look = False
                        return None
                woke, self._look = self._wait()
                if not woke:
                    return None  # the worker runs its delayed messages and checks for shutdown
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]

    def _wait(self) -> tuple[bool, bool]:
        """Wait for the empty queue to have a message: ``(woke, look)``, whether a message woke it
        and whether the next look must fetch (a timed-out wait proves the queue stayed empty).

        ``BLMOVE queue wake LEFT RIGHT`` blocks while the queue is empty and, when an id arrives,
        moves it to the wake list: the queue is empty again, so one id wakes one waiter, and the
        fetch that follows puts it back at the head. The limit is the worker timeout, as for
        Dramatiq's polling (the worker runs its delayed messages and checks for shutdown between
        waits), or the next tend if sooner.
        """
        if self.before_wait is not None:
            self.before_wait()
        limit = self.timeout / 1000
        if not (self.outstanding_message_count or self.broker.stopping):
            limit *= IDLE_WAIT_TIMEOUTS
        seconds = min(limit, self._tended_at + self.broker.tend_interval - time.monotonic())
        if seconds < 0.001:  # BLMOVE would read 0 as "forever"; the tend, due now, looks
            return False, True
        waiter = self._waiting_client()
        if waiter is None:
            # A Redis older than 6.2: poll as Dramatiq's consumer does, less often while it stays empty.
            self.misses, backoff_ms = compute_backoff(self.misses, max_backoff=self.timeout)
            time.sleep(min(backoff_ms / 1000, self.timeout / 1000, seconds))
            return False, True
        if self._waiter_id is None:
            self._waiter_id = int(waiter.client_id())
        try:
            # Redis reads a fractional timeout (6.0+); redis-py's stubs say int.
            moved = waiter.blmove(self._queue_key, self._wake_key, seconds, "LEFT", "RIGHT")  # type: ignore[arg-type]
        except redis.ResponseError as exc:
            if "unknown command" not in str(exc).lower():
                raise
            self.logger.warning("Redis has no BLMOVE (it came in Redis 6.2): consumers poll queue %r.", self.queue_name)
            self._close_waiter()
            self._waiter = False
            return False, True
        return moved is not None, moved is not None

    def unblock(self) -> None:
        """End the current wait, if any, as if it timed out (``CLIENT UNBLOCK``): for a shutdown."""
        waiter_id = self._waiter_id
        if waiter_id is not None:
            try:
                self.broker.client.client_unblock(waiter_id)
            except redis.RedisError as exc:
                self.logger.debug("Could not wake a waiting consumer of %r: %s", self.queue_name, exc)

    def _waiting_client(self) -> redis.Redis | None:
        if self._waiter is None:
            self._waiter = upstream.blocking_client(
                self.broker, self.timeout / 1000 + WAIT_SOCKET_MARGIN, f"{WAITER_NAME}:{self.queue_name}"
            )
        return self._waiter if isinstance(self._waiter, redis.Redis) else None

    def _close_waiter(self) -> None:
        waiter = self._waiter
        if isinstance(waiter, redis.Redis):
            self._waiter = self._waiter_id = None
            waiter.connection_pool.disconnect()

    def ack(self, message: MessageProxy) -> None:
        # Dramatiq's worker threads ack as they finish. The first to find no send in flight
        # sends the acks of all of them until none is left; the others only leave theirs: a
        # batch per round trip under load, no wait when idle. Not a waited GroupCall: threads
        # that waited for their ack would take no new message meanwhile, and batches shrank
        # (measured: half the throughput of this).
        self.queued_message_ids.discard(message.message_id)
        with self._acks_lock:
            self._unsent.append(_Ack(message.options["redis_message_id"], message))
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
            ids = [ack.redis_id for ack in batch]
            try:
                hook = self.broker.fetch_hook
                if hook is None or not hook.ack(ids, queue_name=self.queue_name, acks_key=self._acks_key):
                    self.broker.scripts["eventbus_ack_many"](keys=[self._acks_key, self._messages_key], args=ids)
            except BaseException as exc:
                with self._acks_lock:
                    self._unsent[:0] = batch  # whoever acks next sends them again
                    self._sending = False
                if isinstance(exc, redis.ConnectionError):
                    raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]
                raise
            for redis_id in ids:
                self._holdings.release(redis_id)

    def nack(self, message: MessageProxy) -> None:
        redis_id = message.options["redis_message_id"]
        try:
            upstream.nack(self.broker, self.queue_name, redis_id)
        except redis.ConnectionError as exc:
            raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]
        finally:
            self.queued_message_ids.discard(message.message_id)
        self._holdings.release(redis_id)

    def requeue(self, messages: Any) -> None:
        # What the worker had not started when it stopped: it goes back, and so do its leases.
        ids = [message.options["redis_message_id"] for message in messages]
        self._put_back(ids)
        upstream.requeue(self.broker, self.queue_name, ids)
        for redis_id in ids:
            self._holdings.release(redis_id)

    def close(self) -> None:
        # Dramatiq leaves the fetched-but-unhanded bodies in the ack set when a consumer stops.
        # Put them back now; if Redis is unreachable, the next consumer's reclaim will.
        self._close_waiter()
        with self._acks_lock:
            idle, self._sending = not self._sending, True
        if idle:  # else the thread sending now sends them all
            try:
                self._send_unsent()
            except ConnectionClosed:
                self.logger.warning(
                    "Could not send %d ack(s) to Redis: those messages will run again.", len(self._unsent)
                )
        cached, self.message_cache = self.message_cache, []
        ids = [fetched.redis_id for fetched in cached]
        if not ids:
            return
        try:
            self._put_back(ids)
            upstream.requeue(self.broker, self.queue_name, ids)
        except redis.ConnectionError:
            return
        for redis_id in ids:
            self._holdings.release(redis_id)

    def _put_back(self, redis_ids: list[str]) -> None:
        hook = self.broker.fetch_hook
        if hook is not None and redis_ids:
            hook.put_back(redis_ids, self.queue_name)

    def _tend(self) -> bool:
        """Heartbeat, recover dead workers' messages and reclaim stranded ones, when due; whether it did."""
        now = time.monotonic()
        if now - self._tended_at < self.broker.tend_interval:
            return False
        self._tended_at = now
        upstream.heartbeat_and_recover(self.broker, self.queue_name)
        self._reclaim()
        return True

    def _reclaim(self) -> None:
        """Put back the ids in this worker's ack set that nothing in this process holds any more."""
        with self._holdings.lock:
            members: Any = self.broker.client.smembers(self._acks_key)
            # Put back as Redis has them: an id that is not UTF-8 (written by hand) was never held
            # here, and its fetch dead-letters it.
            stranded = [m for m in members if not self._holdings.holds(m.decode("utf-8", "surrogateescape"))]
            # Dramatiq's requeue moves an id back only if it is still in the ack set, so an
            # ack that lands meanwhile wins, and nothing runs twice.
            upstream.requeue(self.broker, self.queue_name, stranded)
            self._holdings.forget_dead()
        if stranded:
            self.logger.warning(
                "Put %d message(s) back on queue %r that this worker had fetched but no longer held "
                "(dropped when a connection to Redis failed).",
                len(stranded),
                self.queue_name,
            )

    def _fetch(self, count: int) -> tuple[list[_Fetched], int]:
        """Up to ``count`` messages: those admitted, and how many ids the fetch took."""
        # Delayed messages wait here for their time, then go to their queue, where they are leased.
        hook = None if self._delayed else self.broker.fetch_hook
        lease_arguments = ("", 0, "") if hook is None else hook.lease_arguments()
        with self._holdings.lock:
            ids, bodies, leases = self.broker.scripts["eventbus_fetch"](
                keys=self._fetch_keys, args=[self.broker.broker_id, current_millis(), count, *lease_arguments]
            )
            fetched = []
            for raw_id, body in zip(ids, bodies, strict=True):
                try:
                    redis_id = raw_id.decode()
                except UnicodeDecodeError:
                    # A lease taken under an unreadable id (only a forged lane can hold one) runs out.
                    self._refuse_unreadable_id(raw_id)
                    continue
                fetched.append(entry := _Fetched(redis_id, body))
                self._holdings.hold(redis_id, entry)
        leased: dict[str, LeasedAtFetch] = {}
        readable = {entry.redis_id for entry in fetched}
        for lease in leases:
            place, verdict, lane = lease.split(b" ", 2)
            redis_id = ids[int(place) - 1].decode("utf-8", "replace")
            if redis_id in readable:  # else refused above
                token = f"{lease_arguments[2]}:{place.decode()}"
                leased[redis_id] = LeasedAtFetch(lane.decode("utf-8", "replace"), verdict.decode(), token)
        admitted = []
        for entry in fetched:
            entry.message = self._admit(entry)
            if entry.message is not None:
                admitted.append(entry)
        if hook is not None:
            hook.fetched([entry.message for entry in admitted if entry.message is not None], leased, self.queue_name)
        return admitted, len(ids)

    def _refuse_unreadable_id(self, raw_id: bytes) -> None:
        """Dead-letter a delivery whose Redis id is not UTF-8, which Dramatiq and the bus key everything
        by: decoding it raised out of every fetch, and out of every reclaim while it stayed in the ack set."""
        log_dead_lettered(
            self.broker, self.queue_name, Refusal("its Redis id is not UTF-8"), where=f"Redis id {shown(raw_id)}"
        )
        upstream.nack(self.broker, self.queue_name, raw_id)

    def _admit(self, fetched: _Fetched) -> Message[Any] | None:
        """The message to run, or None once a delivery that cannot run was dealt with."""
        redis_id, body = fetched.redis_id, fetched.body
        inspected = inspect_delivery(self.broker, self.queue_name, body)
        if isinstance(inspected, Refusal):
            if body is None:
                # Nothing to keep: drop the id, or it stays in this worker's ack set.
                self.logger.warning(
                    "Dropped id %s from queue %r: %s.", shown(redis_id), self.queue_name, inspected.reason
                )
                upstream.ack(self.broker, self.queue_name, redis_id)
            else:
                log_dead_lettered(self.broker, self.queue_name, inspected, where=f"Redis id {shown(redis_id)}")
                upstream.nack(self.broker, self.queue_name, redis_id)
            self._holdings.release(redis_id)
            return None
        if inspected.options.get("redis_message_id") != redis_id:
            # Acks go by this option: a message written by hand without it, or with another
            # message's id, would otherwise be acked under the wrong id, or never.
            inspected = inspected.copy(options={"redis_message_id": redis_id})
        return inspected
