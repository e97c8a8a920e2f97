"""The bus's RabbitMQ consumer: Dramatiq's, inspecting each delivery and acking in batches.

Dramatiq's RabbitMQ consumer already rejects an envelope it cannot decode (RabbitMQ then
moves it to ``<queue>.XQ``), but logs a traceback for it, and hands the worker envelopes
with fields of the wrong type or for an actor it does not know, which fail later with
tracebacks far from their cause. This consumer runs every delivery through
:func:`~..inspection.inspect_body` and rejects what it refuses with one log line.

It reads the deliveries that wait whole on the socket itself, rather than through pika's
I/O loop (see :func:`.upstream.deliveries_off_the_socket`): a tenth less CPU per message
with no-op handlers, 8 % with handlers that make a Redis round trip (measured against the
same consumer reading through pika, in alternating drains). It also waits for them itself
(:class:`.upstream.SocketWait`), so that those that arrive while it waits, most of them
when handlers wait on I/O, come off the socket too.

It also sends its acks in batches. Dramatiq's consumer hands each ack to pika's I/O loop
as a callback of its own, and pika then flushes the socket once per ack: about half of
a worker's CPU time with no-op handlers. Here the acks that arrive before the loop runs
go out together, with one flush, or before the consumer next reads off the socket (an ack
that comes while the consumer waits on the socket wakes it for that). An ack
still leaves when Dramatiq's would, on the consumer's next turn; if the connection dies
first, RabbitMQ redelivers the message, as it would have with an ack lost in flight.

It hands what it reads and acks to a :class:`DeliveryHook` when the broker has one: the
bus's ordering takes the leases of all the lane heads RabbitMQ delivered at once in one
Redis round trip, and finishes the handled heads of a batch of acks in one more, after
which the consumer publishes their lanes' next heads and sends the acks in one write
(see :class:`dramatiq_eventbus.ordering.DeliveryLaneGate`).
"""

from __future__ import annotations

import struct
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import pika
import pika.exceptions
from dramatiq.broker import MessageProxy
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.common import q_name
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message

from ...untrusted import described, shown
from ..inspection import Refusal, holding_fields, inspect_delivery, log_dead_lettered
from . import upstream

#: Seconds before acks held back by a failed finish of their lane heads are tried again.
FINISH_RETRY_SECONDS = 1.0


class DeliveryHook(Protocol):
    """What a RabbitMQ consumer tells the bus's ordering about what it reads and acks.

    :class:`dramatiq_eventbus.ordering.DeliveryLaneGate` is the one implementation; this is
    how the consumer reaches it without either package importing the other. The consumer
    calls it from its own thread.
    """

    def received(self, deliveries: Sequence[MessageProxy]) -> None:
        """Deliveries just read, before any runs."""

    def dropped(self, deliveries: Iterable[MessageProxy], queue_name: str) -> None:
        """Deliveries read that will not run here: RabbitMQ delivers them again."""

    def finish_handled(self, deliveries: Sequence[MessageProxy]) -> list[bytes]:
        """Finish the handled lane heads among deliveries about to be acked; return the encoded
        next heads to publish. Raises when the lanes cannot be reached."""


