"""Publishing a batch to RabbitMQ with one wait for all its confirms."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Any

import pika
import pika.exceptions
import pika.spec
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.message import Message

from ..sending import encoded_all
from . import upstream

#: How long a wait for confirms polls the socket itself before it lets pika's I/O loop wait
#: (which also runs pika's timers, such as its heartbeats).
FAST_WAIT_MS = 50


class Outcome:
    """What RabbitMQ said about one batch, by position in it.

    Parameters:
      confirmed(list[int]): Acknowledged and routed to a queue.
      nacked(list[int]): Refused by RabbitMQ (an internal error of the queue).
      returned(list[int]): Acknowledged but returned unroutable: the queue does not exist.
    """

    def __init__(self, confirmed: list[int], nacked: list[int], returned: list[int]) -> None:
        self.confirmed = confirmed
        self.nacked = nacked
        self.returned = returned

    @property
    def failed(self) -> bool:
        return bool(self.nacked or self.returned)

    def error(self) -> Exception:
        error: Exception = pika.exceptions.NackError([]) if self.nacked else pika.exceptions.UnroutableError([])
        return error


class ConfirmingChannel:
    """A channel in publisher-confirm mode that does not wait after each message.

    pika's BlockingChannel waits for the confirm of every basic_publish in confirm mode.
    This channel turns confirm mode on at the protocol level instead (on the underlying
    ``pika.channel.Channel``), so that the BlockingChannel publishes without waiting,
    and counts the confirms itself: a confirm for delivery tag *n* with ``multiple``
    covers every tag up to *n*. One lives per broker connection, that is, per thread,
    next to the broker's own channel, and closes with the connection.

    Parameters:
      connection(pika.BlockingConnection): The broker's connection of this thread.
    """

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.channel = connection.channel()
        self._last_tag = 0  # the delivery tag of the last message published on this channel
        self._first_tag = 1  # the delivery tag of the current batch's first message
        self._acked: set[int] = set()
        self._nacked: set[int] = set()
        self._returned: set[bytes] = set()
        self._bodies: list[bytes] = []  # the last batch's, by position
        self._selected = False
        self._poller: Any = None  # made at the first wait for confirms, when the socket is open
        # pika's own channel under the BlockingChannel: the only way to confirm asynchronously.
        self.protocol_channel = upstream.protocol_channel(self.channel)
        self.protocol_channel.add_on_return_callback(self._on_return)
        self.protocol_channel.confirm_delivery(ack_nack_callback=self._on_confirm, callback=self._on_select_ok)
        self._wait_until(lambda: self._selected)

    @classmethod
    def of(cls, broker: RabbitmqBroker) -> ConfirmingChannel:
        """The broker's confirming channel for this thread, made on its connection if needed."""
        connection = broker.connection
        state = upstream.thread_state(broker)
        channel: ConfirmingChannel | None = getattr(state, "eventbus_confirming_channel", None)
        if channel is None or channel.connection is not connection or not channel.channel.is_open:
            channel = state.eventbus_confirming_channel = cls(connection)
        return channel

    def publish(self, messages: Sequence[Message[Any]], bodies: Sequence[bytes] | None = None) -> Outcome:
        """Publish ``messages`` as RabbitmqBroker.enqueue would, then wait for all their confirms.

        Parameters:
          messages(Sequence[Message]): The batch, in order.
          bodies(Sequence[bytes] | None): Their encodings, when the caller made them already.

        Raises:
          pika.exceptions.AMQPError: The connection or the channel failed; :meth:`outcome` then
            still says which messages RabbitMQ had confirmed.
        """
        if bodies is None:
            bodies = encoded_all(messages)
        self._first_tag = self._last_tag + 1
        self._acked.clear()
        self._nacked.clear()
        self._returned.clear()
        self._bodies = []
        try:
            channel = self.protocol_channel
            with upstream.one_write(channel.connection):
                for message, body in zip(messages, bodies, strict=True):
                    upstream.publish_unflushed(
                        channel, message.queue_name, body, message.options.get("broker_priority"), mandatory=True
                    )
                    self._bodies.append(body)
                    self._last_tag += 1
        except BaseException:
            # The delivery tags counted here no longer match RabbitMQ's: the next batch gets a new channel.
            self._close()
            raise
        self._wait_until(lambda: len(self._acked) + len(self._nacked) >= len(messages))
        return self.outcome()

    def outcome(self) -> Outcome:
        """What RabbitMQ said so far about the batch :meth:`publish` sent last, by position in it."""
        positions = {tag - self._first_tag for tag in self._acked}
        returned = sorted(position for position in positions if self._bodies[position] in self._returned)
        return Outcome(
            confirmed=sorted(positions.difference(returned)),
            nacked=sorted(tag - self._first_tag for tag in self._nacked),
            returned=returned,
        )

    def _close(self) -> None:
        with suppress(Exception):
            self.channel.close()

    def _wait_until(self, done: Callable[[], bool]) -> None:
        """Process the connection's I/O until ``done()``, as a BlockingChannel waits for its own
        replies; pika's errors propagate.

        Measured against ``process_data_events`` woken by ``add_callback_threadsafe`` (what this
        did before): 18 % less CPU for a batch of 10, 30 % less for a single message.
        """
        if not self.channel.is_open:
            raise pika.exceptions.ChannelWrongStateError("the confirming channel closed")
        if self._poller is None:
            self._poller = upstream.socket_poller(self.channel)
        while self._poller is not None and not done():
            acks = upstream.acks_off_the_socket(self.channel, self._poller, FAST_WAIT_MS)
            if not acks:
                break  # pika's way: something else came, or nothing yet (its timers must run)
            for tag, multiple in acks:
                self._confirm(self._acked, tag, multiple)
            upstream.run_due_timers(self.channel)
        upstream.flush(self.channel, done)
        if not done():
            raise pika.exceptions.ChannelWrongStateError("the confirming channel closed")

    # pika calls these from inside _wait_until or basic_publish, in this thread.

    def _on_select_ok(self, _frame: Any) -> None:
        self._selected = True

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        outcome = self._acked if isinstance(method, pika.spec.Basic.Ack) else self._nacked
        self._confirm(outcome, method.delivery_tag, method.multiple)

    def _confirm(self, outcome: set[int], delivery_tag: int, multiple: bool) -> None:
        first = self._first_tag if multiple else delivery_tag
        # Never past the last tag published: a confirm for more (from a broken or hostile
        # peer) would cost time and memory without bound, and name messages never sent.
        outcome.update(
            tag
            for tag in range(max(first, self._first_tag), min(delivery_tag, self._last_tag) + 1)
            if tag not in self._acked and tag not in self._nacked
        )

    def _on_return(self, _channel: Any, _method: Any, _properties: Any, body: bytes) -> None:
        # RabbitMQ returns an unroutable mandatory message before it acks it.
        self._returned.add(body)
