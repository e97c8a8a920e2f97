"""Bad messages written straight onto a real queue, around good ones, with redis-py or pika.

Each bad message must be dead-lettered with one log line at WARNING or above, without
running anything it names; the good messages fetched in the same batches must all be
handled, and nothing may stay fetched-but-unacknowledged (stranded) in a worker.
"""

from __future__ import annotations

import base64
import json
import pickle
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pika
import pytest
import redis
from dramatiq.message import Message

from dramatiq_eventbus import EventBus
from dramatiq_eventbus.handler import handler_name
from tests.support.broker_queues import RabbitmqQueues
from tests.support.worker_process import wait_for

from . import handlers
from .conftest import BROKERS, broker_url
from .harness import Deployment, Tally, ack_sets, report

SECRET_KEY = "faults-secret-key-0123456789abcdef"
#: The worker decodes typed JSON, and signed pickles too, so that a forged pickle reaches the code that checks it.
CODEC_ENV = {"EVENTBUS_SECRET_KEY": SECRET_KEY, "EVENTBUS_PICKLE_FALLBACK": "true"}
CODEC_SETTINGS = {"secret_key": SECRET_KEY, "pickle_fallback": True}
#: Two threads prefetch four messages at a time: every batch holds bad messages and good ones.
THREADS = 2


