"""Every private part of Dramatiq's RabbitmqBroker and of pika the bus relies on, and nowhere else.

The bus's RabbitMQ consumer extends Dramatiq's (a private class), and its batch publisher
drives pika's protocol-level channel under the BlockingChannel to wait for many confirms
at once. This module names each such dependency once; :func:`contract_problems` says
which of them no longer holds for the installed Dramatiq and pika.
``tests/brokers/test_upstream_contract.py`` runs it; ``make test-upstream`` runs it
against the newest releases.

Tested with Dramatiq 2.2.1 and pika 1.4.4.
"""

from __future__ import annotations

import inspect
import select
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from functools import cache, lru_cache
from typing import Any

import pika
import pika.adapters.base_connection
import pika.adapters.blocking_connection
import pika.adapters.select_connection
import pika.channel
import pika.connection
import pika.exceptions
from dramatiq.broker import MessageProxy
from dramatiq.brokers.rabbitmq import RabbitmqBroker, _RabbitmqConsumer, _RabbitmqMessage
from dramatiq.message import Message
from pika.adapters.utils.io_services_utils import _AsyncPlaintextTransport as _PlaintextTransport

from .. import contract

#: Dramatiq's RabbitMQ consumer, which the bus's consumer extends. It sets ``broker``,
#: ``queue_name``, ``connection``, ``channel``, ``iterator`` and ``known_tags``.
UpstreamConsumer = _RabbitmqConsumer

#: What the bus's consumer reads of Dramatiq's, once constructed.
CONSUMER_ATTRIBUTES = ("broker", "queue_name", "connection", "channel", "iterator", "known_tags")


def delivery(redelivered: bool, tag: int, message: Message[Any]) -> MessageProxy:
    """The message the worker runs, carrying its delivery tag as Dramatiq's consumer makes it."""
    proxy: MessageProxy = _RabbitmqMessage(redelivered, tag, message)  # type: ignore[no-untyped-call]
    return proxy


def delivery_tag(message: MessageProxy) -> int:
    """The delivery tag of a message made by :func:`delivery`."""
    return int(message._tag)


def reject(consumer: _RabbitmqConsumer, tag: int) -> None:
    """Reject a delivery without requeueing it, from the consumer's thread: the queue's
    dead-letter exchange routes it to ``<queue>.XQ``."""
    consumer._nack(tag)  # type: ignore[no-untyped-call]


def ack_unflushed(channel: pika.adapters.blocking_connection.BlockingChannel, tag: int) -> None:
    """Frame an ack without sending it yet: :func:`flush` sends every framed one in one write.

    The frame is packed here, as :func:`publish_unflushed` frames a publish: pika's
    marshaling of an ack alone takes 1.0 µs, this 0.25.
    """
    impl = channel._impl
    if not impl.is_open:
        impl.basic_ack(tag)  # raises pika's own error for the channel's state
    _emit(impl, _ACK_FRAME.pack(1, impl.channel_number, 13, 60, 80, tag, 0, 0xCE), 1)


#: A frame's type, channel and payload size; its payload follows, then :data:`_FRAME_END`
#: (AMQP 0-9-1, 4.2.3).
_FRAME_START = struct.Struct(">BHI")
_FRAME_END = b"\xce"
#: The content header frame of a persistent message (AMQP 0-9-1, 4.2.6.1): type 2, channel,
#: payload size 15, class 60 (Basic), weight 0, the body size, the property flags (bit 12:
#: delivery-mode), delivery-mode 2, frame end. With a priority (bit 11), one octet more.
_PERSISTENT_HEADER = struct.Struct(">BHIHHQHBB")
_PERSISTENT_HEADER_WITH_PRIORITY = struct.Struct(">BHIHHQHBBB")


