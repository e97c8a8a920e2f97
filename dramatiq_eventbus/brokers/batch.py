"""Sending all the messages of one publish() together.

A fan-out to ten handlers should not cost ten round trips.

- On Redis, the messages go in one call of one Lua script, which also makes the fan-out
  all-or-nothing. A single message goes the same way: the script is shorter than
  Dramatiq's dispatch call, and it skips the ``dataclasses.replace`` copy.
- On RabbitMQ with publisher confirms (the bus's own brokers), they are published on a
  channel of their own without waiting after each one, then their confirms are awaited
  together: one wait for the broker's disk instead of one per message. A failure names
  exactly the messages RabbitMQ confirmed.
- Elsewhere (a StubBroker, RabbitMQ without confirms, a single message on RabbitMQ) they
  are sent one by one, and a failure says how many were sent.

Every message still passes through the broker's ``enqueue`` middleware hooks, as with
``broker.enqueue``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any
from uuid import uuid4

from dramatiq.broker import Broker
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis
from dramatiq.message import Message

#: As RabbitmqBroker.enqueue: how many times a batch is tried on a broken connection.
RABBITMQ_ATTEMPTS = 6


class BatchFailed(Exception):
    """Sending a batch failed after ``sent`` of its messages were accepted by the broker.

    Parameters:
      sent(int): How many messages, from the start of the batch, the broker accepted.
      cause(BaseException): What failed.
      accepted(frozenset[int] | None): The positions of every message the broker accepted,
        when they need not be the first ``sent`` ones (RabbitMQ confirms each message on
        its own); None means exactly the first ``sent``.
    """

    def __init__(self, sent: int, cause: BaseException, accepted: frozenset[int] | None = None) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.sent = sent
        self.cause = cause
        self.accepted = frozenset(range(sent)) if accepted is None else accepted


def enqueue_all(broker: Broker, messages: Sequence[Message[Any]]) -> None:
    """Enqueue ``messages`` on ``broker``, in one round trip where the broker allows it.

    Raises:
      BatchFailed: Naming which messages were accepted before the failure.
    """
    if messages and _is_redis(broker):
        _enqueue_redis_pipeline(broker, messages)
    elif len(messages) > 1 and _is_confirming_rabbitmq(broker):
        _enqueue_rabbitmq_confirmed(broker, messages)
    else:
        for index, message in enumerate(messages):
            try:
                broker.enqueue(message)
            except Exception as exc:  # Dramatiq, redis-py and pika errors share no base class
                raise BatchFailed(index, exc) from exc


def _is_redis(broker: Broker) -> bool:
    return isinstance(broker, RedisBroker)


def _is_confirming_rabbitmq(broker: Broker) -> bool:
    return isinstance(broker, RabbitmqBroker) and bool(broker.confirm_delivery)


def _emit_before_enqueue(broker: Broker, messages: Sequence[Message[Any]]) -> None:
    """Every ``before_enqueue`` hook first: a middleware that refuses one message stops the batch unsent."""
    for message in messages:
        try:
            broker.emit_before("enqueue", message, None)
        except Exception as exc:
            raise BatchFailed(0, exc) from exc


# -- Redis ----------------------------------------------------------------------------------

#: What RedisBroker's dispatch script does for "enqueue" (dispatch.lua, Dramatiq 1.x-2.x), for
#: every message of a batch in one call: heartbeat the sender, then for each message store its
#: body under its Redis id and append the id to its queue. One script runs atomically, so a
#: fan-out is written whole or not at all, in one round trip and one command.
#: KEYS: namespace. ARGV: timestamp, broker id, then queue name, Redis id, body for each message.
ENQUEUE_MANY = """
local namespace = KEYS[1]
redis.call("zadd", namespace .. ":__heartbeats__", ARGV[1], ARGV[2])
for i = 3, #ARGV, 3 do
    local queue = namespace .. ":" .. ARGV[i]
    redis.call("hset", queue .. ".msgs", ARGV[i + 1], ARGV[i + 2])
    redis.call("rpush", queue, ARGV[i + 1])