class WritesAFile:
    """Unpickling this creates ``path``: what an attacker with access to the queue would send."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


@dataclass(frozen=True)
class Bad:
    """A bad message, and how its one log line is recognised (its id, or a marker at its start)."""

    case: str
    body: bytes
    mark: str


def _envelope(queue: str, actor: str, args: tuple[Any, ...], **fields: Any) -> tuple[bytes, str]:
    message: Message[Any] = Message(queue_name=queue, actor_name=actor, args=args, kwargs={}, options={})
    body = message.encode()
    if fields:
        data = json.loads(body)
        data.update(fields)
        body = json.dumps(data).encode()
    return body, message.message_id


def bad_messages(queues: tuple[str, str], run: str, target: Path) -> list[Bad]:
    queue, other_bus_queue = queues
    tick_a = handler_name(handlers.TickA)
    genuine = EventBus().configure(handlers=handlers.HANDLERS, broker="stub", codec="pickle", secret_key=SECRET_KEY)
    signed: Any = genuine.config.codec.encode(handlers.Tick(run, 0))
    evil = base64.b64encode(pickle.dumps(WritesAFile(target))).decode("ascii")
    bad: list[Bad] = []

    def marked(case: str, body: Callable[[str], bytes]) -> None:
        mark = f"bad-{uuid.uuid4().hex[:8]}"
        bad.append(Bad(case, body(mark), mark))

    def enveloped(case: str, actor: str, args: tuple[Any, ...], **fields: Any) -> None:
        body, message_id = _envelope(queue, actor, args, **fields)
        bad.append(Bad(case, body, message_id))

    marked("invalid JSON envelope", lambda mark: b'{"' + mark.encode() + b'": "no closing brace')
    marked("envelope not UTF-8", lambda mark: mark.encode() + b"\xff\xfe\xfd")
    marked("envelope is a JSON list", lambda mark: f'["{mark}", 1, 2]'.encode())
    # Refused by its size before any parsing (max_message_bytes, 1 MiB by default).
    marked("body over max_message_bytes", lambda mark: f'{{"{mark}": "{"x" * (1 << 20)}"}}'.encode())
    # Under the size limit, but parsing 330,000 empty lists cost 180-300 ms of a worker's CPU.
    marked("too many JSON objects and lists", lambda mark: f'{{"{mark}": [{",".join(["[]"] * 300_000)}]}}'.encode())
    enveloped("envelope field of the wrong type", tick_a, ({"$type": "x"},), kwargs=["not", "a", "dict"])
    enveloped("option of the wrong type", tick_a, ({"$type": "x"},), options={"retries": "many"})
    enveloped("garbage payload", tick_a, ("garbage, not an event",))
    enveloped("unknown type tag", tick_a, ({"$type": "os:system", "command": f"touch {target}"},))
    enveloped("pickle with a tampered signature", tick_a, ({"$pickle": evil, "hmac": signed["hmac"]},))
    enveloped("unknown actor", "tests.faults.handlers.Vanished", ({"$type": "x"},))
    enveloped("handler given two arguments", tick_a, (signed, signed))
    # Dramatiq's worker looks up consumers[message.queue_name] outside any handler: a queue it
    # does not consume killed the thread; another bus queue left the message unacknowledged.
    enveloped("queue_name of a queue nobody consumes", tick_a, (signed,), queue_name="elsewhere")
    enveloped("queue_name of the other bus queue", tick_a, (signed,), queue_name=other_bus_queue)
    # Entered into Redis at fetch: a lane of another type made every fetch of the consumer fail.
    enveloped("lane that is not a string", tick_a, (signed,), options={"lane": ["x"], "partition_key": "k"})
    enveloped(
        "lane of another handler or key", tick_a, (signed,), options={"lane": "someone:else", "partition_key": "k"}
    )
    # A main queue never holds a delayed message: a far eta held a prefetch slot until then.
    enveloped("eta far in the future", tick_a, (signed,), options={"eta": 4_102_444_800_000})
    enveloped("retries that are not a count", tick_a, (signed,), options={"retries": 10**30})
    # An event class of the bus, but not one of TickA's: it must not reach TickA's handle_event.
    others = genuine.config.codec.encode(handlers.Solo(0, 0))
    enveloped("another handler's event, signed", tick_a, (others,))
    return bad


class Queue:
    """Writes raw bodies onto a bus queue, as a script or another service would."""

    def __init__(self, kind: str, url: str, queue: str) -> None:
        self.kind, self.url, self.queue = kind, url, queue
        self.redis_ids: dict[str, str] = {}  # mark -> Redis id

    def write(self, bad: Bad) -> None:
        if self.kind == "redis":
            client = redis.Redis.from_url(self.url)
            redis_id = str(uuid.uuid4())
            client.hset(f"dramatiq:{self.queue}.msgs", redis_id, bad.body)
            client.rpush(f"dramatiq:{self.queue}", redis_id)
            self.redis_ids[bad.mark] = redis_id
            client.close()
            return
        connection = pika.BlockingConnection(pika.URLParameters(self.url))
        try:
            connection.channel().basic_publish(
                exchange="", routing_key=self.queue, body=bad.body, properties=pika.BasicProperties(delivery_mode=2)
            )
        finally:
            connection.close()

    def dead_letter_bodies(self) -> list[bytes]:
        if self.kind == "redis":
            client = redis.Redis.from_url(self.url)
            bodies: Any = client.hvals(f"dramatiq:{self.queue}.XQ.msgs")
            client.close()
            return list(bodies)
        connection = pika.BlockingConnection(pika.URLParameters(self.url))
        try:
            channel = connection.channel()
            found: list[bytes] = []
            while True:
                method, _properties, body = channel.basic_get(queue=f"{self.queue}.XQ", auto_ack=False)
                if method is None:
                    return found
                found.append(body)
        finally:
            connection.close()  # unacknowledged: they stay dead letters

    def ready(self) -> int:
        if self.kind == "redis":
            client = redis.Redis.from_url(self.url)
            count = int(client.llen(f"dramatiq:{self.queue}")) + int(client.hlen(f"dramatiq:{self.queue}.msgs"))
            client.close()
            return count
        return RabbitmqQueues(self.url).count(self.queue)


@pytest.fixture(params=BROKERS)
def deployment(request: pytest.FixtureRequest, deploy: list[Deployment], tmp_path: Path) -> Iterator[Deployment]:
    url = broker_url(request.param)
    made = Deployment(
        url,
        broker_url("redis"),
        tmp_path,
        env={**CODEC_ENV, "EVENTBUS_DEFAULT_ACTOR_OPTIONS": '{"min_backoff": 20, "max_backoff": 100}'},
        settings={**CODEC_SETTINGS, "default_actor_options": {"min_backoff": 20, "max_backoff": 100}},
    )
    deploy.append(made)
    yield made


def test_bad_messages_are_dead_lettered_with_one_line_and_strand_nothing(
    deployment: Deployment, tmp_path: Path
) -> None:
    target = tmp_path / "created-by-unpickling"
    queue = Queue(deployment.kind, deployment.broker_url, deployment.queues[0])
    bus = deployment.publisher()
    bad = bad_messages(deployment.queues, deployment.run, target)
    # Good and bad alternate on the queue, before the worker starts, so it fetches them in mixed batches.
    for n, message in enumerate(bad):
        bus.publish(handlers.Tick(deployment.run, n))
        queue.write(message)
    bus.publish(handlers.Tick(deployment.run, len(bad)))
    events = range(len(bad) + 1)

    worker = deployment.start_worker(threads=THREADS)
    tally = deployment.wait_until_processed(events, timeout=30)
    wait_for(
        lambda: len(queue.dead_letter_bodies()) >= len(bad),
        timeout=15,
        interval=0.2,
        describe=lambda: f"{len(queue.dead_letter_bodies())} of {len(bad)} dead-lettered.{worker.log_tail()}",
    )

    assert tally == Tally(sent=3 * len(events), processed=3 * len(events), lost=0, duplicated=0)
    dead = queue.dead_letter_bodies()
    assert len(dead) == len(bad)
    for message in bad:  # a dead letter may carry more options than were written (its failure), never less
        assert sum(message.mark.encode() in body for body in dead) == 1, message.case
    assert queue.ready() == 0
    if deployment.kind == "redis":
        assert ack_sets(redis.Redis.from_url(deployment.broker_url), deployment.queues[0]) == {}, "stranded"
    assert not target.exists(), "a payload ran code in the worker"

    log = worker.log()
    assert "Traceback" not in log, log
    loud = [line for line in log.splitlines() if re.search(r"\[(WARNING|ERROR|CRITICAL)\]", line)]
    for message in bad:
        about = [line for line in loud if message.mark in line or queue.redis_ids.get(message.mark, "@") in line]
        assert len(about) == 1, (message.case, about)
        assert "Dead-lettered" in about[0], (message.case, about[0])
    errors = [line for line in loud if re.search(r"\[(ERROR|CRITICAL)\]", line)]
    unexplained = [line for line in errors if not any(m.mark in line for m in bad)]
    assert unexplained == [], unexplained
    report(
        f"bad messages around good ones ({len(bad)} kinds)",
        deployment.kind,
        tally,
        f"{len(bad)} bad messages dead-lettered, 0 stranded, nothing executed",
    )
