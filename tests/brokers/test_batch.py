"""Batch sends (enqueue_many) on a real Redis and a real RabbitMQ: a batch in one round trip, hooks per message,
and failures that name exactly what the broker accepted."""

from __future__ import annotations

import collections
import contextlib
import json
import socket
import struct
import time
import types
import uuid
from collections.abc import Iterator
from typing import Any

import pika
import pika.callback
import pika.channel
import pika.connection
import pika.exceptions
import pika.frame
import pika.spec
import pytest
import redis
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message
from dramatiq.middleware import Middleware

from dramatiq_eventbus.brokers import BatchFailed, support_for
from dramatiq_eventbus.brokers.rabbitmq import broker as rabbitmq_module
from dramatiq_eventbus.brokers.rabbitmq import confirms, upstream
from tests.support.broker_queues import RabbitmqQueues, RedisQueues
from tests.support.servers import require_rabbitmq, require_redis
from tests.support.threads import run_interleaved


class Hooks(Middleware):
    """Records every enqueue hook, as (hook, message id)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def before_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        self.calls.append(("before", message.message_id))

    def after_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        self.calls.append(("after", message.message_id))

    def of(self, hook: str) -> list[str]:
        return [message_id for name, message_id in self.calls if name == hook]


def enqueue_all(broker: Any, batch: list[Message[Any]]) -> None:
    """What the bus does with a batch on ``broker``: its batch send."""
    support_for(broker).send(batch)


def messages(queues: list[str], count: int) -> list[Message[Any]]:
    return [
        Message(
            queue_name=queues[n % len(queues)],
            actor_name=f"actor_{n}",
            args=({"n": n},),
            kwargs={},
            options={"broker_priority": n % 10},
        )
        for n in range(count)
    ]


@pytest.fixture
def queues() -> list[str]:
    run = uuid.uuid4().hex[:10]
    return [f"batch_{run}_a", f"batch_{run}_b"]


# -- Redis ----------------------------------------------------------------------------------


@pytest.fixture
def redis_broker(queues: list[str]) -> Iterator[tuple[RedisBroker, Hooks]]:
    url = require_redis()
    broker = RedisBroker(url=url)
    hooks = Hooks()
    broker.add_middleware(hooks)
    for queue in queues:
        broker.declare_queue(queue)
    yield broker, hooks
    broker.close()
    probe = RedisQueues(url)
    probe.delete(queues)
    probe.forget_brokers([broker.broker_id])
    probe.close()


@pytest.mark.redis
def test_a_redis_batch_is_written_whole_in_order_with_hooks_per_message(
    redis_broker: tuple[RedisBroker, Hooks], queues: list[str]
) -> None:
    broker, hooks = redis_broker
    batch_ = messages(queues, 6)
    enqueue_all(broker, batch_)

    ids = [m.message_id for m in batch_]
    assert hooks.of("before") == ids and hooks.of("after") == ids
    assert hooks.calls.index(("after", ids[0])) > hooks.calls.index(
        ("before", ids[-1])
    )  # every before, then every after
    client: Any = redis.Redis.from_url(require_redis())
    for queue in queues:
        redis_ids = client.lrange(f"dramatiq:{queue}", 0, -1)
        bodies = [json.loads(client.hget(f"dramatiq:{queue}.msgs", redis_id)) for redis_id in redis_ids]
        assert [body["message_id"] for body in bodies] == [m.message_id for m in batch_ if m.queue_name == queue]
        assert all(
            body["options"]["redis_message_id"] == rid.decode() for body, rid in zip(bodies, redis_ids, strict=True)
        )
    # Dramatiq's own consumer reads them back.
    consumer = broker.consume(queues[0], prefetch=10, timeout=100)
    got = [next(consumer) for _ in range(3)]
    assert [proxy.message_id for proxy in got if proxy] == ids[0::2]
    consumer.close()


@pytest.mark.redis
def test_redis_messages_sent_again_are_written_again_each_under_its_own_redis_id(
    redis_broker: tuple[RedisBroker, Hooks], queues: list[str]
) -> None:
    # A message takes its Redis id into its options when first sent; sent again (the same
    # objects, a copy of them, or two threads at once) it must not reuse it, which would
    # write one body over the other and list one id twice.
    broker, _ = redis_broker
    batch_ = messages(queues[:1], 3)
    enqueue_all(broker, batch_)
    enqueue_all(broker, batch_)
    enqueue_all(broker, [message.copy() for message in batch_])
    same = messages(queues[:1], 1)[0]
    run_interleaved([lambda: enqueue_all(broker, [same] * 50)] * 2)
    client: Any = redis.Redis.from_url(require_redis())
    listed = client.lrange(f"dramatiq:{queues[0]}", 0, -1)
    stored = client.hgetall(f"dramatiq:{queues[0]}.msgs")
    assert len(listed) == len(set(listed)) == len(stored) == 109
    assert all(json.loads(body)["options"]["redis_message_id"] == rid.decode() for rid, body in stored.items())
    sent = collections.Counter(json.loads(body)["message_id"] for body in stored.values())
    assert sent == {**{m.message_id: 3 for m in batch_}, same.message_id: 100}
    client.close()


@pytest.mark.redis
def test_a_redis_batch_that_cannot_be_sent_fails_naming_nothing_sent(queues: list[str]) -> None:
    require_redis()
    broker = RedisBroker(url="redis://127.0.0.1:1/0")  # nothing listens there
    hooks = Hooks()
    broker.add_middleware(hooks)
    with pytest.raises(BatchFailed) as raised:
        enqueue_all(broker, messages(queues, 3))
    assert raised.value.sent == 0 and raised.value.accepted == frozenset()
    assert isinstance(raised.value.cause, redis.ConnectionError)
    assert hooks.of("after") == []


# -- RabbitMQ -------------------------------------------------------------------------------


@pytest.fixture
def rabbitmq_broker(queues: list[str]) -> Iterator[tuple[RabbitmqBroker, Hooks]]:
    url = require_rabbitmq()
    broker = RabbitmqBroker(url=url, confirm_delivery=True, max_priority=10)
    hooks = Hooks()
    broker.add_middleware(hooks)
    for queue in queues:
        broker.declare_queue(queue)
    yield broker, hooks
    broker.close()
    RabbitmqQueues(url).delete(queues)


def ready(queue: str) -> list[dict[str, Any]]:
    return RabbitmqQueues(require_rabbitmq()).messages(queue)


@pytest.mark.rabbitmq
def test_a_rabbitmq_batch_is_confirmed_with_hooks_per_message(
    rabbitmq_broker: tuple[RabbitmqBroker, Hooks], queues: list[str]
) -> None:
    broker, hooks = rabbitmq_broker
    first, second = messages(queues, 10), messages(queues, 4)
    enqueue_all(broker, first)
    enqueue_all(broker, second)  # the same confirming channel, its delivery tags going on

    ids = [m.message_id for m in first + second]
    assert hooks.of("before") == ids and hooks.of("after") == ids
    for queue in queues:
        # RabbitMQ serves the highest broker priority first; within a priority, publish order.
        expected = sorted(
            (m for m in first + second if m.queue_name == queue), key=lambda m: -m.options["broker_priority"]
        )
        assert [body["message_id"] for body in ready(queue)] == [m.message_id for m in expected]


@pytest.mark.rabbitmq
def test_rabbitmq_takes_the_bus_s_frames_whole_persistent_and_with_their_priority(
    rabbitmq_broker: tuple[RabbitmqBroker, Hooks], queues: list[str]
) -> None:
    broker, _ = rabbitmq_broker
    # A body over three frames of the size RabbitMQ agrees (128 KiB), one empty of arguments, one small.
    sent = messages(queues[:1], 3)
    sent[0] = sent[0].copy(args=({"text": "x" * 300_000},))
    sent[1] = sent[1].copy(args=(), options={})  # no priority
    enqueue_all(broker, sent)

    connection = pika.BlockingConnection(pika.URLParameters(require_rabbitmq()))
    try:
        channel = connection.channel()
        got = {}
        while (delivery := channel.basic_get(queues[0], auto_ack=True))[0] is not None:
            _, properties, body = delivery
            got[json.loads(body)["message_id"]] = (properties.delivery_mode, properties.priority, body)
    finally:
        connection.close()
    assert set(got) == {m.message_id for m in sent}
    for message in sent:
        mode, priority, body = got[message.message_id]
        assert (mode, priority) == (2, message.options.get("broker_priority"))
        assert body == message.encode()


@pytest.mark.rabbitmq
def test_a_rabbitmq_queue_deleted_behind_the_brokers_back_is_declared_again(
    rabbitmq_broker: tuple[RabbitmqBroker, Hooks], queues: list[str]
) -> None:
    broker, hooks = rabbitmq_broker
    enqueue_all(broker, messages(queues, 2))
    RabbitmqQueues(require_rabbitmq()).delete(queues[:1])  # RabbitMQ returns what is sent there now

    again = messages(queues, 4)
    enqueue_all(broker, again)

    assert {body["message_id"] for body in ready(queues[0])} == {again[0].message_id, again[2].message_id}
    assert hooks.of("after")[-4:] == [m.message_id for m in again]


@pytest.mark.rabbitmq
def test_a_closed_rabbitmq_connection_is_opened_again(
    rabbitmq_broker: tuple[RabbitmqBroker, Hooks], queues: list[str]
) -> None:
    broker, _ = rabbitmq_broker
    enqueue_all(broker, messages(queues[:1], 2))
    broker.connection.close()  # as when RabbitMQ drops an idle publisher's connection

    enqueue_all(broker, messages(queues[:1], 3))

    assert len(ready(queues[0])) == 5


@pytest.mark.rabbitmq
def test_an_unreachable_rabbitmq_fails_naming_nothing_sent(queues: list[str]) -> None:
    require_rabbitmq()
    broker = RabbitmqBroker(
        url="amqp://guest:guest@127.0.0.1:1/%2F?connection_attempts=1", confirm_delivery=True, max_priority=10
    )
    hooks = Hooks()
    broker.add_middleware(hooks)
    with pytest.raises(BatchFailed) as raised:
        enqueue_all(broker, messages(queues, 3))
    assert raised.value.sent == 0 and raised.value.accepted == frozenset()
    assert isinstance(raised.value.cause, ConnectionClosed | pika.exceptions.AMQPConnectionError)
    assert hooks.of("after") == []


@pytest.mark.rabbitmq
def test_messages_rabbitmq_keeps_refusing_are_named_apart_from_those_it_confirmed(
    rabbitmq_broker: tuple[RabbitmqBroker, Hooks], queues: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    broker, hooks = rabbitmq_broker
    batch_ = messages(queues[:1], 3)
    attempts: list[list[str]] = []

    def nack_the_middle_one(self: Any, sent: list[Message[Any]], bodies: Any = None) -> Any:
        attempts.append([m.message_id for m in sent])
        refused = [i for i, m in enumerate(sent) if m is batch_[1]]
        return confirms.Outcome(
            confirmed=[i for i in range(len(sent)) if i not in refused], nacked=refused, returned=[]
        )

    monkeypatch.setattr(confirms.ConfirmingChannel, "publish", nack_the_middle_one)
    with pytest.raises(BatchFailed) as raised:
        enqueue_all(broker, batch_)

    failure = raised.value
    assert failure.sent == 1 and failure.accepted == frozenset({0, 2})
    assert isinstance(failure.cause, ConnectionClosed)
    # The first attempt sends all three; every later one only the refused message.
    assert attempts == [[m.message_id for m in batch_]] + [[batch_[1].message_id]] * (rabbitmq_module.ATTEMPTS - 1)
    assert hooks.of("after") == [batch_[0].message_id, batch_[2].message_id]


@pytest.mark.rabbitmq
def test_what_rabbitmq_confirmed_before_the_connection_failed_is_not_sent_again(
    rabbitmq_broker: tuple[RabbitmqBroker, Hooks], queues: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    broker, hooks = rabbitmq_broker
    wait_until = confirms.ConfirmingChannel._wait_until
    failures: list[int] = []

    def confirmed_then_cut(self: Any, done: Any) -> None:
        wait_until(self, done)  # every confirm of the batch arrives...
        if self._bodies and not failures:
            failures.append(1)
            raise pika.exceptions.StreamLostError("cut after the confirms")  # ...then the connection drops

    monkeypatch.setattr(confirms.ConfirmingChannel, "_wait_until", confirmed_then_cut)
    batch_ = messages(queues[:1], 3)
    enqueue_all(broker, batch_)

    assert failures == [1]
    assert sorted(body["message_id"] for body in ready(queues[0])) == sorted(m.message_id for m in batch_)
    assert hooks.of("after") == [m.message_id for m in batch_]


@pytest.mark.rabbitmq
def test_a_real_rabbitmq_s_confirms_are_read_off_the_socket(queues: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    url = require_rabbitmq()
    read: list[bool] = []
    off_the_socket = upstream.acks_off_the_socket

    def counted(*args: Any) -> Any:
        acks = off_the_socket(*args)
        read.append(bool(acks))
        return acks

    monkeypatch.setattr(upstream, "acks_off_the_socket", counted)
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        setup = connection.channel()
        setup.queue_declare(queues[0], durable=True)
        channel = confirms.ConfirmingChannel(connection)
        received = connection._impl.bytes_received
        for _ in range(200):
            outcome = channel.publish(messages(queues[:1], 3))
            assert outcome.confirmed == [0, 1, 2] and not outcome.failed
        assert connection.is_open and channel.channel.is_open
        # Most batches' confirms (RabbitMQ's one "multiple" ack each) came off the socket,
        # and pika counted their bytes (its heartbeat checker reads the count).
        assert sum(read) >= 100
        assert connection._impl.bytes_received >= received + 21 * sum(read)
        assert setup.queue_declare(queues[0], durable=True, passive=True).method.message_count == 600
    finally:
        with contextlib.suppress(Exception):
            connection.channel().queue_delete(queues[0])
        connection.close()


def test_a_confirm_past_the_last_message_published_confirms_only_what_was_published() -> None:
    # RabbitMQ never confirms a tag it did not give out; a peer that does must cost nothing
    # unbounded, and name no message that was never sent.
    channel = object.__new__(confirms.ConfirmingChannel)
    channel._first_tag, channel._last_tag = 5, 7
    channel._acked, channel._nacked, channel._returned = set(), set(), set()
    channel._bodies = [b"5", b"6", b"7"]
    channel._confirm(channel._acked, 7 + 1_000_000, True)
    channel._confirm(channel._nacked, 9, False)
    assert channel._acked == {5, 6, 7} and channel._nacked == set()
    assert channel.outcome().confirmed == [0, 1, 2]


class Transport(upstream._PlaintextTransport):
    """pika's plaintext transport on one end of a socket pair, with what pika would buffer."""

    def __init__(self, sock: socket.socket, waiting: bytes = b"") -> None:
        # Not pika's __init__, which registers the socket with an I/O loop.
        self._sock = sock
        self._state = self._STATE_ACTIVE
        self._tx_buffers = collections.deque([waiting] if waiting else [])
        self._tx_buffered_byte_count = len(waiting)