end
return (#ARGV - 2) / 3
"""


def _enqueue_redis_pipeline(broker: Any, messages: Sequence[Message[Any]]) -> None:
    """What ``RedisBroker.enqueue`` does per message, for the whole batch in one script call.

    The keys are RedisBroker's (``<namespace>:<queue>`` list of ids, ``.msgs`` hash of
    bodies); the tests on a real Redis check that a Dramatiq worker consumes what this
    writes. Queue maintenance, which RedisBroker runs on a small share of its calls, is
    left to the workers.
    """
    prepared = [with_redis_id(message, str(uuid4())) for message in messages]
    _emit_before_enqueue(broker, prepared)
    args: list[Any] = [current_millis(), broker.broker_id]
    for message in prepared:
        args += (message.queue_name, message.options["redis_message_id"], message.encode())
    try:
        _enqueue_many_script(broker)(keys=[broker.namespace], args=args)
    except Exception as exc:
        raise BatchFailed(0, exc) from exc  # one atomic script: none of them was written
    for message in prepared:
        broker.emit_after("enqueue", message, None)


def with_redis_id(message: Message[Any], redis_id: str) -> Message[Any]:
    """``message.copy(options={"redis_message_id": redis_id})`` as RedisBroker.enqueue does, without
    ``dataclasses.replace``, which costs more than the rest of the copy (a tenth of a fan-out's CPU)."""
    return Message(
        queue_name=message.queue_name,
        actor_name=message.actor_name,
        args=message.args,
        kwargs=message.kwargs,
        options={**message.options, "redis_message_id": redis_id},
        message_id=message.message_id,
        message_timestamp=message.message_timestamp,
    )


def _enqueue_many_script(broker: Any) -> Any:
    """The broker's :data:`ENQUEUE_MANY`, registered once on its client (redis-py loads it when missing)."""
    script = broker.scripts.get("eventbus_enqueue_many")
    if script is None:
        script = broker.scripts["eventbus_enqueue_many"] = broker.client.register_script(ENQUEUE_MANY)
    return script


# -- RabbitMQ -------------------------------------------------------------------------------


def _enqueue_rabbitmq_confirmed(broker: Any, messages: Sequence[Message[Any]]) -> None:
    """Publish every message, then wait once for RabbitMQ to confirm them all.

    As ``RabbitmqBroker.enqueue`` does for one message, a broken connection is opened
    again and the batch tried again, up to :data:`RABBITMQ_ATTEMPTS` times; only the
    messages not yet confirmed are sent again. A message RabbitMQ returned as unroutable
    (its queue was deleted) has its queue declared again first.
    """
    import pika.exceptions
    from dramatiq.common import q_name
    from dramatiq.errors import ConnectionClosed

    _emit_before_enqueue(broker, messages)
    accepted: set[int] = set()
    attempts = 0
    while True:
        pending = [index for index in range(len(messages)) if index not in accepted]
        if not pending:
            break
        channel: _ConfirmingChannel | None = None
        try:
            for queue_name in dict.fromkeys(messages[index].queue_name for index in pending):
                broker.declare_queue(queue_name, ensure=True)
            channel = _ConfirmingChannel.of(broker)
            outcome = channel.publish([messages[index] for index in pending])
        except (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError) as exc:
            if channel is not None:
                # What RabbitMQ confirmed before the connection failed is on its queue: never send it again.
                accepted.update(pending[position] for position in channel.outcome().confirmed)
            del broker.connection  # the next attempt, or the next caller, opens a new one
            failure: BaseException = exc
        except Exception as exc:  # e.g. Dramatiq's ConnectionClosed after its own attempts to declare
            raise _give_up(broker, messages, accepted, exc) from exc
        else:
            accepted.update(pending[position] for position in outcome.confirmed)
            if not outcome.failed:
                break
            for position in outcome.returned:
                broker.queues_pending.add(q_name(messages[pending[position]].queue_name))
            failure = outcome.error()
        attempts += 1
        if attempts >= RABBITMQ_ATTEMPTS:
            cause = ConnectionClosed(failure)  # type: ignore[no-untyped-call]
            raise _give_up(broker, messages, accepted, cause) from failure
    for message in messages:
        broker.emit_after("enqueue", message, None)


def _give_up(broker: Broker, messages: Sequence[Message[Any]], accepted: set[int], cause: BaseException) -> BatchFailed:
    """The failure to raise, after the ``after_enqueue`` hooks of the messages RabbitMQ did confirm."""
    for index in sorted(accepted):
        broker.emit_after("enqueue", messages[index], None)
    sent = next((index for index in range(len(messages)) if index not in accepted), len(messages))
    return BatchFailed(sent, cause, frozenset(accepted))


class _Outcome:
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
        import pika.exceptions

        error: Exception = pika.exceptions.NackError([]) if self.nacked else pika.exceptions.UnroutableError([])
        return error


class _ConfirmingChannel:
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
        self._done: Callable[[], bool] | None = None
        self._selected = False
        # pika's own channel under the BlockingChannel: the only way to confirm asynchronously.
        self._impl = self.channel._impl
        self._impl.add_on_return_callback(self._on_return)
        self._impl.confirm_delivery(ack_nack_callback=self._on_confirm, callback=self._on_select_ok)
        self._wait_until(lambda: self._selected)

    @classmethod
    def of(cls, broker: Any) -> _ConfirmingChannel:
        """The broker's confirming channel for this thread, made on its connection if needed."""
        connection = broker.connection
        channel: _ConfirmingChannel | None = getattr(broker.state, "eventbus_confirming_channel", None)
        if channel is None or channel.connection is not connection or not channel.channel.is_open:
            channel = broker.state.eventbus_confirming_channel = cls(connection)
        return channel

    def publish(self, messages: Sequence[Message[Any]]) -> _Outcome:
        """Publish ``messages`` as RabbitmqBroker.enqueue would, then wait for all their confirms.

        Raises:
          pika.exceptions.AMQPError: The connection or the channel failed; :meth:`outcome` then
            still says which messages RabbitMQ had confirmed.
        """
        import pika

        self._first_tag = self._last_tag + 1
        self._acked.clear()
        self._nacked.clear()
        self._returned.clear()
        self._bodies = []
        try:
            with _one_write(self._impl.connection):
                for message in messages:
                    body = message.encode()
                    self._impl.basic_publish(
                        exchange="",
                        routing_key=message.queue_name,
                        body=body,
                        properties=pika.BasicProperties(
                            delivery_mode=2, priority=message.options.get("broker_priority")
                        ),
                        mandatory=True,
                    )
                    self._bodies.append(body)
                    self._last_tag += 1
        except BaseException:
            # The delivery tags counted here no longer match RabbitMQ's: the next batch gets a new channel.
            self._close()
            raise
        self._wait_until(lambda: len(self._acked) + len(self._nacked) >= len(messages))
        return self.outcome()

    def outcome(self) -> _Outcome:
        """What RabbitMQ said so far about the batch :meth:`publish` sent last, by position in it."""
        positions = {tag - self._first_tag for tag in self._acked}
        returned = sorted(position for position in positions if self._bodies[position] in self._returned)
        return _Outcome(
            confirmed=sorted(positions.difference(returned)),
            nacked=sorted(tag - self._first_tag for tag in self._nacked),
            returned=returned,
        )

    def _close(self) -> None:
        with suppress(Exception):
            self.channel.close()

    def _wait_until(self, done: Callable[[], bool]) -> None:
        """Process the connection's I/O until ``done()``; pika's errors propagate."""
        self._done = done
        try:
            while not done():
                if not self.channel.is_open:
                    import pika.exceptions

                    raise pika.exceptions.ChannelWrongStateError("the confirming channel closed")
                # Returns as soon as a confirm wakes it (see _wake), else after a second, to look again.
                self.connection.process_data_events(time_limit=1.0)
        finally:
            self._done = None

    # pika calls these from inside process_data_events or basic_publish, in this thread.

    def _on_select_ok(self, _frame: Any) -> None:
        self._selected = True
        self._wake()

    def _on_confirm(self, frame: Any) -> None:
        import pika.spec

        method = frame.method
        outcome = self._acked if isinstance(method, pika.spec.Basic.Ack) else self._nacked
        first = self._first_tag if method.multiple else method.delivery_tag
        outcome.update(
            tag
            for tag in range(max(first, self._first_tag), method.delivery_tag + 1)
            if tag not in self._acked and tag not in self._nacked
        )
        self._wake()

    def _on_return(self, _channel: Any, _method: Any, _properties: Any, body: bytes) -> None:
        # RabbitMQ returns an unroutable mandatory message before it acks it.
        self._returned.add(body)

    def _wake(self) -> None:
        if self._done is not None and self._done():
            # A no-op event, so that process_data_events returns at once instead of at its time limit.
            self.connection.add_callback_threadsafe(_nothing)


def _nothing() -> None:
    pass


@contextmanager
def _one_write(connection: Any) -> Iterator[None]:
    """Hand the frames pika emits inside the block to its transport as one buffer, at the end.

    pika writes each frame of each message (method, header, body: three per message) with
    its own ``send`` system call, and RabbitMQ reads each on its own; a batch of ten costs
    thirty. Here the frames go out in one write, once every message of the batch was
    framed (none after an exception). If pika's connection has no
    ``_adapter_emit_data`` (another pika), the frames go out as pika sends them.
    """
    emit = getattr(connection, "_adapter_emit_data", None)
    if emit is None:
        yield
        return
    frames: list[bytes] = []
    connection._adapter_emit_data = frames.append  # shadows the method on this instance only
    try:
        yield
    finally:
        del connection._adapter_emit_data
    emit(b"".join(frames))  # not after an exception: the caller drops the connection, and the batch with it
