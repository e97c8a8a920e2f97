"""Outbox rows the relay cannot send: set aside with one ERROR line, and the rows after them sent.

Whoever can write to the outbox table (another service, a migration gone wrong, an attacker
with the database's credentials) can put there a row that holds no message the bus can send.
Such a row made every pass of the relay raise, so no row after it was ever sent. On real
PostgreSQL and Redis: each kind of poison row between good ones; the rows of its partition
key on either side of it; a running relay; and a table made before the relay could set rows
aside.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from dramatiq.message import Message
from sqlalchemy import Engine, create_engine, insert, inspect, select, text
from sqlalchemy.orm import Session, sessionmaker

from dramatiq_eventbus import EventBus
from dramatiq_eventbus.handler import handler_name
from dramatiq_eventbus.transactions import Outbox, OutboxRelay, bind_session
from dramatiq_eventbus.transactions.relay import Batch
from tests.support.worker_process import wait_for

from .handlers import Deposited, Ledger, Noted
from .support import BrokerView, outbox_ids

#: Longer than any line the relay may log about a row; a forged one would be megabytes.
LONGEST_LINE = 1_500


def genuine(bus: EventBus, queue: str, **changes: Any) -> bytes:
    """A message as the bus stores it, with ``changes`` made to its envelope."""
    message: Message[Any] = Message(
        queue_name=queue, actor_name=handler_name(Ledger), args=({},), kwargs={}, options={}
    )
    envelope = {**json.loads(message.encode()), **changes}
    return json.dumps(envelope).encode()


#: Each kind of poison row: what its message column holds, given the bus and the partitioned queue.
POISON: dict[str, Callable[[EventBus, str], bytes]] = {
    "not JSON": lambda bus, queue: b"\x00\xffnot json\n[CRITICAL] forged record",
    "JSON, not an object": lambda bus, queue: b'["a", "list"]',
    "an envelope without fields": lambda bus, queue: b"{}",
    "options not an object": lambda bus, queue: genuine(bus, queue, options=["x"]),
    "args not a list": lambda bus, queue: genuine(bus, queue, args="x"),
    "an unknown field": lambda bus, queue: genuine(bus, queue, **{"priority\n" * 1000: 1}),
    "a message id not a str": lambda bus, queue: genuine(bus, queue, message_id=[1]),
    "over max_message_bytes": lambda bus, queue: genuine(bus, queue, args=["x" * (2 << 20)]),
    "another queue": lambda bus, queue: genuine(bus, queue, queue_name="amq.forged"),
}


def write_row(engine: Engine, outbox: Outbox, *, queue: str, partition_key: str | None, message: bytes) -> int:
    with engine.begin() as connection:
        values = {
            "queue_name": queue,
            "actor_name": handler_name(Ledger),
            "partition_key": partition_key,
            "message": message,
        }
        return int(connection.execute(insert(outbox.table).values(values).returning(outbox.table.c.id)).scalar_one())


def publish(bus: EventBus, session_factory: sessionmaker[Session], outbox: Outbox, events: list[Any]) -> None:
    with bind_session(session_factory, bus=bus, outbox=outbox), session_factory.begin():
        bus.publish(events)


def row_states(engine: Engine, outbox: Outbox) -> dict[int, tuple[bool, datetime | None, str | None]]:
    table = outbox.table
    with engine.connect() as connection:
        found = connection.execute(select(table.c.id, table.c.sent_at, table.c.failed_at, table.c.failure))
        return {row.id: (row.sent_at is not None, row.failed_at, row.failure) for row in found}


def relay_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "dramatiq_eventbus.outbox" and r.levelno >= logging.WARNING
    ]


@pytest.mark.parametrize("kind", list(POISON))
def test_a_poison_row_is_set_aside_and_the_rows_after_it_are_sent_in_order(
    kind: str,
    bus: EventBus,
    session_factory: sessionmaker[Session],
    outbox: Outbox,
    engine: Engine,
    view: BrokerView,
    tag: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = f"{tag}-k"
    queue = bus.config.queues.partitioned
    publish(bus, session_factory, outbox, [Deposited(tag, key, 0), Deposited(tag, key, 1), Noted(tag, "all", 1)])
    poison = write_row(engine, outbox, queue=queue, partition_key=key, message=POISON[kind](bus, queue))
    publish(bus, session_factory, outbox, [Deposited(tag, key, 2), Noted(tag, "all", 2)])
    relay = OutboxRelay(outbox, engine, bus=bus)

    with caplog.at_level(logging.INFO, logger="dramatiq_eventbus.outbox"):
        sent = relay.relay_pending()

    assert sent == 5
    states = row_states(engine, outbox)
    sent_flag, failed_at, failure = states.pop(poison)
    assert not sent_flag and failed_at is not None and failure
    assert len(failure) <= 500 and failure.isprintable()
    assert all(sent and failed is None for sent, failed, _ in states.values())
    # The poison row's key goes on past it, in order: the lane skips it as it skips a dead letter.
    assert [m["args"][0]["seq"] for m in view.lane(Ledger, key)] == [0, 1, 2]
    assert sorted(outbox_ids(view.delivered(tag))) == sorted(states)
    (line,) = [line for line in relay_lines(caplog) if f"row {poison}" in line]
    assert line.startswith(f"Set aside outbox row {poison} of {outbox.qualified_name} ")
    assert len(line) <= LONGEST_LINE and "\n" not in line
    # Set aside once and for all: the next pass neither sends it nor logs it again.
    caplog.clear()
    assert relay.relay_pending() == 0
    assert not relay_lines(caplog)


def test_a_running_relay_goes_on_past_a_batch_of_poison_rows(
    bus: EventBus,
    session_factory: sessionmaker[Session],
    outbox: Outbox,
    engine: Engine,
    view: BrokerView,
    tag: str,
) -> None:
    queue = bus.config.queues.partitioned
    poison = [write_row(engine, outbox, queue=queue, partition_key=None, message=b"x") for _ in range(12)]
    publish(bus, session_factory, outbox, [Noted(tag, "all", n) for n in range(3)])
    relay = OutboxRelay(outbox, engine, bus=bus, batch_size=5, poll_seconds=0.05)
    relay.start()
    try:
        wait_for(lambda: len(outbox_ids(view.delivered(tag))) == 3, timeout=10)
    finally:
        relay.stop()
    states = row_states(engine, outbox)
    assert all(states[row][1] is not None for row in poison)


def test_an_older_table_gets_the_columns_to_set_rows_aside(
    bus: EventBus, engine: Engine, schema: str, view: BrokerView, tag: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The table as Outbox.create() made it before the relay could set rows aside.
    box = Outbox(f"{schema}.old_{tag}")
    with engine.begin() as connection:
        connection.execute(
            text(
                f"CREATE TABLE {box.qualified_name} (id BIGSERIAL PRIMARY KEY, created_at TIMESTAMPTZ NOT NULL "
                "DEFAULT now(), queue_name VARCHAR(255) NOT NULL, actor_name VARCHAR(255) NOT NULL, event_type "
                "VARCHAR(255), partition_key TEXT, message BYTEA NOT NULL, sent_at TIMESTAMPTZ)"
            )
        )
    try:
        with engine.begin() as connection:
            connection.execute(
                text(f"INSERT INTO {box.qualified_name} (queue_name, actor_name, message) VALUES ('q', 'a', 'x')")
            )
        relay = OutboxRelay(box, engine, bus=bus)
        with caplog.at_level(logging.INFO, logger="dramatiq_eventbus.outbox"):
            relay.check()
            relay.relay_pending()
        columns = {c["name"] for c in inspect(engine).get_columns(box.name, schema=schema)}
        assert {"failed_at", "failure"} <= columns
        assert [failed is not None for _, failed, _ in row_states(engine, box).values()] == [True]
        box.create(engine)  # and the table helper does nothing more
    finally:
        box.drop(engine)


def test_the_relay_says_at_start_how_many_rows_wait_set_aside(
    bus: EventBus, outbox: Outbox, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(2):
        write_row(engine, outbox, queue="q", partition_key=None, message=b"x")
    relay = OutboxRelay(outbox, engine, bus=bus)
    relay.relay_pending()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="dramatiq_eventbus.outbox"):
        relay.check()
    (line,) = relay_lines(caplog)
    assert "2 row(s) set aside" in line


def test_a_row_whose_message_the_bus_cannot_sign_is_set_aside(
    redis_url: str,
    queues: tuple[str, str],
    outbox: Outbox,
    engine: Engine,
    view: BrokerView,
    tag: str,
    session_factory: sessionmaker[Session],
) -> None:
    # Read without fault, it fails only when the relay signs it (a lone surrogate cannot be
    # UTF-8): the relay then sends the batch's rows one by one, to find which.
    keyed = EventBus().configure(
        handlers="tests.transactions.handlers:HANDLERS",
        broker=redis_url,
        queue=queues[0],
        partitioned_queue=queues[1],
        secret_key="poison-rows-secret-key-0123456789",
    )
    try:
        queue = keyed.config.queues.partitioned
        publish(keyed, session_factory, outbox, [Noted(tag, "all", 0)])
        poison = write_row(
            engine, outbox, queue=queue, partition_key=None, message=genuine(keyed, queue, args=[{"s": "\ud800"}])
        )
        publish(keyed, session_factory, outbox, [Noted(tag, "all", 1)])
        assert OutboxRelay(outbox, engine, bus=keyed).relay_pending() == 2
        states = row_states(engine, outbox)
        assert states.pop(poison)[1] is not None
        assert all(sent for sent, _, _ in states.values())
    finally:
        keyed.broker.close()


def test_a_row_set_aside_is_sent_once_its_failed_at_is_cleared(
    bus: EventBus,
    session_factory: sessionmaker[Session],
    outbox: Outbox,
    engine: Engine,
    view: BrokerView,
    tag: str,
) -> None:
    queue = bus.config.queues.partitioned
    row = write_row(engine, outbox, queue=queue, partition_key=None, message=b"x")
    relay = OutboxRelay(outbox, engine, bus=bus)
    relay.relay_pending()
    publish(bus, session_factory, outbox, [Deposited(tag, f"{tag}-k", 0)])
    (stored,) = [r for r in row_states(engine, outbox) if r != row]
    with engine.begin() as connection:  # what an operator does once the row is corrected
        table = outbox.qualified_name
        connection.execute(
            text(
                f"UPDATE {table} SET failed_at = NULL, failure = NULL, "
                f"message = (SELECT message FROM {table} WHERE id = {stored}) WHERE id = {row}"
            )
        )
    assert relay.relay_pending() == 2
    assert sorted(outbox_ids(view.delivered(tag))) == [row, stored]


def test_a_relay_that_may_not_add_the_columns_says_so_and_sends_the_other_rows(
    bus: EventBus, engine: Engine, schema: str, tag: str, view: BrokerView, caplog: pytest.LogCaptureFixture
) -> None:
    # A relay whose database user does not own the table (it may read and write rows only): it
    # must neither stop the worker it runs in nor stop at the row, nor send a row twice.
    box = Outbox(f"{schema}.old_{tag}")
    role = f"relay_{tag}"[:60]
    queue = bus.config.queues.partitioned
    with engine.begin() as connection:
        connection.execute(
            text(
                f"CREATE TABLE {box.qualified_name} (id BIGSERIAL PRIMARY KEY, created_at TIMESTAMPTZ NOT NULL "
                "DEFAULT now(), queue_name VARCHAR(255) NOT NULL, actor_name VARCHAR(255) NOT NULL, event_type "
                "VARCHAR(255), partition_key TEXT, message BYTEA NOT NULL, sent_at TIMESTAMPTZ)"
            )
        )
        for message in (b"x", genuine(bus, queue), genuine(bus, queue)):
            connection.execute(
                text(f"INSERT INTO {box.qualified_name} (queue_name, actor_name, message) VALUES ('q', 'a', :m)"),
                {"m": message},
            )
        connection.execute(text(f'CREATE ROLE "{role}" LOGIN'))
        connection.execute(text(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"'))
        connection.execute(text(f'GRANT SELECT, INSERT, UPDATE, DELETE ON {box.qualified_name} TO "{role}"'))
    restricted = create_engine(engine.url.set(username=role, password=None))
    try:
        relay = OutboxRelay(box, restricted, bus=bus)
        with caplog.at_level(logging.INFO, logger="dramatiq_eventbus.outbox"):
            relay.check()
        (line,) = [line for line in relay_lines(caplog) if "lacks the column(s)" in line]
        assert "lacks the column(s) failed_at, failure, and adding them failed" in line
        assert "InsufficientPrivilege" in line
        for _ in range(2):
            with pytest.raises(ValueError, match="outbox row 1 holds no message the bus can send"):
                relay.relay_once()
        assert sorted(outbox_ids(view.queued())) == [2, 3]  # once each
        box.create(engine)  # the owner adds them: the relay finds them when it meets the row, for its next pass
        with pytest.raises(ValueError, match="outbox row 1"):
            relay.relay_once()
        assert relay.relay_once() == Batch(0, 0, 1)
        states = row_states(engine, box)
        assert [states[row][1] is not None for row in sorted(states)] == [True, False, False]
    finally:
        restricted.dispose()
        box.drop(engine)
        with engine.begin() as connection:
            connection.execute(text(f'REVOKE ALL ON SCHEMA "{schema}" FROM "{role}"'))
            connection.execute(text(f'DROP ROLE "{role}"'))
