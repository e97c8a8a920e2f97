"""``async def handle_event`` on a real ``dramatiq`` CLI worker, on real Redis and real RabbitMQ.

One worker per broker (4 threads) serves every test of this module:
``dramatiq dramatiq_eventbus.worker`` configured only through ``EVENTBUS_*`` variables with
tests/integration/async_handlers.py, on queues unique to the run. Partitioned events keep
their lanes in Redis on both brokers (the broker's own Redis; beside RabbitMQ, the test Redis).
The RabbitMQ worker is a slow variant (``-m slow``; see BROKERS_RABBITMQ_SLOW).
"""

from __future__ import annotations

import itertools
import os
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis

import dramatiq_eventbus
from dramatiq_eventbus.handler import handler_name
from tests.integration import async_handlers, handlers
from tests.integration.support import BROKERS_RABBITMQ_SLOW, Deployment, deployed, require, unique
from tests.support.worker_process import wait_for

ASYNC_HANDLERS = "tests.integration.async_handlers:HANDLERS"
THREADS = 4


@pytest.fixture(scope="module", params=BROKERS_RABBITMQ_SLOW)
def deployment(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    log_dir = tmp_path_factory.mktemp(f"async-workers-{request.param}")
    with deployed(
        request.param, log_dir, "eventbus_it_async", threads=THREADS, handlers=ASYNC_HANDLERS, lanes_in_redis=True
    ) as made:
        yield made


@contextmanager
def lanes_deleted(url: str, tag: str) -> Iterator[None]:
    """Delete, at the end, whatever is left of the lanes of AsyncStepper for keys that start with ``tag``."""
    try:
        yield
    finally:
        client = redis.Redis.from_url(url)
        try:
            prefix = f"eventbus:lane:{handler_name(async_handlers.AsyncStepper)}:{tag}"
            keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
            if keys:
                client.delete(*keys)
            lanes: list[bytes] = client.zrange("eventbus:lanes", 0, -1)  # type: ignore[assignment]
            mine = [lane for lane in lanes if lane.decode(errors="replace").startswith(prefix[len("eventbus:lane:") :])]
            if mine:
                client.zrem("eventbus:lanes", *mine)
        finally:
            client.close()


@pytest.fixture
def bus(deployment: Deployment) -> Deployment:
    """The default bus configured afresh for each test, as the worker is."""
    require(deployment.broker)
    deployment.configure_publisher()
    return deployment


@pytest.fixture
def tag(request: pytest.FixtureRequest) -> str:
    return unique(request.node.name.split("[")[0])


def test_an_async_handler_runs_on_dramatiq_s_event_loop_in_the_worker_beside_a_sync_one(
    bus: Deployment, tag: str
) -> None:
    dramatiq_eventbus.publish(async_handlers.Awaited(tag))

    records = bus.records.wait_for(tag, 2, bus.worker)
    bus.flush(tag)

    by_handler = {line["handler"]: line for line in bus.records.of(tag)}
    assert Counter(line["handler"] for line in bus.records.of(tag)) == {"AsyncRecorder": 1, "SyncBeside": 1}
    # In the worker process the CLI started, the coroutine on the loop thread of Dramatiq's AsyncIO
    # middleware, the sync handler in a worker thread.
    assert {line["ppid"] for line in records} == {bus.worker.pid}
    assert by_handler["AsyncRecorder"]["pid"] != os.getpid()
    assert by_handler["AsyncRecorder"]["thread"] == "EventLoopThread"
    assert by_handler["SyncBeside"]["thread"] == "WorkerThread"
    assert "was never awaited" not in bus.worker.log()


def test_an_error_from_an_async_handler_is_retried_then_dead_lettered_with_its_reason(
    bus: Deployment, tag: str
) -> None:
    dramatiq_eventbus.publish(async_handlers.AsyncDoomed(tag))

    bus.records.wait_for(tag, 3, bus.worker)  # max_retries 2: three attempts
    reason = f"AsyncReturnsError.handle_event failed: {handlers.refusal(tag)}"

    def dead_lettered() -> list[dict[str, Any]]:
        return [m for m in bus.probe.dead_letters(bus.queue) if m["args"][0] and tag in str(m["args"][0])]

    (dead,) = wait_for(dead_lettered, timeout=20, describe=bus.worker.log_tail)
    assert dead["actor_name"] == handler_name(async_handlers.AsyncReturnsError)
    assert reason in dead["options"]["traceback"]
    wait_for(lambda: f"Dead-lettered message '{dead['message_id']}'" in bus.worker.log(), describe=bus.worker.log_tail)
    log = bus.worker.log()
    assert log.count(reason) >= 3
    (line,) = [text for text in log.splitlines() if f"Dead-lettered message '{dead['message_id']}'" in text]
    assert line.endswith(f"after 3 attempt(s): HandlerFailed: {reason}")
    bus.flush(tag)
    assert len(bus.records.of(tag)) == 3


def test_an_exception_from_an_async_handler_is_retried_and_the_retry_succeeds(bus: Deployment, tag: str) -> None:
    dramatiq_eventbus.publish(async_handlers.AsyncRetried(tag))

    bus.records.wait_for(tag, 2, bus.worker)
    bus.flush(tag)
    assert len(bus.records.of(tag)) == 2
    assert f"the first attempt of {tag} fails" in bus.worker.log()
    assert [m for m in bus.probe.dead_letters(bus.queue) if tag in str(m["args"][0])] == []


def test_an_async_handler_over_its_time_limit_is_cancelled_and_the_worker_goes_on(bus: Deployment, tag: str) -> None:
    dramatiq_eventbus.publish(async_handlers.Stalled(tag))

    phases = [line["phase"] for line in bus.records.wait_for(tag, 2, bus.worker)]
    assert phases == ["started", "cancelled"]  # the coroutine was cancelled, not left to run on the loop

    def dead_lettered() -> list[dict[str, Any]]:
        return [m for m in bus.probe.dead_letters(bus.queue) if tag in str(m["args"][0])]

    (dead,) = wait_for(dead_lettered, timeout=20, describe=bus.worker.log_tail)
    # The last attempt's failure is in the log line (RabbitMQ's dead letter keeps the body it delivered).
    line = f"Dead-lettered message '{dead['message_id']}'"
    wait_for(lambda: line in bus.worker.log(), describe=bus.worker.log_tail)
    (logged,) = [text for text in bus.worker.log().splitlines() if line in text]
    assert "after 1 attempt(s): TimeLimitExceeded" in logged
    # The worker thread came back: the next events run, async and sync.
    dramatiq_eventbus.publish(async_handlers.Awaited(f"{tag}-after"))
    bus.records.wait_for(f"{tag}-after", 2, bus.worker)
    bus.flush(tag)
    assert [line["phase"] for line in bus.records.of(tag)] == ["started", "cancelled"]


def _overlapping(spans: list[tuple[float, float]]) -> bool:
    spans = sorted(spans)
    return any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans))


