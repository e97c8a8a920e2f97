"""Per-key order through the outbox: concurrent publishers, two relays, every lane in publish order."""

from __future__ import annotations

import threading
import time

import dramatiq
import pytest
from sqlalchemy import Engine, create_engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from dramatiq_eventbus import EventBus
from dramatiq_eventbus.transactions import Outbox, OutboxRelay, bind_session
from tests.support.worker_process import wait_for

from .handlers import Deposited, Ledger
from .support import BrokerView, Records, per_key_sequences


def publish_through_the_outbox(
    bus: EventBus,
    session_factory: sessionmaker[Session],
    outbox: Outbox,
    engine: Engine,
    tag: str,
    *,
    events: int,
    publishers: int = 4,
    keys_per_publisher: int = 10,
    per_transaction: int = 50,
) -> dict[str, int]:
    """Publish ``events`` keyed events from ``publishers`` threads while two relays run; return each key's count.

    Each publisher owns its keys, so each key's publish order is that thread's order.
    """
    counts: dict[str, int] = {}
    plans = []
    for p in range(publishers):
        keys = [f"{tag}-{p}-{k}" for k in range(keys_per_publisher)]
        share = events // publishers
        plan = [(keys[n % len(keys)], n // len(keys)) for n in range(share)]
        plans.append(plan)
        for key, _ in plan:
            counts[key] = counts.get(key, 0) + 1

    def publish(plan: list[tuple[str, int]]) -> None:
        for start in range(0, len(plan), per_transaction):
            with session_factory.begin():
                for key, seq in plan[start : start + per_transaction]:
                    bus.publish(Deposited(tag, key, seq))

    relays = [
        OutboxRelay(outbox, create_engine(engine.url, pool_size=2), bus=bus, batch_size=200, poll_seconds=0.05)
        for _ in range(2)
    ]
    with bind_session(session_factory, bus=bus, outbox=outbox):
        for relay in relays:
            relay.start()
        try:
            threads = [threading.Thread(target=publish, args=(plan,)) for plan in plans]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()

            def unsent() -> bool:
                with engine.connect() as connection:
                    table = outbox.table
                    return connection.execute(select(func.count()).where(table.c.sent_at.is_(None))).scalar_one() == 0

            wait_for(unsent, timeout=120, interval=0.2)
        finally:
            for relay in relays:
                relay.stop()
                relay.engine.dispose()
    return counts


# The full size. make test runs the same publishers and relays with 400 events, handled by a worker
# (test_a_worker_handles_events_from_the_outbox_in_per_key_order).
@pytest.mark.slow
def test_10000_events_through_the_outbox_reach_their_lanes_in_per_key_order(
    bus: EventBus,
    session_factory: sessionmaker[Session],
    outbox: Outbox,
    engine: Engine,
    view: BrokerView,
    tag: str,
) -> None:
    counts = publish_through_the_outbox(bus, session_factory, outbox, engine, tag, events=10_000)

    lanes = {key: [m["args"][0]["seq"] for m in view.lane(Ledger, key)] for key in counts}
    assert sum(len(sequence) for sequence in lanes.values()) == 10_000
    for key, sequence in lanes.items():
        assert sequence == list(range(counts[key])), key


def handle_all(bus: EventBus, records: Records, tag: str, total: int) -> dict[str, list[int]]:
    worker = dramatiq.Worker(bus.broker, worker_threads=8, worker_timeout=100)
    worker.start()
    try:
        lines = records.wait_for(tag, total, timeout=300)
    finally:
        worker.stop()
    return per_key_sequences(lines)


def test_a_worker_handles_events_from_the_outbox_in_per_key_order(
    bus: EventBus,
    session_factory: sessionmaker[Session],
    outbox: Outbox,
    engine: Engine,
    view: BrokerView,
    records: Records,
    tag: str,
) -> None:
    counts = publish_through_the_outbox(bus, session_factory, outbox, engine, tag, events=400, per_transaction=20)

    handled = handle_all(bus, records, tag, 400)

    assert handled == {key: list(range(count)) for key, count in counts.items()}


@pytest.mark.slow
def test_a_worker_handles_10000_events_from_the_outbox_in_per_key_order(
    bus: EventBus,
    session_factory: sessionmaker[Session],
    outbox: Outbox,
    engine: Engine,
    view: BrokerView,
    records: Records,
    tag: str,
) -> None:
    started = time.monotonic()
    counts = publish_through_the_outbox(bus, session_factory, outbox, engine, tag, events=10_000)
    handled = handle_all(bus, records, tag, 10_000)
    print(f"10,000 events published, relayed and handled in {time.monotonic() - started:.1f} s")

    assert handled == {key: list(range(count)) for key, count in counts.items()}