class RabbitmqConsumer(upstream.UpstreamConsumer):
    """Consumes one queue of an :class:`~.broker.EventBusRabbitmqBroker`; see the module's docstring.

    Parameters:
      broker(RabbitmqBroker): The broker.
      queue_name(str): The queue.
      prefetch(int): RabbitMQ's prefetch count for this consumer's channel.
      timeout(int): How long (ms) an iteration waits for a delivery.
    """

    def __init__(self, broker: RabbitmqBroker, queue_name: str, prefetch: int, timeout: int) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)  # type: ignore[no-untyped-call]
        # Each ack waiting for pika's loop: the delivery tag (None when the tag is not this
        # channel's: a delivery of a consumer that was restarted) and the delivery.
        self._unsent_acks: list[tuple[int | None, MessageProxy]] = []
        self._acks_lock = threading.Lock()
        self._acks_held_until = 0.0  # time.monotonic() until which a failed finish holds the acks back
        self._ready: deque[MessageProxy] = deque()  # read and entered, not yet handed to the worker
        # Deliveries read off the socket at once and not yet inspected: (tag, redelivered, body).
        self._off_socket: deque[tuple[int, bool, bytes]] = deque()
        self._poller: Any = None  # of the connection's socket, made at the first read; False if none
        self._wait: upstream.SocketWait | None = None  # made with the poller
        self._wait_seconds = timeout / 1000
        # True while the consumer's thread waits in self._wait, not in pika's loop: an ack then
        # wakes it there. Read and written under _acks_lock.
        self._waiting_here = False
        # A delay queue's messages wait in the worker for their time, then go to their queue, where
        # they are entered: a lease taken here would keep that delivery from running.
        self._delayed = q_name(queue_name) != queue_name

    def ack(self, message: MessageProxy) -> None:
        tag: int | None = upstream.delivery_tag(message)
        try:
            self.known_tags.remove(tag)
        except KeyError:
            if self.broker.delivery_hook is None:
                self.logger.warning("Failed to ack message %s: not in known tags.", shown(message.message_id))
                return
            tag = None  # not acked on this channel, but its lane head, if any, is finished
        with self._acks_lock:
            self._unsent_acks.append((tag, message))
            first = len(self._unsent_acks) == 1
            waiting_here = self._waiting_here
        if first and waiting_here:
            # The consumer's thread clears the flag, under the lock, before it waits anywhere
            # else, and then sends every ack appended before: this one is never left behind.
            assert self._wait is not None
            self._wait.wake()
        elif first:
            try:
                self.connection.add_callback_threadsafe(self._send_acks)
            except (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError) as exc:
                raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]

    def _send_acks(self) -> None:
        """Run by pika's I/O loop: every ack since the last run, then one flush.

        With a hook, the handled lane heads among them are finished first (before their acks,
        or a worker killed in between would leave the lane to run them again), and their
        lanes' next heads are published in the same write as the acks.
        """
        if time.monotonic() < self._acks_held_until:
            return  # held back after a failed finish: _retry_acks() sends them
        with self._acks_lock:
            acks, self._unsent_acks = self._unsent_acks, []
        if not acks:
            return
        hook = self.broker.delivery_hook
        next_heads: list[bytes] = []
        if hook is not None:
            try:
                next_heads = hook.finish_handled([message for _, message in acks])
            except Exception as exc:
                self.logger.warning(
                    "Could not finish lane heads in Redis (%s); holding back %d ack(s), trying again in %.0f s.",
                    described(exc),
                    len(acks),
                    FINISH_RETRY_SECONDS,
                )
                with self._acks_lock:
                    self._unsent_acks[:0] = acks
                # One retry, after the delay: not one per ack, or per turn of the consumer.
                self._acks_held_until = time.monotonic() + FINISH_RETRY_SECONDS
                self.connection.call_later(FINISH_RETRY_SECONDS, self._retry_acks)
                return
        channel = upstream.protocol_channel(self.channel)
        with upstream.one_write(channel.connection):
            for body in next_heads:
                self._publish_head(channel, body)
            for tag, _ in acks:
                if tag is not None:
                    upstream.ack_unflushed(self.channel, tag)
        upstream.flush(self.channel)

    def _retry_acks(self) -> None:
        self._acks_held_until = 0.0
        self._send_acks()

    def _publish_head(self, channel: Any, body: bytes) -> None:
        """Publish a lane's next head, unconfirmed: its lane keeps it until it is handled, and the
        lanes' sweep sends it again if it is lost."""
        try:
            message = Message.decode(body)
        except Exception as exc:  # written by a publisher of this bus, but Redis can be written by anyone
            self.logger.warning("Not publishing a lane head that cannot be decoded (%s).", described(exc))
            return
        try:
            upstream.publish_unflushed(channel, message.queue_name, body, message.options.get("broker_priority"))
        except (AttributeError, TypeError, struct.error, pika.exceptions.ShortStringTooLong) as exc:
            # A queue name or priority RabbitMQ cannot carry: raised here, it would end the batch
            # of acks, and then the consumer. The lane stays on this head until a sweep sends it.
            self.logger.warning(
                "Not publishing a lane head RabbitMQ cannot carry, to queue %s (%s).",
                shown(message.queue_name),
                described(exc),
            )

    def requeue(self, messages: Iterable[MessageProxy]) -> None:
        # RabbitMQ delivers them again once this consumer's channel closes; their leases must go first.
        self._give_back(list(messages))

    def close(self) -> None:
        ready, self._ready = list(self._ready), deque()
        self._give_back(ready)
        super().close()  # type: ignore[no-untyped-call]
        if self._wait is not None:
            self._wait.close()

    def _give_back(self, deliveries: list[MessageProxy]) -> None:
        """Give up the lane leases of deliveries that will not run here; if the lanes cannot be
        reached, the leases run out by themselves within lane_lease_seconds."""
        hook = self.broker.delivery_hook
        if hook is None or not deliveries:
            return
        try:
            hook.dropped(deliveries, self.queue_name)
        except Exception as exc:
            self.logger.warning("Could not give back the leases of unstarted lane heads (%s).", described(exc))

    def __next__(self) -> MessageProxy | None:
        if self._ready:
            return self._ready.popleft()
        delivery = self._read()
        hook = self.broker.delivery_hook
        if delivery is None or hook is None or self._delayed:
            return delivery
        # What was read along with this delivery (off the socket, or by pika) is entered with it,
        # in one round trip.
        deliveries = [delivery]
        for _ in range(len(self._off_socket) + upstream.buffered_deliveries(self.channel)):
            more = self._read()
            if more is not None:
                deliveries.append(more)
        try:
            hook.received(deliveries)
        except Exception as exc:
            # Each worker thread then asks the lanes itself, and retries its message if they stay away.
            self.logger.warning("Could not take the leases of lane heads in Redis (%s).", described(exc))
        self._ready.extend(deliveries[1:])
        return delivery

    def _read(self) -> MessageProxy | None:
        """The next delivery, inspected; None after the wait timed out, or for one refused."""
        # Dramatiq's own __next__, with inspect_body() in place of a bare Message.decode().
        received = self._receive()
        if received is None:
            return None
        tag, redelivered, body = received
        inspected = inspect_delivery(self.broker, self.queue_name, body)
        if isinstance(inspected, Refusal):
            log_dead_lettered(self.broker, self.queue_name, inspected)
            # Not requeued: the queue's dead-letter exchange routes it to <queue>.XQ.
            upstream.reject(self, tag)
            return None
        self.known_tags.add(tag)
        return holding_fields(upstream.delivery(redelivered, tag, inspected), inspected)

    def _receive(self) -> tuple[int, bool, bytes] | None:
        """The next delivery's tag, ``redelivered`` and body: read off the socket with those that
        wait whole there (see :func:`.upstream.deliveries_off_the_socket`), else through pika's
        iterator; None after the wait timed out."""
        if self._off_socket:
            return self._off_socket.popleft()
        if self._poller is None:
            self._poller = upstream.socket_poller(self.channel) or False
            self._wait = upstream.socket_wait(self.channel) if self._poller else None
        try:
            if self._poller:
                received, waited = self._receive_off_the_socket()
                if received is not None or waited:
                    return received
            method, _properties, body = next(self.iterator)
        except (AssertionError, pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError) as exc:
            if getattr(exc, "reply_code", None) == 404:
                # The queue vanished: declare it again when the consumer restarts.
                upstream.queues_to_declare(self.broker).add(q_name(self.queue_name))
            raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]
        if method is None:
            return None
        return method.delivery_tag, method.redelivered, body

    def _receive_off_the_socket(self) -> tuple[tuple[int, bool, bytes] | None, bool]:
        """The next delivery read off the socket, waiting here for it up to the consumer's
        timeout, and whether that wait ran out; (None, False) when pika's loop must read next.

        The wait is this consumer's own (:class:`.upstream.SocketWait`), not pika's, so that
        the deliveries that arrive while it waits, most of them when handlers wait on I/O, are
        read off the socket too. Whatever pika's loop has to do (another thread's callback, a
        heartbeat, a frame that is not a delivery) ends the wait, and gets a turn of pika's
        loop here, or pika's iterator reads next.
        """
        deadline: float | None = None
        while True:
            if self._unsent_acks:
                # Sent here, not only by pika's loop, which does not run while deliveries keep
                # coming off the socket: the acks make room in the prefetch for the next ones.
                self._send_acks()
            read = upstream.deliveries_off_the_socket(self.channel, self._poller)
            if read is None:
                return None, False
            if read:
                upstream.run_due_timers(self.channel)  # pika's heartbeats, as a turn of its loop would
                self._off_socket.extend(read[1:])
                return read[0], False
            if self._wait is None:
                return None, False  # pika's iterator waits
            now = time.monotonic()
            if deadline is None:
                deadline = now + self._wait_seconds
            elif now >= deadline:
                return None, True
            # An ack that came since the acks were sent above found the flag down: it woke
            # pika's loop, and so ends this wait at once, for a turn of that loop that sends it.
            with self._acks_lock:
                self._waiting_here = True
            try:
                pika_due = self._wait.wait(deadline - now)
            finally:
                with self._acks_lock:
                    self._waiting_here = False
            if pika_due:
                upstream.pika_turn(self.channel)
                if upstream.buffered_deliveries(self.channel):
                    return None, False  # pika read them in its turn: its iterator hands them out