class Connection:
    """What the bus reads of pika's connection: its transport, its buffer of part of a frame, its counts."""

    def __init__(self, transport: Transport, frame_buffer: bytes = b"") -> None:
        self._transport = transport
        self._frame_buffer = frame_buffer
        self.bytes_received = 0
        self.frames_received = 0


class Channel:
    """A BlockingChannel as the bus reads it: its number and its protocol channel's connection."""

    def __init__(self, connection: Connection, number: int = 1) -> None:
        self.channel_number = number
        self._impl = types.SimpleNamespace(connection=connection, is_open=True)


class RecordingConnection:
    """pika's own framing (Connection._send_method and what it calls) on a connection that
    records what it would send instead of sending it."""

    _send_method = pika.connection.Connection._send_method
    _send_message = pika.connection.Connection._send_message
    _send_frame = pika.connection.Connection._send_frame
    _output_marshaled_frames = pika.connection.Connection._output_marshaled_frames
    is_closed = False

    def __init__(self, frame_max: int = pika.spec.FRAME_MAX_SIZE) -> None:
        self.params = types.SimpleNamespace(frame_max=frame_max)
        self._body_max_length = frame_max - 8  # as pika sets it once the frame size is agreed
        self.callbacks = pika.callback.CallbackManager()
        self.bytes_sent = self.frames_sent = 0
        self.sent: list[bytes] = []
        self._adapter_emit_data = self.sent.append


