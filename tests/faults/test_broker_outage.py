"""The broker goes away while an application publishes, and comes back.

publish() must raise PublishError (an EventBusError) for what it could not send, never
lose an event silently, and work again once the broker is back, on the same configured
bus. The application here does what the README asks of one: it retries a publish that
raised. Workers run throughout and must take up the work again on their own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dramatiq_eventbus import EventBus, EventBusError, PublishError

from ..support.redis_server import RedisServer
from . import handlers
from .conftest import broker_url
from .harness import Deployment, report
from .proxy import TcpProxy
from .servers import (
    close_rabbitmq_connections,
    host_port,
    named_amqp_url,
    proxied,
    unique_connection_name,
)

EVENTS = 400
HEARTBEAT_SECONDS = 2


@dataclass
class Publisher:
    """An application thread publishing Tick events one by one, retrying any that raised.

    Parameters:
      bus(EventBus): The configured bus it publishes on, for its whole life.
      run(str): The Tick events' run.
      events(int): How many to publish.
      pause(float): Seconds between events.
    """

    bus: EventBus
    run: str
    events: int
    pause: float = 0.005
    errors: list[PublishError] = field(default_factory=list)
    other_errors: list[BaseException] = field(default_factory=list)
    published: int = 0
    first_error_at: float | None = None
    resumed_at: float | None = None
    stopped: threading.Event = field(default_factory=threading.Event)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._publish, daemon=True)
        thread.start()
        return thread

    def _publish(self) -> None:
        for n in range(self.events):
            failed = False
            while not self.stopped.is_set():
                try:
                    self.bus.publish(handlers.Tick(self.run, n))
                    break
                except PublishError as exc:
                    self.errors.append(exc)
                    failed = True
                    if self.first_error_at is None:
                        self.first_error_at = time.monotonic()
                    time.sleep(0.05)
                except BaseException as exc:
                    self.other_errors.append(exc)
                    return
            if self.stopped.is_set():
                return
            if failed and self.resumed_at is None:
                self.resumed_at = time.monotonic()
            self.published = n + 1
            time.sleep(self.pause)


def run_through_outage(
    deployment: Deployment, bus: EventBus, *, break_it: Callable[[], object], mend_it: Callable[[], object]
) -> Publisher:
    """Publish EVENTS events while the broker breaks a quarter of the way through, for about 1.5 s."""
    publisher = Publisher(bus, deployment.run, EVENTS)
    thread = publisher.start()
    deadline = time.monotonic() + 30
    while publisher.published < EVENTS // 4:
        assert time.monotonic() < deadline, "the publisher did not get going"
        time.sleep(0.01)
    try:
        break_it()
        time.sleep(1.5)
        mend_it()
    except BaseException:
        publisher.stopped.set()  # or it retries against a broken broker for the rest of the run
        raise
    thread.join(timeout=60)
    assert not thread.is_alive(), "the publisher did not finish"
    assert publisher.other_errors == [], "publish() raised something other than PublishError"
    assert publisher.published == EVENTS
    return publisher


def check_errors(publisher: Publisher) -> None:
    assert publisher.errors, "the outage went unnoticed: publish() never raised"
    error = publisher.errors[0]
    assert isinstance(error, EventBusError)
    assert "the broker failed while publishing" in str(error)
    assert error.sent == () and len(error.unsent) == 3  # a Tick fans out to three handlers
    assert publisher.resumed_at is not None and publisher.first_error_at is not None


@pytest.mark.redis
def test_redis_stopped_and_restarted_while_publishing(
    own_redis: RedisServer, deploy: list[Deployment], tmp_path: Path
) -> None:
    deployment = Deployment(
        own_redis.url,
        broker_url("redis"),
        tmp_path,
        env={"EVENTBUS_REDIS_HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS)},
        settings={"redis_heartbeat_seconds": HEARTBEAT_SECONDS},
    )
    deploy.append(deployment)
    deployment.start_worker(threads=4)
    bus = deployment.publisher()

    publisher = run_through_outage(deployment, bus, break_it=own_redis.stop, mend_it=own_redis.start)

    check_errors(publisher)
    # The worker lost its connections too; it reconnects by itself (Dramatiq waits 3 s, then retries its acks).
    tally = deployment.wait_until_processed(range(EVENTS), timeout=60)
    assert tally.lost == 0
    report(
        "Redis stopped and restarted while publishing",
        "redis",
        tally,
        f"{len(publisher.errors)} publish() calls raised PublishError and were retried; {tally.duplicated} run twice",
    )


@pytest.mark.rabbitmq
def test_rabbitmq_closing_connections_while_publishing(deploy: list[Deployment], tmp_path: Path) -> None:
    name = unique_connection_name()
    deployment = Deployment(named_amqp_url(broker_url("rabbitmq"), name), broker_url("redis"), tmp_path)
    deploy.append(deployment)
    deployment.start_worker(threads=4)
    bus = deployment.publisher()
    closed: list[int] = []

    def close_ours() -> None:
        # The worker's connections and the publisher's alike, twice over.
        for _ in range(2):
            closed.append(close_rabbitmq_connections(name))

    publisher = run_through_outage(deployment, bus, break_it=close_ours, mend_it=lambda: None)

    assert len(closed) == 2 and min(closed) >= 2, closed
    tally = deployment.wait_until_processed(range(EVENTS), timeout=60)
    assert tally.lost == 0
    report(
        "RabbitMQ closes the connections while publishing",
        "rabbitmq",
        tally,
        f"{sum(closed)} connections closed by the server; {len(publisher.errors)} PublishError; "
        f"{tally.duplicated} run twice",
    )


@pytest.mark.rabbitmq
def test_rabbitmq_unreachable_while_publishing(deploy: list[Deployment], tmp_path: Path) -> None:
    url = broker_url("rabbitmq")
    proxy = TcpProxy(host_port(url)).up()
    # Only the publisher goes through the proxy: the outage is the application's.
    deployment = Deployment(url, broker_url("redis"), tmp_path)
    deploy.append(deployment)
    deployment.start_worker(threads=4)
    bus = deployment.publisher(broker=proxied(url, proxy.port))
    try:
        publisher = run_through_outage(deployment, bus, break_it=proxy.down, mend_it=proxy.up)
    finally:
        proxy.down()

    check_errors(publisher)
    tally = deployment.wait_until_processed(range(EVENTS), timeout=60)
    assert tally.lost == 0
    report(
        "RabbitMQ unreachable for 1.5 s while publishing",
        "rabbitmq",
        tally,
        f"{len(publisher.errors)} publish() calls raised PublishError and were retried; {tally.duplicated} run twice",
    )
