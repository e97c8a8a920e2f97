"""Fixtures for the StubBroker tests: a fresh bus per test and an in-process worker."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from dramatiq import Worker
from dramatiq.brokers.stub import StubBroker

from dramatiq_eventbus import EventBus

#: Retries after 1-5 ms, so a test sees every attempt at once.
FAST_RETRIES = {"min_backoff": 1, "max_backoff": 5}


@pytest.fixture
def bus() -> EventBus:
    """A bus of its own for each test, so no test sees another's configuration."""
    return EventBus()


@pytest.fixture
def stub_broker() -> StubBroker:
    broker = StubBroker()
    broker.emit_after("process_boot")
    return broker


@pytest.fixture
def drain(bus: EventBus) -> Iterator[Callable[[], None]]:
    """Run a real Dramatiq Worker on the bus's StubBroker until both bus queues are empty."""
    workers: list[Worker] = []

    def run() -> None:
        broker = bus.broker
        assert isinstance(broker, StubBroker)
        if not workers:
            workers.append(Worker(broker, worker_timeout=10))
            workers[0].start()
        for queue in (bus.config.queues.default, bus.config.queues.partitioned):
            broker.join(queue, timeout=10_000, fail_fast=False)
        workers[0].join()

    yield run
    for worker in workers:
        worker.stop()