def recording_channel(frame_max: int = pika.spec.FRAME_MAX_SIZE, number: int = 3) -> pika.channel.Channel:
    """A pika protocol channel, open, on a :class:`RecordingConnection`."""
    channel = pika.channel.Channel(RecordingConnection(frame_max), number, lambda _channel: None)
    channel._state = channel.OPEN
    return channel


FRAME_MAX = 4096  # the least frame size AMQP allows: bodies past it in few bytes


@pytest.mark.parametrize("size", [0, 1, 800, FRAME_MAX - 8, FRAME_MAX - 7, 3 * (FRAME_MAX - 8) + 5])
@pytest.mark.parametrize("priority", [None, 0, 7, 255])
@pytest.mark.parametrize("mandatory", [False, True])
def test_a_publish_is_framed_and_counted_as_pika_frames_and_counts_it(
    size: int, priority: int | None, mandatory: bool
) -> None:
    body = bytes(n % 251 for n in range(size))
    pikas, ours = recording_channel(FRAME_MAX), recording_channel(FRAME_MAX)
    for key in ("bus_events", "ördered.DQ"):
        properties = pika.BasicProperties(delivery_mode=2, priority=priority)
        pikas.basic_publish("", key, body, properties, mandatory=mandatory)
        upstream.publish_unflushed(ours, key, body, priority, mandatory=mandatory)
    pika_connection, our_connection = pikas.connection, ours.connection
    assert b"".join(our_connection.sent) == b"".join(pika_connection.sent)  # type: ignore[attr-defined]
    assert our_connection.bytes_sent == pika_connection.bytes_sent
    assert our_connection.frames_sent == pika_connection.frames_sent


