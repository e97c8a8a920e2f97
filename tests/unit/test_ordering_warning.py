"""The "ordered only within each worker process" warning: where it applies, and not on a StubBroker."""

from __future__ import annotations

import logging

import pytest
from dramatiq import Worker
from dramatiq.brokers.stub import StubBroker

from dramatiq_eventbus import EventBus
from dramatiq_eventbus.ordering import PartitionOrdering

from .handlers import HANDLERS, OrderShipped

WARNING = "Partitioned events are ordered only within each worker process"


def test_a_stub_broker_worker_does_not_warn_about_order(bus: EventBus, caplog: pytest.LogCaptureFixture) -> None:
    # A StubBroker lives in one process: order within the process is all the order there is.
    bus.configure(handlers=HANDLERS, broker="stub")
    broker = bus.broker
    assert isinstance(broker, StubBroker)
    with caplog.at_level(logging.INFO):
        worker = Worker(broker, worker_timeout=10)
        worker.start()
        try:
            bus.publish(OrderShipped("1"))
            broker.join(bus.config.queues.partitioned, timeout=10_000)
            worker.join()
        finally:
            worker.stop()
    assert not [m for m in caplog.messages if WARNING in m]


def test_a_worker_of_a_real_broker_without_redis_warns(bus: EventBus, caplog: pytest.LogCaptureFixture) -> None:
    # RabbitMQ without redis_url: several worker processes share the queues. Made from a URL,
    # the broker does not connect before its first use, so no server is needed here.
    bus.configure(handlers=HANDLERS, broker="amqp://guest:guest@127.0.0.1:5672/")
    ordering = next(m for m in bus.broker.middleware if isinstance(m, PartitionOrdering))
    with caplog.at_level(logging.WARNING):
        ordering.after_worker_boot(bus.broker, None)  # type: ignore[arg-type]
    assert [m for m in caplog.messages if WARNING in m]