def test_async_handlers_keep_each_partition_key_in_order_across_a_retry(bus: Deployment, tag: str) -> None:
    keys = [f"{tag}-k{n}" for n in range(3)]
    with lanes_deleted(bus.records.url, tag):
        # Each key's steps in publication order, interleaved with the other keys'.
        dramatiq_eventbus.publish([async_handlers.Stepped(tag, key, seq) for seq in range(4) for key in keys])
        records = bus.records.wait_for(tag, 12, bus.worker)
    for key in keys:
        mine = [line for line in records if line["key"] == key]
        assert [line["seq"] for line in mine] == [0, 1, 2, 3], f"{key}: {mine}"
        assert not _overlapping([(line["started"], line["ended"]) for line in mine])
        assert len(bus.records.of(f"{tag}-first-{key}")) == 2  # its first step failed once, then held the lane

    # The control: unkeyed, the same handler runs several steps at once on the worker's threads.
    control = f"{tag}-unkeyed"
    dramatiq_eventbus.publish([async_handlers.Stepped(control, "none", seq, keyed=False) for seq in range(4)])
    unkeyed = bus.records.wait_for(control, 4, bus.worker)
    assert _overlapping([(line["started"], line["ended"]) for line in unkeyed])
    assert [line["seq"] for line in unkeyed] != [0, 1, 2, 3]