def test_an_ack_is_framed_and_counted_as_pika_frames_and_counts_it() -> None:
    pikas, ours = recording_channel(), recording_channel()
    for tag in (1, 2**40):
        pikas.basic_ack(tag)
        upstream.ack_unflushed(types.SimpleNamespace(_impl=ours), tag)  # type: ignore[arg-type]
    assert ours.connection.sent == pikas.connection.sent  # type: ignore[attr-defined]
    assert (ours.connection.bytes_sent, ours.connection.frames_sent) == (
        pikas.connection.bytes_sent,
        pikas.connection.frames_sent,
    )


@pytest.mark.parametrize(
    ("routing_key", "priority", "error"),
    [
        ("q" * 256, None, pika.exceptions.ShortStringTooLong),
        ("é" * 128, None, pika.exceptions.ShortStringTooLong),  # 256 bytes in UTF-8
        ("queue", 256, struct.error),
        ("queue", -1, struct.error),
        ("queue", "5", struct.error),
    ],
)
def test_what_pika_cannot_frame_fails_as_in_pika_with_nothing_framed(
    routing_key: str, priority: Any, error: type[Exception]
) -> None:
    pikas, ours = recording_channel(), recording_channel()
    with pytest.raises(error):
        pikas.basic_publish("", routing_key, b"body", pika.BasicProperties(delivery_mode=2, priority=priority))
    with pytest.raises(error):
        upstream.publish_unflushed(ours, routing_key, b"body", priority)
    assert ours.connection.sent == [] and ours.connection.bytes_sent == 0  # type: ignore[attr-defined]


