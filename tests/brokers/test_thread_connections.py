"""Each thread runs the bus's Redis scripts on a connection it keeps (ThreadConnections), on a real Redis:
one connection per thread, at most half the pool's, given back when the thread ends, opened
again when Redis closed it or lost the scripts, and never shared with a forked child."""

from __future__ import annotations

import gc
import multiprocessing
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from dramatiq.message import Message

from dramatiq_eventbus.brokers.inspection import ReceivedId
from dramatiq_eventbus.brokers.redis import EventBusRedisBroker, ThreadConnections
from dramatiq_eventbus.brokers.redis.scripts import packed
from tests.support.broker_queues import RedisQueues
from tests.support.servers import require_redis


@pytest.fixture
def broker() -> Iterator[EventBusRedisBroker]:
    url = require_redis()
    made = EventBusRedisBroker(url=url)
    yield made
    made.close()
    RedisQueues(url).forget_brokers([made.broker_id])


@pytest.fixture
def queue(broker: EventBusRedisBroker) -> Iterator[str]:
    name = f"thread_connections_{uuid.uuid4().hex[:10]}"
    broker.declare_queue(name)
    yield name
    probe = RedisQueues(require_redis())
    probe.delete([name])
    probe.close()


def message(queue: str, n: int = 0) -> Message[Any]:
    return Message(queue_name=queue, actor_name="an_actor", args=(n,), kwargs={}, options={})


def connection_id(connection: Any) -> int:
    connection.send_command("CLIENT", "ID")
    return int(connection.read_response())


class CountingConnection:
    """Counts the commands sent on one redis-py connection, packed by redis-py or already packed."""

    def __init__(self, connection: Any) -> None:
        self.sent: list[Any] = []
        send, send_packed = connection.send_command, connection.send_packed_command

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.sent.append(args[0])
            return send(*args, **kwargs)

        def counted_packed(command: Any, *args: Any, **kwargs: Any) -> Any:
            data = command if isinstance(command, bytes) else b"".join(command)
            self.sent.append(data.split(b"\r\n")[2].decode())  # *<count>, $<length>, the command's name
            return send_packed(command, *args, **kwargs)

        connection.send_command = counted
        connection.send_packed_command = counted_packed


@pytest.mark.redis
def test_a_thread_sends_its_batches_on_the_connection_it_keeps(broker: EventBusRedisBroker, queue: str) -> None:
    own = broker.thread_connections.current()
    counted = CountingConnection(own)
    for n in range(5):
        broker.enqueue_many([message(queue, n), message(queue, n + 100)])
    assert counted.sent == ["EVALSHA"] * 5
    assert broker.thread_connections.current() is own
    assert RedisQueues(require_redis()).count(queue) == 10


