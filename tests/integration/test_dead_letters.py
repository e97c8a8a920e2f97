"""Dead letters listed, shown, replayed and purged on a real Redis and a real RabbitMQ, with a real
``dramatiq`` CLI worker.

One worker per deployment serves every test of this module, configured only through
``EVENTBUS_*`` variables with tests/integration/dead_letter_handlers.py, lanes in Redis on
both brokers; two deployments sign their messages, one does not. The command runs in this
process (``cli.main``), configured by the same variables as the worker.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pika
import pytest
import redis
from dramatiq.broker import Broker
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.message import Message

import dramatiq_eventbus
from dramatiq_eventbus import EventBus, cli
from dramatiq_eventbus.brokers.rabbitmq.dead_letters import digest
from dramatiq_eventbus.dead_letters import DeadLetter, DeadLetters
from dramatiq_eventbus.handler import handler_name
from tests.integration import dead_letter_handlers as dl
from tests.integration.support import Deployment, deployed, require, unique
from tests.support.worker_process import wait_for

SECRET_KEY = "dead-letter-tests-key-0123456789abcdef"
FRAGILE = handler_name(dl.Fragile)
KEYED = handler_name(dl.KeyedHandler)

DEPLOYMENTS = [
    pytest.param(("redis", SECRET_KEY), marks=pytest.mark.redis, id="redis-signed"),
    pytest.param(("rabbitmq", SECRET_KEY), marks=pytest.mark.rabbitmq, id="rabbitmq-signed"),
    pytest.param(("redis", None), marks=pytest.mark.redis, id="redis-unsigned"),
]


@pytest.fixture(scope="module", params=DEPLOYMENTS)
def deployment(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    broker, secret_key = request.param
    log_dir = tmp_path_factory.mktemp(f"dead-letter-workers-{broker}")
    with deployed(
        broker,
        log_dir,
        "eventbus_it_dead_letters",
        handlers="tests.integration.dead_letter_handlers:HANDLERS",
        secret_key=secret_key,
        lanes_in_redis=True,
    ) as made:
        yield made


@pytest.fixture
def bus(deployment: Deployment) -> Deployment:
    require(deployment.broker)
    deployment.configure_publisher()
    return deployment


@pytest.fixture
def tag(request: pytest.FixtureRequest) -> str:
    return unique(request.node.name.split("[")[0])


@pytest.fixture
def flags(bus: Deployment) -> Iterator[redis.Redis]:
    """The records' Redis, where the handlers' broken flags and gates are set; deleted after."""
    client = bus.records.client
    yield client
    for key in client.scan_iter(match=f"{bus.records.prefix}-flag:*", count=1000):
        client.delete(key)


Command = Callable[..., tuple[int, str]]


@pytest.fixture
def eventbus(bus: Deployment, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Command:
    """``eventbus dead-letters ARGS``, run in this process with the worker's EVENTBUS_* variables."""
    for name in [name for name in os.environ if name.startswith("EVENTBUS_")]:
        monkeypatch.delenv(name)
    for name, value in bus.worker_env().items():
        monkeypatch.setenv(name, value)

    def run(*args: str) -> tuple[int, str]:
        capsys.readouterr()
        status = cli.main(["dead-letters", *args])
        captured = capsys.readouterr()
        return status, captured.out + captured.err

    return run


def letters(tag: str) -> list[DeadLetter]:
    """The dead letters of events tagged ``tag`` (or ``tag-<n>``), read with the publisher's bus."""
    found = DeadLetters(dramatiq_eventbus.default_bus).list(limit=1000)
    return [letter for letter in found if letter.message is not None and letter.message.args[0].get("tag") == tag]


def wait_for_letters(bus: Deployment, tag: str, count: int) -> list[DeadLetter]:
    def enough() -> list[DeadLetter] | None:
        found = letters(tag)
        return found if len(found) >= count else None

    return wait_for(
        enough,
        interval=0.2,
        describe=lambda: f"dead letters of {tag}: {letters(tag)}{bus.worker.log_tail()}",
    )