def test_a_channel_not_open_refuses_a_publish_and_an_ack_as_pika_does() -> None:
    channel = recording_channel()
    channel._state = channel.CLOSED
    with pytest.raises(pika.exceptions.ChannelWrongStateError):
        upstream.publish_unflushed(channel, "queue", b"body", None)
    with pytest.raises(pika.exceptions.ChannelWrongStateError):
        upstream.ack_unflushed(types.SimpleNamespace(_impl=channel), 1)  # type: ignore[arg-type]
    assert channel.connection.sent == []  # type: ignore[attr-defined]


def ack_frame(tag: int, multiple: bool = False, channel: int = 1) -> bytes:
    return pika.frame.Method(channel, pika.spec.Basic.Ack(delivery_tag=tag, multiple=multiple)).marshal()


@contextlib.contextmanager
def socket_pair(frame_buffer: bytes = b"") -> Iterator[tuple[Channel, socket.socket]]:
    """A channel whose connection reads one end of a socket pair; the test writes the other end."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    try:
        yield Channel(Connection(Transport(ours), frame_buffer)), theirs
    finally:
        ours.close()
        theirs.close()


def read_acks(channel: Channel) -> list[tuple[int, bool]] | None:
    poller = upstream.socket_poller(channel)  # type: ignore[arg-type]
    assert poller is not None
    return upstream.acks_off_the_socket(channel, poller, 20)  # type: ignore[arg-type]


def test_acks_waiting_alone_are_read_off_the_socket_and_counted_as_pika_counts() -> None:
    with socket_pair() as (channel, theirs):
        frames = ack_frame(7) + ack_frame(9, multiple=True)
        theirs.sendall(frames)
        assert read_acks(channel) == [(7, False), (9, True)]
        connection = channel._impl.connection
        assert connection.bytes_received == len(frames) and connection.frames_received == 2
        assert read_acks(channel) == []  # nothing left: the wait timed out


@pytest.mark.parametrize(
    "waiting",
    [
        ack_frame(7) + pika.frame.Heartbeat().marshal(),  # another frame after the ack
        pika.frame.Method(1, pika.spec.Basic.Nack(delivery_tag=7)).marshal(),
        ack_frame(7, channel=2),  # another channel's
        ack_frame(7)[:-3],  # part of a frame
        ack_frame(7)[:-1] + b"\x00",  # no frame end
    ],
    ids=["then-a-heartbeat", "a-nack", "another-channel", "part-of-a-frame", "bad-frame-end"],
)
def test_anything_but_whole_acks_of_the_channel_stays_on_the_socket_for_pika(waiting: bytes) -> None:
    with socket_pair() as (channel, theirs):
        theirs.sendall(waiting)
        assert read_acks(channel) is None
        assert channel._impl.connection.bytes_received == 0
        assert channel._impl.connection._transport._sock.recv(100) == waiting  # all still there, for pika


def test_acks_are_left_to_pika_while_it_holds_part_of_a_frame() -> None:
    with socket_pair(frame_buffer=ack_frame(6)[:5]) as (channel, theirs):
        theirs.sendall(ack_frame(7))
        assert read_acks(channel) is None


def test_a_socket_the_server_closed_is_left_to_pika() -> None:
    with socket_pair() as (channel, theirs):
        theirs.shutdown(socket.SHUT_WR)  # pika must read the end of the stream, and close the connection
        assert read_acks(channel) is None


@pytest.mark.parametrize("waiting", [b"", b"frames pika framed before"])
def test_a_batch_goes_to_the_socket_at_once_only_when_nothing_waits_to_go_before_it(waiting: bytes) -> None:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.setblocking(False)
    emitted: list[bytes] = []
    upstream._write(Connection(Transport(ours, waiting)), b"the batch", emitted.append)
    if waiting:
        assert emitted == [b"the batch"]  # pika's way, after what it holds
        with pytest.raises(BlockingIOError):
            theirs.recv(100)
    else:
        assert emitted == [] and theirs.recv(100) == b"the batch"
    ours.close()
    theirs.close()


CONSUMER_TAG = "ctag1.0123456789abcdef"


class ConsumingChannel(Channel):
    """A BlockingChannel consuming, as :func:`upstream.deliveries_off_the_socket` reads it."""

    def __init__(self, connection: Connection, number: int = 1, pending: tuple[Any, ...] = ()) -> None:
        super().__init__(connection, number)
        self._impl.channel_number = number
        self._queue_consumer_generator = types.SimpleNamespace(
            consumer_tag=CONSUMER_TAG, pending_events=collections.deque(pending)
        )


def delivery_frames(
    tag: int,
    body: bytes,
    *,
    redelivered: bool = False,
    channel: int = 1,
    consumer_tag: str = CONSUMER_TAG,
    properties: pika.BasicProperties | None = None,
    frame_max: int = 4096,
) -> bytes:
    """A delivery as RabbitMQ sends it, framed by pika's own code."""
    method = pika.spec.Basic.Deliver(
        consumer_tag=consumer_tag, delivery_tag=tag, redelivered=redelivered, exchange="", routing_key="events"
    )
    if properties is None:
        properties = pika.BasicProperties(delivery_mode=2, priority=4)
    frames = [pika.frame.Method(channel, method).marshal(), pika.frame.Header(channel, len(body), properties).marshal()]
    chunk = frame_max - 8
    frames += [pika.frame.Body(channel, body[start : start + chunk]).marshal() for start in range(0, len(body), chunk)]
    return b"".join(frames)