def publish_unflushed(
    channel: pika.channel.Channel, routing_key: str, body: bytes, priority: int | None, *, mandatory: bool = False
) -> None:
    """Frame a persistent ``basic_publish`` of ``body`` to the default exchange, with
    ``priority`` if not None, on pika's protocol ``channel``; it goes out with the rest of a
    :func:`one_write` block, or at the next :func:`flush`.

    The same bytes as pika's ``basic_publish`` with ``BasicProperties(delivery_mode=2,
    priority=priority)`` (tests/brokers/test_batch.py compares them), counted as pika counts
    them, without the seven objects pika builds for each message: 0.9 µs against 3.9 for
    pika's marshaling alone; a fan-out of ten took a fifth less of the publishing thread's CPU.

    Raises:
      pika.exceptions.ChannelWrongStateError: The channel is not open, as pika raises it.
      pika.exceptions.ShortStringTooLong: ``routing_key`` is over 255 bytes in UTF-8.
      struct.error: ``priority`` is not an integer from 0 to 255.
    """
    if not channel.is_open:
        channel.basic_publish("", routing_key, body)  # raises pika's own error for the channel's state
    number = channel.channel_number
    size = len(body)
    if priority is None:
        header = _PERSISTENT_HEADER.pack(2, number, 15, 60, 0, size, 0x1000, 2, 0xCE)
    else:
        header = _PERSISTENT_HEADER_WITH_PRIORITY.pack(2, number, 16, 60, 0, size, 0x1800, 2, priority, 0xCE)
    method = _publish_method(number, routing_key, mandatory)
    chunk = channel.connection.params.frame_max - _FRAME_START.size - len(_FRAME_END)
    if 0 < size <= chunk:  # most messages: one body frame
        _emit(channel, b"".join((method, header, _FRAME_START.pack(3, number, size), body, _FRAME_END)), 3)
        return
    frames = [method, header]
    for start in range(0, size, chunk):
        part = body[start : start + chunk]
        frames += (_FRAME_START.pack(3, number, len(part)), part, _FRAME_END)
    _emit(channel, b"".join(frames), len(frames) // 3 + 2)


@lru_cache(maxsize=256)
def _publish_method(channel_number: int, routing_key: str, mandatory: bool) -> bytes:
    """The method frame of a Basic.Publish to the default exchange (AMQP 0-9-1, 1.8.3.7): the
    same for every message to one queue. Bounded: a routing key read from a forged lane head
    costs one entry at most."""
    key = routing_key.encode("utf-8")
    if len(key) > 255:
        raise pika.exceptions.ShortStringTooLong(key)
    # class 60, method 40, reserved ticket 0, exchange "" (length 0), routing key, the mandatory bit
    payload = struct.pack(">HHHBB", 60, 40, 0, 0, len(key)) + key + bytes([mandatory])
    return _FRAME_START.pack(1, channel_number, len(payload)) + payload + _FRAME_END


def _emit(channel: pika.channel.Channel, data: bytes, frames: int) -> None:
    """Hand framed bytes to pika's connection as its ``_output_marshaled_frames`` does."""
    connection: Any = channel.connection
    connection.bytes_sent += len(data)
    connection.frames_sent += frames
    connection._adapter_emit_data(data)


def flush(channel: pika.adapters.blocking_connection.BlockingChannel, *waiters: Callable[[], bool]) -> None:
    """Send what was framed on ``channel``'s connection; with ``waiters``, go on processing its
    I/O (callbacks run here) until one of them returns True, as the BlockingChannel waits for
    its own replies. Raises pika's error when the channel or its connection closes.

    Without waiters, when :func:`one_write` sent everything at once and pika holds nothing to
    send on an open channel, there is nothing to do: pika's own flush finds itself done after
    1.3 µs of checks (0.2 here), paid by every batch of acks, which with handlers that wait on
    I/O holds one or two.
    """
    if not waiters and channel.is_open and _quiet_transport(channel._impl.connection) is not None:
        return
    channel._flush_output(*waiters)


def buffered_deliveries(channel: pika.adapters.blocking_connection.BlockingChannel) -> int:
    """How many deliveries pika has read for ``channel``'s consumer and not yet handed out:
    the consumer's iterator returns that many without waiting for I/O. 0 if unknown."""
    generator = getattr(channel, "_queue_consumer_generator", None)
    pending = getattr(generator, "pending_events", None)
    return len(pending) if pending is not None else 0


def protocol_channel(channel: pika.adapters.blocking_connection.BlockingChannel) -> pika.channel.Channel:
    """pika's asynchronous channel under a BlockingChannel: the only way to confirm asynchronously."""
    impl: pika.channel.Channel = channel._impl
    return impl


def thread_state(broker: RabbitmqBroker) -> threading.local:
    """The broker's per-thread state, where its connection and channel live."""
    state: threading.local = broker.state
    return state


def queues_to_declare(broker: RabbitmqBroker) -> set[str]:
    """Queues the broker declares again before its next publish to them."""
    pending: set[str] = broker.queues_pending
    return pending


@contextmanager
def one_write(connection: pika.connection.Connection) -> Iterator[None]:
    """Hand the frames pika emits inside the block to the socket as one buffer, at the end.

    pika writes each frame of each message (method, header, body: three per message) with
    its own ``send`` system call, and RabbitMQ reads each on its own; a batch of ten costs
    thirty. Here the frames go out in one write, once every message of the batch was
    framed (none after an exception: the caller drops the connection, and the batch with
    it). If pika's connection has no ``_adapter_emit_data`` (another pika), the frames go
    out as pika sends them. See :func:`_write` for how they go out.
    """
    emit = getattr(connection, "_adapter_emit_data", None)
    if emit is None:
        yield
        return
    frames: list[bytes] = []
    connection._adapter_emit_data = frames.append  # this instance only
    try:
        yield
    finally:
        del connection._adapter_emit_data
    _write(connection, b"".join(frames), emit)


def _quiet_transport(connection: Any) -> Any:
    """The connection's transport when it is a plain socket, open, with nothing pika holds to
    send (whose order must hold); else None, and the caller leaves the socket to pika."""
    transport = getattr(connection, "_transport", None)
    if (
        isinstance(transport, _PlaintextTransport)
        and transport._state == _PlaintextTransport._STATE_ACTIVE
        and not transport.get_write_buffer_size()
    ):
        return transport
    return None


def _write(connection: pika.connection.Connection, data: bytes, emit: Callable[[bytes], None]) -> None:
    """Send ``data`` on the connection's socket now, when nothing else waits to go out.

    pika's transport only buffers a write and asks its I/O loop to say when the socket can
    be written: one more turn of the loop (a poll, two changes to the poll set, the
    dispatch) before the send, for every publish. A plain socket with nothing buffered
    takes the bytes at once; what it does not take, and everything when pika has bytes
    waiting (whose order must hold), an SSL socket or a failure of the socket, goes
    pika's own way (``emit``), which also reports the failure as pika does.
    """
    transport = _quiet_transport(connection)
    if transport is None:
        emit(data)
        return
    try:
        sent = transport._sock.send(data)
    except (BlockingIOError, InterruptedError):
        sent = 0
    except OSError:
        emit(data)  # pika's write meets the failure again, and closes the connection as it does
        return
    if sent < len(data):
        emit(data[sent:])


#: A Basic.Ack method frame: type 1, channel, payload size 13, class 60, method 80, delivery
#: tag, the ``multiple`` bit, frame end 0xCE (AMQP 0-9-1, 4.2.3 and 1.8.3).
_ACK_FRAME = struct.Struct(">BHIHHQBB")


def acks_off_the_socket(
    channel: pika.adapters.blocking_connection.BlockingChannel, poller: select.poll, timeout_ms: int
) -> list[tuple[int, bool]] | None:
    """The publisher confirms RabbitMQ sent ``channel``, read straight off the socket:
    ``(delivery tag, multiple)`` of each, or [] when nothing came within ``timeout_ms``.

    pika reads a confirm through a turn of its I/O loop (a poll, the dispatch, the transport's
    read, the frame's decoding and the lookup of its callback): 40-60 µs of CPU, a third of
    a single confirmed publish. When nothing but Basic.Ack frames for ``channel`` waits on a
    plain socket, and pika holds neither part of a frame nor bytes to send, this reads them
    and counts the bytes and frames as pika does (its heartbeat checker reads the counts).
    Anything else, any part of a frame, or a closed socket, stays on the socket for pika:
    None says that pika's own loop (:func:`flush`) must read next. ``poller`` polls the
    connection's socket for reading (:func:`socket_poller`).
    """
    connection: Any = channel._impl.connection
    transport = _quiet_transport(connection)
    if transport is None or connection._frame_buffer:
        return None
    if not poller.poll(timeout_ms):
        return []
    sock = transport._sock
    try:
        data = sock.recv(65536, socket.MSG_PEEK)
    except (BlockingIOError, InterruptedError):
        return []
    except OSError:
        return None
    size = _ACK_FRAME.size
    if not data or len(data) % size:
        return None
    number = channel.channel_number
    acks = []
    for offset in range(0, len(data), size):
        kind, on, length, class_id, method_id, tag, bits, end = _ACK_FRAME.unpack_from(data, offset)
        if kind != 1 or on != number or length != 13 or class_id != 60 or method_id != 80 or end != 0xCE:
            return None
        acks.append((tag, bool(bits & 1)))
    sock.recv(len(data))  # the bytes just peeked: whatever came after them stays
    connection.bytes_received += len(data)
    connection.frames_received += len(acks)
    return acks


#: The start of a Basic.Deliver method frame's payload: class 60, method 60 (AMQP 0-9-1, 1.8.3.9).
_DELIVER = b"\x00\x3c\x00\x3c"
#: A delivery's tag and its ``redelivered`` bit, after its consumer tag.
_TAG_AND_BITS = struct.Struct(">QB")
#: A content header's payload: class, weight, body size and property flags (AMQP 0-9-1, 4.2.6.1).
_CONTENT_HEADER = struct.Struct(">HHQH")
#: The properties a delivery read off the socket may carry: delivery-mode and priority, what
#: Dramatiq and the bus publish with. Anything else (RabbitMQ's headers on a message it
#: dead-lettered, say) is pika's to read.
_PLAIN_PROPERTIES = 0x1800
#: The most bytes looked at in one read: a delivery larger than this is pika's to read.
_DELIVERIES_PEEK_BYTES = 256 * 1024


def deliveries_off_the_socket(
    channel: pika.adapters.blocking_connection.BlockingChannel, poller: select.poll
) -> list[tuple[int, bool, bytes]] | None:
    """The deliveries to ``channel``'s consumer that wait whole on the socket, read straight off
    it: ``(delivery tag, redelivered, body)`` of each, in order; [] when nothing waits.

    pika reads a delivery through its I/O loop (the poll, the transport's read, three frames
    decoded into objects, the channel's dispatch, its consumer's event queue): 15-22 µs of CPU
    a delivery, measured on 150 waiting at once, where parsing the same bytes takes 0.6 µs.
    When pika holds no part of a frame, no bytes to send and no event for the consumer, this
    reads the whole deliveries at the front of what waits (a method frame for this channel's
    consumer, a content header with no property but delivery-mode and priority, the body's
    frames) and counts their bytes and frames as pika does; it stops at anything else, which
    stays on the socket for pika, as does a delivery not yet whole. None says that pika's own
    loop must read next: nothing this can read is at the front, or the channel is closing.
    """
    impl = channel._impl
    connection: Any = impl.connection
    transport = _quiet_transport(connection)
    consumer = getattr(channel, "_queue_consumer_generator", None)
    if transport is None or connection._frame_buffer or consumer is None or consumer.pending_events or not impl.is_open:
        return None
    if not poller.poll(0):
        return []
    sock = transport._sock
    try:
        data = sock.recv(_DELIVERIES_PEEK_BYTES, socket.MSG_PEEK)
    except (BlockingIOError, InterruptedError):
        return []
    except OSError:
        return None
    tag = consumer.consumer_tag
    deliveries, used, frames = _whole_deliveries(
        data, impl.channel_number, tag.encode() if isinstance(tag, str) else b""
    )
    if not deliveries:
        return None
    taken = 0
    while taken < used:  # the bytes just peeked: they are all there
        got = sock.recv(used - taken)
        if not got:
            break
        taken += len(got)
    connection.bytes_received += used
    connection.frames_received += frames
    return deliveries


def _whole_deliveries(
    data: bytes, channel_number: int, consumer_tag: bytes
) -> tuple[list[tuple[int, bool, bytes]], int, int]:
    """The whole deliveries at the front of ``data``, how many bytes and frames they take."""
    deliveries: list[tuple[int, bool, bytes]] = []
    size = len(data)
    offset = used = frames = 0
    start = _FRAME_START.size
    while True:
        # The method frame: Basic.Deliver to this consumer.
        if size - offset < start:
            break
        kind, number, length = _FRAME_START.unpack_from(data, offset)
        payload, end = offset + start, offset + start + length
        # Its payload: class and method, the consumer tag (its length, then it), the delivery
        # tag, the redelivered bit, then the exchange and routing key (a length each, at least).
        if kind != 1 or number != channel_number or end >= size or data[end] != 0xCE:
            break
        if length < 16 + len(consumer_tag) or data[payload : payload + 4] != _DELIVER:
            break
        field = payload + 5
        if data[payload + 4] != len(consumer_tag) or data[field : field + len(consumer_tag)] != consumer_tag:
            break
        delivery_tag, bits = _TAG_AND_BITS.unpack_from(data, field + len(consumer_tag))
        offset = end + 1
        # The content header.
        if size - offset < start:
            break
        kind, number, length = _FRAME_START.unpack_from(data, offset)
        payload, end = offset + start, offset + start + length
        if kind != 2 or number != channel_number or end >= size or data[end] != 0xCE or length < _CONTENT_HEADER.size:
            break
        class_id, _weight, body_size, flags = _CONTENT_HEADER.unpack_from(data, payload)
        if class_id != 60 or flags & ~_PLAIN_PROPERTIES:
            break
        offset = end + 1
        # The body's frames.
        parts: list[bytes] = []
        got, count = 0, 2
        while got < body_size:
            if size - offset < start:
                break
            kind, number, length = _FRAME_START.unpack_from(data, offset)
            payload, end = offset + start, offset + start + length
            if kind != 3 or number != channel_number or end >= size or data[end] != 0xCE or got + length > body_size:
                break
            parts.append(data[payload:end])
            got, count, offset = got + length, count + 1, end + 1
        if got < body_size:
            break
        deliveries.append((delivery_tag, bool(bits & 1), parts[0] if len(parts) == 1 else b"".join(parts)))
        used, frames = offset, frames + count
    return deliveries, used, frames


def run_due_timers(channel: pika.adapters.blocking_connection.BlockingChannel) -> None:
    """Run what pika's I/O loop has due on ``channel``'s connection (its heartbeats, callbacks
    other threads added), as each turn of its loop does: after confirms read off the socket,
    no turn of it ran."""
    channel._impl.connection.ioloop.process_timeouts()


class SocketWait:
    """The wait of a consumer's thread for its connection's socket, done here rather than in
    pika's I/O loop, so that what arrives meanwhile can be read off the socket.

    Three things end a wait: bytes (or a close) on the socket; a callback another thread gave
    pika's loop (``add_callback_threadsafe``, as Dramatiq's nack does), whose wake-up reaches
    pika's loop through a socket pair this also watches; and :meth:`wake`, for the consumer's
    own work from other threads (its acks). A wait never outlasts pika's next timer (its
    heartbeats, ``call_later``), so that those run on time.
    """

    def __init__(self, ioloop: Any, pika_wakeup: socket.socket, transport: Any) -> None:
        self._ioloop = ioloop
        self._pika_wakeup = pika_wakeup
        self._wakeup, self._waker = socket.socketpair()
        self._wakeup.setblocking(False)
        self._waker.setblocking(False)
        self._poller = select.poll()
        self._poller.register(transport._sock, select.POLLIN)
        self._poller.register(self._pika_wakeup, select.POLLIN)
        self._poller.register(self._wakeup, select.POLLIN)

    def wake(self) -> None:
        """End the current or next wait; from any thread."""
        # OSError: full (a wake-up is pending anyway) or closed (the consumer is gone)
        with suppress(OSError):
            self._waker.send(b"\0")

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds, less if pika's loop has a timer due sooner; True when
        pika's loop has work now (a callback, a timer due): the caller then gives it a turn."""
        due = self._ioloop._get_remaining_interval()
        if due is not None and due < timeout:
            timeout = due
        if self._poller.poll(timeout * 1000 if timeout > 0 else 0):
            # Wake-ups carry nothing: pika keeps its callbacks in a list of its own, which
            # _get_remaining_interval() reports (as 0), and one wake-up may be stale, its
            # callback run already by run_due_timers(). Left unread, it would end every wait.
            _drain(self._wakeup)
            _drain(self._pika_wakeup)
        return bool(self._ioloop._get_remaining_interval() == 0)

    def close(self) -> None:
        self._wakeup.close()
        self._waker.close()


def _drain(sock: socket.socket) -> None:
    try:
        while sock.recv(4096):
            pass
    except OSError:
        pass  # empty (BlockingIOError) or closed


def socket_wait(channel: pika.adapters.blocking_connection.BlockingChannel) -> SocketWait | None:
    """A :class:`SocketWait` for ``channel``'s connection; None when it has no plain socket, or
    pika's loop is not what it knows (the consumer then waits in pika's loop)."""
    connection = channel._impl.connection
    transport: Any = getattr(connection, "_transport", None)
    ioloop = getattr(connection, "ioloop", None)
    pika_wakeup = getattr(getattr(ioloop, "_poller", None), "_r_interrupt", None)
    if (
        not isinstance(transport, _PlaintextTransport)
        or not isinstance(pika_wakeup, socket.socket)
        or not callable(getattr(ioloop, "_get_remaining_interval", None))
    ):
        return None
    return SocketWait(ioloop, pika_wakeup, transport)


def pika_turn(channel: pika.adapters.blocking_connection.BlockingChannel) -> None:
    """One turn of pika's I/O loop that does not wait: it reads what waits and runs the
    callbacks and timers due; then what they framed (a nack, a heartbeat) is sent. Raises
    pika's error for a channel the broker closed, as the consumer's iterator would."""
    channel._process_data_events(time_limit=0)
    flush(channel)


def socket_poller(channel: pika.adapters.blocking_connection.BlockingChannel) -> select.poll | None:
    """A poller of the socket under ``channel``'s connection, for :func:`acks_off_the_socket`;
    None when the connection has no plain socket."""
    transport: Any = getattr(channel._impl.connection, "_transport", None)
    if not isinstance(transport, _PlaintextTransport):
        return None
    poller = select.poll()
    poller.register(transport._sock, select.POLLIN)
    return poller


@cache
def warn_if_broken() -> None:
    """Log once, at the first broker made, what of the contract the installed Dramatiq and pika break."""
    contract.warn_if_broken(__name__, ("dramatiq", "pika"), contract_problems(), "dramatiq~=2.2.1 and pika<1.5")


def contract_problems() -> list[str]:
    """What of this module's assumptions the installed Dramatiq and pika break; empty when all hold."""
    problems = []
    init = inspect.signature(_RabbitmqConsumer.__init__)
    if list(init.parameters)[1:] != ["broker", "queue_name", "prefetch", "timeout"]:
        problems.append(f"Dramatiq's _RabbitmqConsumer.__init__ is now {init}: RabbitmqConsumer passes it 4 arguments")
    for name in ("ack", "nack", "requeue", "close", "__next__", "_nack"):
        if not callable(getattr(_RabbitmqConsumer, name, None)):
            problems.append(f"Dramatiq's _RabbitmqConsumer has no method {name}()")
    if list(inspect.signature(_RabbitmqMessage.__init__).parameters)[1:] != ["redelivered", "tag", "message"]:
        problems.append("Dramatiq's _RabbitmqMessage no longer takes (redelivered, tag, message)")
    for name in ("basic_ack", "basic_publish", "confirm_delivery", "add_on_return_callback"):
        if not callable(getattr(pika.channel.Channel, name, None)):
            problems.append(f"pika's Channel has no method {name}()")
    blocking = pika.adapters.blocking_connection
    if not callable(getattr(blocking.BlockingChannel, "_flush_output", None)):
        problems.append("pika's BlockingChannel has no _flush_output(): acks would not be sent in batches")
    if "pending_events" not in inspect.getsource(blocking.BlockingChannel.consume):
        problems.append(
            "pika's BlockingChannel.consume no longer buffers in _queue_consumer_generator.pending_events: "
            "lane leases would be taken one delivery at a time"
        )
    generator_info = getattr(blocking, "_QueueConsumerGeneratorInfo", None)
    if generator_info is None or "self.consumer_tag = " not in inspect.getsource(generator_info.__init__):
        problems.append(
            "pika's BlockingChannel no longer keeps its consumer's tag in _queue_consumer_generator.consumer_tag: "
            "deliveries would not be read off the socket"
        )
    if "_impl" not in inspect.getsource(blocking.BlockingChannel.__init__):
        problems.append("pika's BlockingChannel no longer keeps its protocol channel in _impl")
    if not callable(getattr(pika.connection.Connection, "_adapter_emit_data", None)):
        problems.append("pika's Connection has no _adapter_emit_data(): batches would go out one frame at a time")
    # Functions' source only: inspect.getsource of a class parses its module, which CPython 3.11
    # can fail to do in two threads at once (the first brokers may be made by many threads).
    made = inspect.getsource(pika.adapters.base_connection.BaseConnection._proto_connection_made)
    if "self._transport = transport" not in made:
        problems.append("pika's Connection no longer keeps its transport in _transport: every publish waits a poll")
    transport_init = inspect.getsource(_PlaintextTransport.__mro__[1].__init__)
    for name in ("self._sock = ", "self._state = ", "self._tx_buffers"):
        if name not in transport_init:
            problems.append(f"pika's transport no longer sets {name.strip(' =')}: publishes could go out of order")
    if "self._frame_buffer" not in inspect.getsource(pika.connection.Connection._on_data_available):
        problems.append("pika's Connection keeps no part of a frame in _frame_buffer: see acks_off_the_socket()")
    if "self.bytes_received += " not in inspect.getsource(pika.connection.Connection._trim_frame_buffer):
        problems.append("pika's Connection no longer counts bytes_received as it reads: see acks_off_the_socket()")
    if not isinstance(getattr(pika.SelectConnection, "ioloop", None), property) or not callable(
        getattr(pika.adapters.select_connection.IOLoop, "process_timeouts", None)
    ):
        problems.append("pika's SelectConnection has no ioloop.process_timeouts(): see run_due_timers()")
    if "self._r_interrupt, self._w_interrupt = " not in inspect.getsource(
        pika.adapters.select_connection._PollerBase.__init__
    ) or not callable(getattr(pika.adapters.select_connection.IOLoop, "_get_remaining_interval", None)):
        problems.append(
            "pika's I/O loop no longer has _poller._r_interrupt or _get_remaining_interval(): "
            "the consumer could not wait on the socket itself (see SocketWait)"
        )
    if "self._poller = " not in inspect.getsource(pika.adapters.select_connection.IOLoop.__init__):
        problems.append("pika's IOLoop no longer keeps its poller in _poller: see SocketWait")
    if not callable(getattr(blocking.BlockingChannel, "_process_data_events", None)):
        problems.append("pika's BlockingChannel has no _process_data_events(): see pika_turn()")
    if not hasattr(_PlaintextTransport, "_STATE_ACTIVE") or not callable(
        getattr(_PlaintextTransport, "get_write_buffer_size", None)
    ):
        problems.append("pika's transport has no _STATE_ACTIVE or get_write_buffer_size(): see _write()")
    for name in ("state", "queues_pending"):
        if name not in inspect.getsource(RabbitmqBroker.__init__):
            problems.append(f"Dramatiq's RabbitmqBroker no longer sets {name}")
    return problems