def test_a_dead_letter_is_listed_replayed_once_fixed_and_another_purged(
    bus: Deployment, flags: redis.Redis, eventbus: Command, tag: str
) -> None:
    other = f"{tag}-other"
    for name in (tag, other):
        flags.set(dl.broken_key(bus.records.prefix, name), 1)
    dramatiq_eventbus.publish([dl.Breakable(tag), dl.Breakable(other)])
    [letter] = wait_for_letters(bus, tag, 1)
    [purged] = wait_for_letters(bus, other, 1)

    status, out = eventbus("list", "--handler", "Fragile", "--message-id", letter.message_id)
    assert status == 1, out
    assert letter.message_id in out and FRAGILE in out
    assert "tests.integration.dead_letter_handlers:Breakable" in out
    assert "attempts 2" in out  # max_retries=1
    assert f"last failure: RuntimeError: broken {tag}" in out

    status, out = eventbus("show", letter.message_id)
    assert status == 0, out
    assert f"event: Breakable(tag='{tag}')" in out

    # A dry run sends nothing and removes nothing, even with the handler fixed.
    flags.delete(dl.broken_key(bus.records.prefix, tag))
    status, out = eventbus("replay", "--message-id", letter.message_id, "--dry-run")
    assert (status, out.splitlines()[-1]) == (0, "1 would replay, 0 refused"), out
    bus.flush(tag)
    assert bus.records.of(tag) == []
    assert [found.message_id for found in letters(tag)] == [letter.message_id]

    status, out = eventbus("replay", "--message-id", letter.message_id)
    assert (status, out.splitlines()[-1]) == (0, "1 replayed, 0 refused"), out
    [handled] = bus.records.wait_for(tag, 1, bus.worker)
    assert handled["handler"] == "Fragile"
    assert letters(tag) == []

    status, out = eventbus("purge", "--message-id", purged.message_id, "--dry-run")
    assert (status, out.splitlines()[-1]) == (0, "1 would purge"), out
    assert [found.message_id for found in letters(other)] == [purged.message_id]
    status, out = eventbus("purge", "--message-id", purged.message_id)
    assert (status, out.splitlines()[-1]) == (0, "1 purged"), out

    status, out = eventbus("list", "--message-id", letter.message_id, "--message-id", purged.message_id)
    assert (status, out) == (0, "no dead letter found\n")
    bus.flush(tag)
    assert bus.records.of(other) == []  # purged, never run


def test_a_replayed_partitioned_event_goes_to_the_end_of_its_lane(
    bus: Deployment, flags: redis.Redis, eventbus: Command, tag: str
) -> None:
    prefix = bus.records.prefix
    first, second, third = (dl.Keyed(tag, f"key-{tag}", seq) for seq in (1, 2, 3))
    flags.set(dl.broken_key(prefix, first.name), 1)
    dramatiq_eventbus.publish(first)
    [letter] = wait_for_letters(bus, tag, 1)
    assert letter.partition_key == f"key-{tag}" and letter.attempts == 1
    flags.delete(dl.broken_key(prefix, first.name))

    # The second holds the lane (and the worker's one thread) while the third waits behind it.
    flags.set(dl.gate_key(prefix, second.name), 1)
    dramatiq_eventbus.publish([second, third])
    bus.records.wait_for(f"{tag}-waiting", 1, bus.worker)

    status, out = eventbus("replay", "--message-id", letter.message_id)
    assert status == 0, out
    flags.delete(dl.gate_key(prefix, second.name))

    records = bus.records.wait_for(tag, 3, bus.worker)
    assert [line["seq"] for line in records] == [2, 3, 1]
    assert letters(tag) == []


def test_filters_select_what_they_say(bus: Deployment, flags: redis.Redis, tag: str) -> None:
    prefix = bus.records.prefix
    keyed = dl.Keyed(tag, f"key-{tag}", 1)
    flags.set(dl.broken_key(prefix, tag), 1)
    flags.set(dl.broken_key(prefix, keyed.name), 1)
    dramatiq_eventbus.publish([dl.Breakable(tag), keyed])
    both = wait_for_letters(bus, tag, 2)
    by_handler = {letter.handler: letter for letter in both}
    ids = {letter.message_id for letter in both}
    api = DeadLetters(dramatiq_eventbus.default_bus)

    def selected(**filters: Any) -> set[str | None]:
        return {letter.message_id for letter in api.list(limit=1000, **filters)} & ids

    assert selected() == ids
    assert selected(handler="Fragile") == selected(handler=FRAGILE) == {by_handler[FRAGILE].message_id}
    assert selected(event_type="tests.integration.dead_letter_handlers:Keyed") == {by_handler[KEYED].message_id}
    assert selected(event_type="Keyed") == {by_handler[KEYED].message_id}
    assert selected(older_than=0) == ids
    assert selected(older_than=3600) == set()
    assert selected(message_ids=[by_handler[KEYED].message_id]) == {by_handler[KEYED].message_id}
    assert selected(queues=[bus.partitioned_queue]) == {by_handler[KEYED].message_id}
    assert api.get(by_handler[FRAGILE].message_id) == by_handler[FRAGILE]
    api.purge(both)
    assert letters(tag) == []


# -- what a forger puts in a dead-letter queue -----------------------------------------------------

MALFORMED = b'\x1b[31m{"not": "an envelope"\n\x07'