@contextlib.contextmanager
def consuming_pair(
    frame_buffer: bytes = b"", pending: tuple[Any, ...] = ()
) -> Iterator[tuple[ConsumingChannel, socket.socket]]:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    try:
        yield ConsumingChannel(Connection(Transport(ours), frame_buffer), pending=pending), theirs
    finally:
        ours.close()
        theirs.close()


def read_deliveries(channel: ConsumingChannel) -> list[tuple[int, bool, bytes]] | None:
    poller = upstream.socket_poller(channel)  # type: ignore[arg-type]
    assert poller is not None
    time.sleep(0.01)  # what was sent is waiting
    return upstream.deliveries_off_the_socket(channel, poller)  # type: ignore[arg-type]


def test_whole_deliveries_are_read_off_the_socket_and_counted_as_pika_counts() -> None:
    big = bytes(n % 251 for n in range(3 * 4088 + 5))  # three full body frames and a bit
    waiting = (
        delivery_frames(1, b'{"n": 1}')
        + delivery_frames(2, b"", redelivered=True)  # no body frame at all
        + delivery_frames(3, big)
        + delivery_frames(4, b"x", properties=pika.BasicProperties())  # no property
        + delivery_frames(5, b"y", properties=pika.BasicProperties(delivery_mode=1))
    )
    with consuming_pair() as (channel, theirs):
        theirs.sendall(waiting)
        got = read_deliveries(channel)
        assert got == [(1, False, b'{"n": 1}'), (2, True, b""), (3, False, big), (4, False, b"x"), (5, False, b"y")]
        connection = channel._impl.connection
        assert connection.bytes_received == len(waiting)
        assert connection.frames_received == 3 + 2 + 6 + 3 + 3
        assert read_deliveries(channel) == []  # nothing left