@pytest.mark.redis
def test_threads_keep_connections_of_their_own_up_to_half_the_pool() -> None:
    client = redis.Redis.from_url(require_redis(), max_connections=4)
    connections = ThreadConnections(client)
    assert connections.limit == 2
    ids: dict[int, int | None] = {}
    started, finish = threading.Barrier(4), threading.Event()

    def hold(n: int) -> None:
        own = connections.current()
        ids[n] = None if own is None else connection_id(own)
        started.wait()
        finish.wait()

    threads = [threading.Thread(target=hold, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    started.wait()
    kept = [connection_id for connection_id in ids.values() if connection_id is not None]
    assert len(kept) == 2 and len(set(kept)) == 2, ids  # the third thread uses the pooled client
    assert connections.kept == 2
    finish.set()
    for thread in threads:
        thread.join()
    gc.collect()
    assert connections.kept == 0  # the threads ended: their connections went back to the pool
    later = threading.Thread(target=hold, args=(3,))
    finish.clear()
    started = threading.Barrier(2)
    later.start()
    started.wait()
    assert ids[3] in kept  # a connection the pool had lent before
    finish.set()
    later.join()
    client.close()


@pytest.mark.redis
@pytest.mark.parametrize("where", ["on-its-socket", "in-redis-py-s-buffer"])
def test_a_kept_connection_holding_a_reply_no_command_asked_for_is_opened_again(
    broker: EventBusRedisBroker, queue: str, where: str
) -> None:
    own = broker.thread_connections.current()
    own.send_command("PING")  # its reply is never read
    if where == "in-redis-py-s-buffer":
        assert own.can_read(timeout=1.0)  # redis-py reads the reply off the socket into its buffer
    else:
        time.sleep(0.05)  # the reply waits on the socket
    broker.enqueue_many([message(queue, 1), message(queue, 2)])  # would read PONG as its reply
    assert RedisQueues(require_redis()).count(queue) == 2
    # Not one reply behind, which would leave this one's waiting for the next command to read.
    assert not own.can_read(timeout=0.2)


@pytest.mark.redis
def test_a_kept_connection_that_redis_closed_is_opened_again(broker: EventBusRedisBroker, queue: str) -> None:
    broker.enqueue_many([message(queue, 1), message(queue, 2)])
    own = broker.thread_connections.current()
    killer = redis.Redis.from_url(require_redis())
    killer.client_kill_filter(_id=connection_id(own))
    killer.close()
    broker.enqueue_many([message(queue, 3), message(queue, 4)])
    assert RedisQueues(require_redis()).count(queue) == 4


def _connection_id_in_child(connections: ThreadConnections, reply: Any) -> None:
    reply.send(connection_id(connections.current()))


@pytest.mark.redis
def test_a_forked_child_opens_its_own_connection() -> None:
    client = redis.Redis.from_url(require_redis())
    connections = ThreadConnections(client)
    parent_id = connection_id(connections.current())
    reading, writing = multiprocessing.get_context("fork").Pipe(duplex=False)
    child = multiprocessing.get_context("fork").Process(target=_connection_id_in_child, args=(connections, writing))
    child.start()
    child_id = reading.recv()
    child.join(timeout=10)
    assert child.exitcode == 0
    assert child_id != parent_id
    # The child used, and closed, nothing of the parent's: its connection still answers.
    assert connection_id(connections.current()) == parent_id
    client.close()


@pytest.mark.redis
def test_a_redis_that_lost_the_scripts_is_given_them_again(broker: EventBusRedisBroker, queue: str) -> None:
    broker.enqueue_many([message(queue, 1), message(queue, 2)])
    flusher = redis.Redis.from_url(require_redis())
    flusher.script_flush()
    flusher.close()
    broker.enqueue_many([message(queue, 3), message(queue, 4)])
    assert RedisQueues(require_redis()).count(queue) == 4


@pytest.mark.redis
def test_the_connections_of_a_dropped_broker_are_closed() -> None:
    watcher = redis.Redis.from_url(require_redis())
    for _ in range(3):
        made = EventBusRedisBroker(url=require_redis())
        kept = connection_id(made.thread_connections.current())
        assert kept in {int(client["id"]) for client in watcher.client_list()}
        made.close()
        RedisQueues(require_redis()).forget_brokers([made.broker_id])
        del made
        gc.collect()
        # Kept by the thread for good, it would stay open until the thread ends: one per broker ever made.
        assert kept not in {int(client["id"]) for client in watcher.client_list()}
    watcher.close()


class _EncodesItsOwnWay(str):
    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return b"its own bytes"


ARGUMENTS: list[Any] = [
    "EVALSHA",
    "f" * 40,
    2,
    "dramatiq:queue",
    "lane:é:ключ:🙂",  # not ASCII
    -17,
    0,
    2**70,
    "",
    b"",
    b"\x00\xff\r\n",
    b"x" * 7000,  # past redis-py's 6,000 bytes, where it cuts the command into pieces
    # str subclasses: the ids the consumers read are ReceivedIds, which the finish of every
    # handled lane head carries; they fell back to redis-py's packer (4-5 µs per head, py-spy).
    ReceivedId("01a24448-9208-74c3-93b5-ae184e6529b0"),
    _EncodesItsOwnWay("x"),
]


@pytest.mark.redis
def test_a_command_is_packed_as_redis_py_packs_it() -> None:
    client = redis.Redis.from_url(require_redis())
    connection = client.connection_pool.get_connection()
    try:
        assert packed(ARGUMENTS) == b"".join(connection.pack_command(*ARGUMENTS))
    finally:
        client.connection_pool.release(connection)
        client.close()


@pytest.mark.parametrize("other", [1.5, True, memoryview(b"x"), bytearray(b"x"), None])
def test_anything_but_bytes_strs_and_ints_is_left_to_redis_py(other: Any) -> None:
    assert packed(["EVALSHA", "f" * 40, 0, other]) is None


@pytest.mark.redis
@pytest.mark.parametrize("encoding", ["utf-8", "latin-1"])
def test_strs_reach_redis_in_the_client_s_encoding(encoding: str) -> None:
    client = redis.Redis.from_url(require_redis(), encoding=encoding)
    connections = ThreadConnections(client)
    echo = client.register_script("return ARGV[1]")
    try:
        assert connections.run(echo, [], ["é"]) == "é".encode(encoding)
        assert connections.run(echo, [], [2.5]) == b"2.5"  # not packed here: redis-py writes it
    finally:
        client.close()
