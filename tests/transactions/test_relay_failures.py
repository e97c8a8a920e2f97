"""The relay under failure: the broker down at commit, a relay killed between sending and marking, two relays."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import dramatiq
import pytest
from sqlalchemy import Engine, create_engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from dramatiq_eventbus import EventBus, PublishError
from dramatiq_eventbus.transactions import Outbox, OutboxRelay, bind_session
from tests.support.worker_process import REPO_ROOT, wait_for

from ..support.redis_server import RedisServer
from .handlers import HANDLERS, Deposited, Ledger, Noted
from .support import ACTOR_OPTIONS, BrokerView, Records, first_occurrences, outbox_ids, per_key_sequences


def unsent(engine: Engine, outbox: Outbox) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).where(outbox.table.c.sent_at.is_(None))).scalar_one())


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path, persistent=False).start()
    yield server
    server.stop()


def test_with_the_broker_down_at_commit_the_events_arrive_once_it_is_back(
    own_redis: RedisServer,
    session_factory: sessionmaker[Session],
    outbox: Outbox,
    engine: Engine,
    queues: tuple[str, str],
    records: Records,
    tag: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = EventBus().configure(
        handlers=HANDLERS,
        broker=own_redis.url,
        queue=queues[0],
        partitioned_queue=queues[1],
        default_actor_options=ACTOR_OPTIONS,
    )
    relay = OutboxRelay(outbox, engine, bus=bus, poll_seconds=0.1, max_backoff_seconds=0.2)
    worker: dramatiq.Worker | None = None
    try:
        with bind_session(session_factory, bus=bus, outbox=outbox):
            relay.start()
            own_redis.stop()
            with session_factory.begin():  # the commit does not need the broker
                bus.publish([Deposited(tag, f"{tag}-k", seq) for seq in range(5)])
                bus.publish(Noted(tag, "staff", 1))
            wait_for(lambda: caplog.text.count("Outbox relay pass failed") >= 2, timeout=10)
            assert unsent(engine, outbox) == 7

            own_redis.start()
            wait_for(lambda: unsent(engine, outbox) == 0, timeout=15)
        worker = dramatiq.Worker(bus.broker, worker_threads=2, worker_timeout=100)
        worker.start()
        lines = records.wait_for(tag, 7)
    finally:
        relay.stop()
        if worker is not None:
            worker.stop()
        bus.broker.close()
    assert per_key_sequences(line for line in lines if "seq" in line) == {f"{tag}-k": [0, 1, 2, 3, 4]}
    assert Counter(line.get("handler") for line in lines if "seq" not in line) == {"StaffOnly": 1, "Everyone": 1}


def test_after_commit_without_an_outbox_the_commit_raises_when_the_broker_is_down(
    own_redis: RedisServer,
    session_factory: sessionmaker[Session],
    accounts: str,
    engine: Engine,
    tag: str,
    queues: tuple[str, str],
) -> None:
    from sqlalchemy import text

    bus = EventBus().configure(handlers=HANDLERS, broker=own_redis.url, queue=queues[0], partitioned_queue=queues[1])
    try:
        with bind_session(session_factory, bus=bus):
            own_redis.stop()
            with pytest.raises(PublishError), session_factory.begin() as session:
                session.execute(text(f"INSERT INTO {accounts} (name) VALUES ('kept')"))
                bus.publish(Noted(tag, "all", 1))
        # The data is committed; the events are lost, and the caller was told: that is what an outbox is for.
        with engine.connect() as connection:
            assert connection.execute(text(f"SELECT name FROM {accounts}")).scalars().all() == ["kept"]
    finally:
        bus.broker.close()


def test_a_relay_killed_between_sending_and_marking_loses_nothing_and_keeps_first_deliveries_in_order(
    bus: EventBus,
    session_factory: sessionmaker[Session],
    outbox: Outbox,
    engine: Engine,
    view: BrokerView,
    queues: tuple[str, str],
    redis_url: str,
    tag: str,
) -> None:
    keys = [f"{tag}-a", f"{tag}-b"]
    with bind_session(session_factory, bus=bus, outbox=outbox):
        for seq in range(20):
            with session_factory.begin():
                bus.publish([Deposited(tag, key, seq) for key in keys])
        bus.publish(Noted(tag, "all", 0))  # outside a transaction: sent at once, for contrast
    env = {key: value for key, value in os.environ.items() if not key.startswith("EVENTBUS_")}
    env.update(
        EVENTBUS_HANDLERS="tests.transactions.handlers:HANDLERS",
        EVENTBUS_BROKER_URL=redis_url,
        EVENTBUS_QUEUE=queues[0],
        EVENTBUS_PARTITIONED_QUEUE=queues[1],
        EVENTBUS_OUTBOX_URL=engine.url.render_as_string(hide_password=False),
        EVENTBUS_OUTBOX_TABLE=outbox.qualified_name,
        EVENTBUS_OUTBOX_BATCH_SIZE="15",
        PYTHONPATH=str(REPO_ROOT),
    )
    crashed = subprocess.run(
        [sys.executable, "-m", "tests.transactions.crashing_relay"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stdout + crashed.stderr
    assert "sent 15 row(s)" in crashed.stdout
    sent_before = view.delivered(tag)
    assert len(sent_before) == 1 + 15  # the batch reached the broker...
    assert unsent(engine, outbox) == 40  # ...but no row is marked sent

    OutboxRelay(outbox, engine, bus=bus, batch_size=15).relay_pending()

    assert unsent(engine, outbox) == 0
    for key in keys:
        sequence = [m["args"][0]["seq"] for m in view.lane(Ledger, key)]
        assert first_occurrences(sequence) == list(range(20))  # nothing lost, first deliveries in order
        assert len(sequence) < 40  # the crashed batch again, at most
    # Every row arrived at least once; only the crashed batch twice.
    counts = Counter(outbox_ids(view.delivered(tag)))
    with engine.connect() as connection:
        assert sorted(counts) == connection.execute(select(outbox.table.c.id).order_by("id")).scalars().all()
    assert sorted(counts.values()) == [1] * 25 + [2] * 15


def test_two_relays_at_once_send_each_row_once_and_keep_each_lane_in_order(
    bus: EventBus,
    session_factory: sessionmaker[Session],
    outbox: Outbox,
    engine: Engine,
    view: BrokerView,
    tag: str,
) -> None:
    keys = [f"{tag}-{n}" for n in range(4)]
    total = 600
    relays = [
        OutboxRelay(outbox, create_engine(engine.url, pool_size=2), bus=bus, batch_size=20, poll_seconds=0.05)
        for _ in range(2)
    ]
    sent_by: list[Counter[int]] = [Counter() for _ in relays]
    for relay, counter in zip(relays, sent_by, strict=True):
        original = relay._mark_sent

        def counting(connection: object, ids: list[int], original=original, counter=counter) -> None:  # type: ignore[no-untyped-def]
            original(connection, ids)  # type: ignore[arg-type]
            counter.update(ids)

        relay._mark_sent = counting  # type: ignore[method-assign]

    def publish(start: int, stop: int) -> None:
        for first in range(start, stop, 10):
            with session_factory.begin():
                bus.publish(
                    [
                        Deposited(tag, keys[n // 2 % 4], n // 8) if n % 2 == 0 else Noted(tag, "all", n)
                        for n in range(first, first + 10)
                    ]
                )

    with bind_session(session_factory, bus=bus, outbox=outbox):
        publish(0, total // 2)  # a backlog for both to start on at once...
        for relay in relays:
            relay.start()
        try:
            publisher = threading.Thread(target=publish, args=(total // 2, total))  # ...and commits as they run
            publisher.start()
            publisher.join()
            wait_for(lambda: unsent(engine, outbox) == 0, timeout=30)
        finally:
            for relay in relays:
                relay.stop()
                relay.engine.dispose()

    assert all(counter for counter in sent_by), "both relays should have sent rows"
    assert not set(sent_by[0]) & set(sent_by[1])
    delivered = Counter(outbox_ids(view.delivered(tag)))
    assert len(delivered) == total and set(delivered.values()) == {1}
    for key in keys:
        sequence = [m["args"][0]["seq"] for m in view.lane(Ledger, key)]
        assert sequence == list(range(total // 8))