@pytest.mark.parametrize(
    "after",
    [
        pika.frame.Heartbeat().marshal(),
        delivery_frames(9, b"z", channel=2),  # another channel's
        delivery_frames(9, b"z", consumer_tag="ctag1.another"),  # another consumer's
        delivery_frames(9, b"z", consumer_tag=CONSUMER_TAG[:-1] + "X"),  # another's, as long as this one's
        delivery_frames(9, b"z", properties=pika.BasicProperties(delivery_mode=2, headers={"x-death": []})),
        delivery_frames(9, b"a body not yet whole")[:-5],
        delivery_frames(9, b"z")[:-1] + b"\x00",  # no frame end
        pika.frame.Method(1, pika.spec.Basic.Cancel(consumer_tag=CONSUMER_TAG)).marshal(),
        struct.pack(">BHI", 1, 1, 2) + b"\x00\x3c\xce",  # a method frame too short for anything
        struct.pack(">BHI", 1, 1, 5) + b"\x00\x3c\x00\x3c\x16\xce",  # a Deliver cut after its tag's length
    ],
    ids=[
        "heartbeat",
        "another-channel",
        "another-consumer",
        "another-consumer-same-length",
        "headers",
        "part-of-one",
        "bad-frame-end",
        "cancel",
        "short-method-frame",
        "cut-deliver",
    ],
)
def test_what_this_cannot_read_whole_stays_on_the_socket_for_pika(after: bytes) -> None:
    first = delivery_frames(1, b"first")
    with consuming_pair() as (channel, theirs):
        theirs.sendall(first + after)
        assert read_deliveries(channel) == [(1, False, b"first")]
        assert channel._impl.connection.bytes_received == len(first)
        assert read_deliveries(channel) is None  # pika's to read
        assert channel._impl.connection._transport._sock.recv(len(after) + 10) == after


