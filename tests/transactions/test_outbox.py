"""The outbox: rows written in the publisher's transaction, the table helper, and the relay's normal work."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from dramatiq.message import Message
from sqlalchemy import Engine, create_engine, func, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from dramatiq_eventbus import ConfigurationError, EventBus, correlation
from dramatiq_eventbus.handler import handler_name
from dramatiq_eventbus.transactions import Outbox, OutboxRelay, SessionBinding, bind_session
from tests.support.worker_process import REPO_ROOT, wait_for

from .handlers import HANDLERS, Deposited, Everyone, Ledger, Noted, StaffOnly
from .support import BrokerView, Records, outbox_ids


@pytest.fixture
def bound(bus: EventBus, session_factory: sessionmaker[Session], outbox: Outbox) -> Iterator[SessionBinding]:
    with bind_session(session_factory, bus=bus, outbox=outbox) as binding:
        yield binding


def rows(engine: Engine, outbox: Outbox) -> list[dict[str, object]]:
    table = outbox.table
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(select(table).order_by(table.c.id))]


def test_a_commit_writes_one_row_per_interested_handler_and_a_rollback_none(
    bus: EventBus,
    bound: SessionBinding,
    session_factory: sessionmaker[Session],
    outbox: Outbox,
    engine: Engine,
    view: BrokerView,
    tag: str,
) -> None:
    with session_factory() as session:
        with session.begin():
            bus.publish(Noted(tag, "staff", 1))  # StaffOnly and Everyone
            bus.publish([Noted(tag, "all", 2), Deposited(tag, f"{tag}-a", 0)])  # Everyone; Ledger
            assert rows(engine, outbox) == []  # not committed: another connection sees nothing
        with session.begin():
            bus.publish(Noted(tag, "staff", 3))
            session.rollback()
    written = rows(engine, outbox)
    assert [(r["actor_name"], r["partition_key"], r["sent_at"]) for r in written] == [
        (handler_name(StaffOnly), None, None),
        (handler_name(Everyone), None, None),
        (handler_name(Everyone), None, None),
        (handler_name(Ledger), f"{tag}-a", None),
    ]
    assert view.queued() == []  # nothing reaches the broker before a relay
    # Each row holds the message a direct publish() would have sent.
    first = Message.decode(written[0]["message"])  # type: ignore[arg-type]
    assert (first.queue_name, first.actor_name) == (bus.config.queues.default, handler_name(StaffOnly))
    assert bus.config.codec.decode(first.args[0]) == Noted(tag, "staff", 1)
    assert written[3]["queue_name"] == bus.config.queues.partitioned
    assert written[0]["event_type"] == "tests.transactions.handlers:Noted"


def test_a_savepoint_rolled_back_takes_its_rows_with_it(
    bus: EventBus,
    bound: SessionBinding,
    session_factory: sessionmaker[Session],
    outbox: Outbox,
    engine: Engine,
    tag: str,
) -> None:
    with session_factory() as session, session.begin():
        bus.publish(Noted(tag, "all", 1))
        with pytest.raises(ValueError), session.begin_nested():
            bus.publish(Noted(tag, "all", 2))
            raise ValueError("undo")
        with session.begin_nested():
            bus.publish(Noted(tag, "all", 3))
    numbers = [Message.decode(r["message"]).args[0]["n"] for r in rows(engine, outbox)]  # type: ignore[arg-type]
    assert numbers == [1, 3]


def test_the_relay_sends_committed_rows_once_in_order_and_marks_them_sent(
    bus: EventBus,
    bound: SessionBinding,
    session_factory: sessionmaker[Session],
    outbox: Outbox,
    engine: Engine,
    view: BrokerView,
    tag: str,
) -> None:
    key = f"{tag}-k"
    with session_factory.begin():
        bus.publish([Deposited(tag, key, seq) for seq in range(5)])
        bus.publish(Noted(tag, "all", 1))
    relay = OutboxRelay(outbox, engine, bus=bus, batch_size=4)

    assert relay.relay_pending() == 6
    assert relay.relay_pending() == 0

    assert all(row["sent_at"] is not None for row in rows(engine, outbox))
    lane = view.lane(Ledger, key)
    assert [m["args"][0]["seq"] for m in lane] == [0, 1, 2, 3, 4]
    assert sorted(outbox_ids(view.delivered(tag))) == [row["id"] for row in rows(engine, outbox)]
    # A fresh message id per send: a message sent again after a crash is never a duplicate id in its lane.
    stored = {Message.decode(row["message"]).message_id for row in rows(engine, outbox)}  # type: ignore[arg-type]
    assert stored.isdisjoint(m["message_id"] for m in view.delivered(tag))


def test_sent_rows_are_pruned_after_their_age(
    bus: EventBus,
    bound: SessionBinding,
    session_factory: sessionmaker[Session],
    outbox: Outbox,
    engine: Engine,
    tag: str,
) -> None:
    with session_factory.begin():
        bus.publish([Noted(tag, "all", n) for n in range(3)])
    relay = OutboxRelay(outbox, engine, bus=bus, prune_after_seconds=3600)
    relay.relay_pending()
    with session_factory.begin():
        bus.publish(Noted(tag, "all", 3))  # unsent: never pruned
    table = outbox.table
    with engine.begin() as connection:
        old = datetime.now(timezone.utc) - timedelta(hours=2)
        connection.execute(
            update(table).where(table.c.id == select(func.min(table.c.id)).scalar_subquery()).values(sent_at=old)
        )

    assert relay.prune() == 1
    assert [r["sent_at"] is None for r in rows(engine, outbox)] == [False, False, True]
    assert OutboxRelay(outbox, engine, bus=bus, prune_after_seconds=None).prune() == 0


def test_a_running_relay_wakes_on_notify_at_commit_without_polling(
    bus: EventBus,
    bound: SessionBinding,
    session_factory: sessionmaker[Session],
    outbox: Outbox,
    engine: Engine,
    view: BrokerView,
    tag: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    relay = OutboxRelay(outbox, engine, bus=bus, poll_seconds=60)
    relay.start()
    try:
        time.sleep(0.3)  # past its first pass: from now on only a NOTIFY wakes it within the minute
        with session_factory.begin():
            bus.publish(Noted(tag, "all", 1))
        started = time.monotonic()
        wait_for(lambda: len(view.queued()) == 1, timeout=10, interval=0.01)
        assert time.monotonic() - started < 0.9
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    finally:
        relay.stop()


def test_publish_falls_back_to_after_commit_where_no_relay_could_send(
    session_factory: sessionmaker[Session], outbox: Outbox, engine: Engine, tag: str, records: Records
) -> None:
    from dramatiq_eventbus.testing import stub_worker

    journal: list[int] = []

    class Journal:
        def deliver(self, deliveries: object) -> None:
            journal.append(len(deliveries))  # type: ignore[arg-type]

    for bus in (
        EventBus().configure(handlers=HANDLERS, broker="stub", backend=Journal()),  # a backend of its own
        EventBus().configure(handlers=HANDLERS, broker="stub", backend="inline"),
    ):
        with bind_session(session_factory, bus=bus, outbox=outbox), session_factory() as session:
            with session.begin():
                bus.publish(Noted(tag, "nobody", 1))
            with session.begin():
                bus.publish(Noted(tag, "nobody", 2))
                session.rollback()
    assert journal == [1]
    assert [line["n"] for line in records.of(tag)] == [1]  # the inline backend ran the handler after commit
    # A StubBroker lives in this process only: stub_worker() tests run their handlers after commit.
    bus = EventBus().configure(handlers={Noted: [Everyone]}, broker="stub")
    with bind_session(session_factory, bus=bus, outbox=outbox), stub_worker(bus) as worker:
        with session_factory.begin():
            bus.publish(Noted(tag, "nobody", 3))
            assert worker.broker.queues[bus.config.queues.default].qsize() == 0
        assert worker.broker.queues[bus.config.queues.default].qsize() == 1
    assert rows(engine, outbox) == []


def test_the_table_helper_is_idempotent_and_installs_the_notify_trigger(engine: Engine, schema: str) -> None:
    box = Outbox("helper_made", schema=schema)
    box.create(engine)
    box.create(engine)
    try:
        with engine.connect() as connection:
            triggers = (
                connection.execute(
                    text("SELECT tgname FROM pg_trigger WHERE tgrelid = to_regclass(:t)"),
                    {"t": f'"{schema}"."helper_made"'},
                )
                .scalars()
                .all()
            )
        assert triggers == ["helper_made_notify"]
        assert box.exists(engine)
    finally:
        box.drop(engine)
    assert not box.exists(engine)


@pytest.mark.parametrize(
    ("table", "schema", "message"),
    [
        ("bad-name", None, "plain SQL identifier"),
        ("a.b", "c", "names a schema"),
        ("ok", "drop table x;", "plain SQL identifier"),
    ],
)
def test_bad_table_names_are_refused(table: str, schema: str | None, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Outbox(table, schema=schema)


def test_the_relay_names_a_missing_table_and_a_bus_that_cannot_send(engine: Engine, schema: str) -> None:
    bus = EventBus().configure(handlers=HANDLERS, broker="stub")
    with pytest.raises(ConfigurationError, match=f"the outbox table '{schema}.missing' does not exist"):
        OutboxRelay(Outbox(f"{schema}.missing"), engine, bus=bus).check()
    inline = EventBus().configure(handlers=HANDLERS, broker="stub", backend="inline")
    with pytest.raises(ConfigurationError, match="sends through the 'dramatiq' backend"):
        OutboxRelay(Outbox(f"{schema}.missing"), engine, bus=inline).check()
    with pytest.raises(ConfigurationError, match="batch_size must be a positive integer"):
        OutboxRelay(Outbox(f"{schema}.missing"), engine, bus=bus, batch_size=0)


def test_on_sqlite_the_relay_polls(bus: EventBus, view: BrokerView, tmp_path: Path, tag: str) -> None:
    engine = create_engine(f"sqlite:///{tmp_path}/app.db")
    box = Outbox()
    box.create(engine)
    factory = sessionmaker(engine)
    relay = OutboxRelay(box, engine, bus=bus, poll_seconds=0.05)
    try:
        with bind_session(factory, bus=bus, outbox=box):
            relay.start()
            with factory.begin():
                bus.publish([Deposited(tag, f"{tag}-k", seq) for seq in range(3)])
            with factory() as session, session.begin():
                bus.publish(Noted(tag, "all", 1))
                session.rollback()
            wait_for(lambda: len(view.lane(Ledger, f"{tag}-k")) == 3, timeout=10)
        assert [m["args"][0]["seq"] for m in view.lane(Ledger, f"{tag}-k")] == [0, 1, 2]
        time.sleep(0.2)
        assert len(view.delivered(tag)) == 3
    finally:
        relay.stop()
        engine.dispose()


def test_the_outbox_relay_command(
    bus: EventBus,
    bound: SessionBinding,
    session_factory: sessionmaker[Session],
    outbox: Outbox,
    engine: Engine,
    view: BrokerView,
    queues: tuple[str, str],
    redis_url: str,
    tag: str,
) -> None:
    with session_factory.begin():
        bus.publish([Noted(tag, "staff", 1), Deposited(tag, f"{tag}-k", 0)])
    env = {key: value for key, value in os.environ.items() if not key.startswith("EVENTBUS_")}
    env.update(
        EVENTBUS_HANDLERS="tests.transactions.handlers:HANDLERS",
        EVENTBUS_BROKER_URL=redis_url,
        EVENTBUS_QUEUE=queues[0],
        EVENTBUS_PARTITIONED_QUEUE=queues[1],
        EVENTBUS_OUTBOX_URL=str(engine.url.render_as_string(hide_password=False)),
        EVENTBUS_OUTBOX_TABLE=outbox.qualified_name,
        PYTHONPATH=str(REPO_ROOT),
    )
    command = [sys.executable, "-m", "dramatiq_eventbus", "outbox-relay", "--once"]
    done = subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"relayed 3 message(s) from {outbox.qualified_name}" in done.stdout
    assert len(view.delivered(tag)) == 3

    del env["EVENTBUS_OUTBOX_URL"]
    missing = subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2
    assert "set EVENTBUS_OUTBOX_URL (or --url)" in missing.stderr


def test_the_metadata_survives_the_outbox_and_the_relay(
    bus: EventBus,
    bound: SessionBinding,
    session_factory: sessionmaker[Session],
    outbox: Outbox,
    engine: Engine,
    view: BrokerView,
    tag: str,
) -> None:
    with session_factory.begin(), correlation(f"req-{tag}"):
        # publish() returns the ids at once, though the messages are only rows until the relay sends them.
        deposited, noted = bus.publish([Deposited(tag, f"{tag}-k", 0), Noted(tag, "all", 1)])
    stored = [Message.decode(row["message"]) for row in rows(engine, outbox)]  # type: ignore[arg-type]
    assert {m.options["event_id"] for m in stored} == {deposited, noted}
    assert OutboxRelay(outbox, engine, bus=bus).relay_pending() == len(stored)
    sent = view.delivered(tag)
    assert len(sent) == len(stored)
    assert {m["options"]["event_id"] for m in sent} == {deposited, noted}
    assert {m["options"]["correlation_id"] for m in sent} == {f"req-{tag}"}
    assert all("causation_id" not in m["options"] and isinstance(m["options"]["published_at"], int) for m in sent)
    by_event = {m.options["event_id"]: m.options["published_at"] for m in stored}
    assert all(m["options"]["published_at"] == by_event[m["options"]["event_id"]] for m in sent)