def forge(bus: Deployment, body: bytes) -> str:
    """Put ``body`` in the default queue's dead-letter queue, as anyone with broker access can;
    return its location."""
    if bus.broker == "redis":
        client = redis.Redis.from_url(bus.url)
        redis_id = str(uuid.uuid4())
        client.hset(f"dramatiq:{bus.queue}.XQ.msgs", redis_id, body)
        client.zadd(f"dramatiq:{bus.queue}.XQ", {redis_id: 1_000})  # long ago
        client.close()
        return redis_id
    connection = pika.BlockingConnection(pika.URLParameters(bus.url))
    try:
        connection.channel().basic_publish(exchange="", routing_key=f"{bus.queue}.XQ", body=body)
    finally:
        connection.close()
    return digest(body)


def forged_message(bus: Deployment, tag: str) -> Message[Any]:
    """An unsigned message for a real handler, the envelope and options as the bus writes them."""
    codec = dramatiq_eventbus.default_bus.config.codec
    return Message(
        queue_name=bus.queue,
        actor_name=FRAGILE,
        args=(codec.encode(dl.Breakable(tag)),),
        kwargs={},
        options={"event_type": "tests.integration.dead_letter_handlers:Breakable", "partition_key": None},
    )


def test_forged_and_malformed_dead_letters_are_listed_and_never_replayed_with_a_key(
    bus: Deployment, eventbus: Command, tag: str
) -> None:
    malformed = forge(bus, MALFORMED)
    forged = forged_message(bus, tag)
    forge(bus, forged.encode())

    status, out = eventbus("list", "--message-id", malformed, "--message-id", forged.message_id)
    assert status == 1, out
    assert "unreadable" in out and "its envelope cannot be decoded" in out
    assert "\x1b" not in out and "\x07" not in out  # escaped: nothing reaches the terminal raw
    status, out = eventbus("show", malformed)
    assert status == 0 and "unreadable" in out, out

    status, out = eventbus("replay", "--message-id", malformed, "--message-id", forged.message_id)
    lines = out.splitlines()
    if bus.secret_key is not None:
        assert status == 2, out
        assert lines[-1] == "0 replayed, 2 refused"
        assert "it is not signed" in out and "purge it" in out
    else:
        # Without a key the bus cannot tell a forged message from its own: it sends it like any other.
        assert status == 2 and lines[-1] == "1 replayed, 1 refused", out
        bus.records.wait_for(tag, 1, bus.worker)

    status, out = eventbus("purge", "--message-id", malformed, "--message-id", forged.message_id)
    assert status == 0, out
    status, out = eventbus("list", "--message-id", malformed, "--message-id", forged.message_id)
    assert (status, out) == (0, "no dead letter found\n")
    bus.flush(tag)
    if bus.secret_key is not None:
        assert bus.records.of(tag) == []


def test_a_replay_without_a_filter_asks_for_all(bus: Deployment, eventbus: Command) -> None:
    status, out = eventbus("replay")
    assert status == 2 and "needs a filter" in out and "--all" in out
    status, out = eventbus("purge")
    assert status == 2 and "needs a filter" in out


def test_show_prints_the_raw_payload_when_the_codec_cannot_decode_it(
    bus: Deployment, eventbus: Command, tag: str
) -> None:
    payload = {"$type": "os:system", "command": f"echo {tag}"}  # the typed codec builds no such thing
    message = forged_message(bus, tag)
    message = Message(**{**message.asdict(), "args": (payload,)})
    forge(bus, message.encode())
    status, out = eventbus("show", message.message_id)
    assert status == 0, out
    assert "event: not decoded (EventDecodeError: " in out
    assert '"$type": "os:system"' in out and f"echo {tag}" in out
    assert eventbus("purge", "--message-id", message.message_id)[0] == 0


def test_a_body_over_max_message_bytes_is_listed_unread(bus: Deployment, tag: str) -> None:
    location = forge(bus, b'{"tag": "' + tag.encode() + b'", "x": "' + b"y" * 4096 + b'"}')
    small = bus.configure_publisher(max_message_bytes=2048)
    api = DeadLetters(small)
    [letter] = api.list(message_ids=[location])
    assert not letter.readable and letter.message is None
    assert letter.problem is not None and letter.problem.startswith("it is 4,")
    assert letter.problem.endswith("bytes, more than max_message_bytes (2,048), and was not read")
    assert api.purge([letter]) == (letter,)
    assert api.list(message_ids=[location]) == []


def test_plain_dramatiq_brokers_have_their_dead_letters_read_and_purged_too(bus: Deployment, tag: str) -> None:
    location = forge(bus, MALFORMED + tag.encode())
    plain: Broker = RedisBroker(url=bus.url) if bus.broker == "redis" else RabbitmqBroker(url=bus.url)
    try:
        other = EventBus().configure(
            broker=plain, queue=bus.queue, partitioned_queue=bus.partitioned_queue, **bus.settings()
        )
        api = DeadLetters(other)
        [letter] = api.list(message_ids=[location])
        assert not letter.readable and letter.location == location
        api.purge([letter])
        assert api.list(message_ids=[location]) == []
    finally:
        plain.close()