@pytest.mark.parametrize(
    ("frame_buffer", "pending"),
    [(b"\x01\x00", ()), (b"", ("an event pika holds",))],
    ids=["pika-holds-part-of-a-frame", "pika-holds-an-event"],
)
def test_deliveries_are_left_to_pika_while_it_holds_what_came_before(
    frame_buffer: bytes, pending: tuple[Any, ...]
) -> None:
    with consuming_pair(frame_buffer, pending) as (channel, theirs):
        theirs.sendall(delivery_frames(1, b"first"))
        assert read_deliveries(channel) is None


class FlushingChannel(Channel):
    """A BlockingChannel as :func:`upstream.flush` reads it, recording pika's flushes."""

    def __init__(self, connection: Connection, *, is_open: bool = True) -> None:
        super().__init__(connection)
        self.is_open = is_open
        self.flushes: list[tuple[Any, ...]] = []

    def _flush_output(self, *waiters: Any) -> None:
        self.flushes.append(waiters)


@pytest.mark.parametrize(
    ("waiting", "is_open", "waiters", "flushed"),
    [
        (b"", True, (), False),  # one_write sent everything: nothing to do
        (b"acks pika holds", True, (), True),
        (b"", False, (), True),  # pika's flush raises for the closed channel
        (b"", True, (bool,), True),  # a wait for replies
    ],
    ids=["nothing-held", "bytes-held", "closed", "waiting"],
)
def test_a_flush_goes_to_pika_unless_nothing_waits_to_go(
    waiting: bytes, is_open: bool, waiters: tuple[Any, ...], flushed: bool
) -> None:
    ours, theirs = socket.socketpair()
    channel = FlushingChannel(Connection(Transport(ours, waiting)), is_open=is_open)
    upstream.flush(channel, *waiters)  # type: ignore[arg-type]
    assert channel.flushes == ([waiters] if flushed else [])
    ours.close()
    theirs.close()


def test_what_the_socket_does_not_take_goes_pikas_way() -> None:
    ours, theirs = socket.socketpair()
    ours.close()  # a failed socket: pika's own write meets the failure and closes the connection
    emitted: list[bytes] = []
    upstream._write(Connection(Transport(ours)), b"the batch", emitted.append)
    assert emitted == [b"the batch"]
    theirs.close()
