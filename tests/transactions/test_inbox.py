"""The inbox: a handler's writes and the record that it handled the event commit together, so a
redelivered event changes the database once.

On the real PostgreSQL: in-process runs under a set context (duplicates, concurrency, rollback,
pruning, the API's errors), and a real ``dramatiq`` worker (``tests.transactions.worker_with_inbox``)
given a copy of a message, SIGKILLed between a handler's commit and its ack, and given keyed events.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dramatiq
import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from dramatiq_eventbus import EventBus
from dramatiq_eventbus.errors import AlreadyHandled, ConfigurationError
from dramatiq_eventbus.metadata import EventContext, running, uuid7
from dramatiq_eventbus.transactions import Inbox, Outbox, SessionBinding, bind_session
from tests.support.worker_process import WorkerProcess, wait_for

from . import inbox_handlers
from .conftest import scratch_table
from .handlers import Noted
from .inbox_handlers import Credited, KeyedCredit
from .support import ACTOR_OPTIONS, BrokerView, Records, handler_context, unique

HANDLER = "tests.transactions.inbox_handlers.Crediting"
DUPLICATE_LINE = "was already handled by"


@pytest.fixture
def inbox(engine: Engine, schema: str) -> Iterator[Inbox]:
    box = Inbox(f"{schema}.{unique('inbox')}")
    box.create(engine)
    yield box
    box.drop(engine)


@pytest.fixture
def effects(engine: Engine, schema: str) -> Iterator[str]:
    """The table the handlers write their one row per run to."""
    with scratch_table(
        engine, schema, "effects", "id SERIAL PRIMARY KEY, account TEXT, seq INT, event_id TEXT"
    ) as table:
        yield table


@pytest.fixture
def local_bus() -> EventBus:
    return EventBus().configure(handlers={}, backend="inline")


def context(event_id: str, handler: str = HANDLER) -> EventContext:
    """A new context object, as each run of a handler gets (a redelivery too)."""
    return handler_context(event_id, handler)


@contextmanager
def handler_run(run: EventContext) -> Iterator[None]:
    """One run of a handler, as the bus's actor makes it: under its context, and ended early, as
    a success, where the inbox finds its event handled already."""
    with running(run), suppress(AlreadyHandled):
        yield


def effect_rows(engine: Engine, table: str) -> list[tuple[str, int, str]]:
    with engine.connect() as connection:
        return [
            tuple(row) for row in connection.execute(text(f"SELECT account, seq, event_id FROM {table} ORDER BY id"))
        ]


def write_effect(factory: sessionmaker[Session], table: str, account: str, hold: float = 0.0) -> None:
    with factory.begin() as session:
        session.execute(text(f"INSERT INTO {table} (account, seq) VALUES (:a, 0)"), {"a": account})
        time.sleep(hold)


# -- in-process, under a context ------------------------------------------------------------------


def test_a_second_run_of_a_handler_for_an_event_changes_nothing_and_says_so_once(
    local_bus: EventBus,
    session_factory: sessionmaker[Session],
    inbox: Inbox,
    effects: str,
    engine: Engine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    event_id = uuid7()
    with bind_session(session_factory, bus=local_bus, inbox=inbox), caplog.at_level(logging.INFO):
        for _ in range(2):
            with handler_run(context(event_id)):
                write_effect(session_factory, effects, "a")
        # Another handler of the same event is another row.
        with handler_run(context(event_id, handler="other.Handler")):
            write_effect(session_factory, effects, "b")
    assert [row[0] for row in effect_rows(engine, effects)] == ["a", "b"]
    assert inbox.handled(engine, HANDLER, event_id)
    assert inbox.handled(engine, "other.Handler", event_id)
    lines = [r for r in caplog.records if DUPLICATE_LINE in r.getMessage()]
    assert len(lines) == 1
    assert lines[0].levelno == logging.INFO
    assert repr(event_id) in lines[0].getMessage() and repr(HANDLER) in lines[0].getMessage()


def test_a_duplicate_that_would_insert_the_first_runs_key_again_ends_as_a_success(
    local_bus: EventBus, session_factory: sessionmaker[Session], inbox: Inbox, engine: Engine, schema: str
) -> None:
    # The common handler: a row keyed by what the event is about. Run on to its insert, a
    # duplicate failed on the key, and was retried and dead-lettered on every redelivery.
    event_id = uuid7()
    with scratch_table(engine, schema, "invoices", "order_id TEXT PRIMARY KEY") as table:
        with bind_session(session_factory, bus=local_bus, inbox=inbox):
            for _ in range(2):
                with handler_run(context(event_id)), session_factory.begin() as session:
                    session.execute(text(f"INSERT INTO {table} (order_id) VALUES ('A-1')"))
        with engine.connect() as connection:
            assert connection.execute(text(f"SELECT order_id FROM {table}")).all() == [("A-1",)]


def test_the_duplicate_line_escapes_what_the_message_controls(
    local_bus: EventBus,
    session_factory: sessionmaker[Session],
    inbox: Inbox,
    effects: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    forged = "id\n[CRITICAL] forged line"
    with bind_session(session_factory, bus=local_bus, inbox=inbox), caplog.at_level(logging.INFO):
        for _ in range(2):
            with handler_run(context(forged)):
                write_effect(session_factory, effects, "a")
    [line] = [r.getMessage() for r in caplog.records if DUPLICATE_LINE in r.getMessage()]
    assert "\n" not in line and "\\n" in line


def test_concurrent_duplicate_runs_end_as_one_effect_and_one_duplicate(
    local_bus: EventBus,
    session_factory: sessionmaker[Session],
    inbox: Inbox,
    effects: str,
    engine: Engine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    event_id = uuid7()
    failures: list[BaseException] = []
    start = threading.Barrier(4)

    def run() -> None:
        try:
            start.wait()
            with handler_run(context(event_id)):
                # Each holds its transaction open: the others wait on the inbox's unique key meanwhile.
                write_effect(session_factory, effects, "a", hold=0.3)
        except BaseException as exc:
            failures.append(exc)

    with bind_session(session_factory, bus=local_bus, inbox=inbox), caplog.at_level(logging.INFO):
        threads = [threading.Thread(target=run) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    assert failures == []
    assert len(effect_rows(engine, effects)) == 1
    assert len([r for r in caplog.records if DUPLICATE_LINE in r.getMessage()]) == 3


def test_a_rolled_back_run_leaves_no_row_and_the_next_run_handles_the_event(
    local_bus: EventBus, session_factory: sessionmaker[Session], inbox: Inbox, effects: str, engine: Engine
) -> None:
    event_id = uuid7()
    with bind_session(session_factory, bus=local_bus, inbox=inbox):
        with handler_run(context(event_id)):
            with pytest.raises(RuntimeError), session_factory.begin() as session:
                session.execute(text(f"INSERT INTO {effects} (account, seq) VALUES ('lost', 0)"))
                raise RuntimeError("the handler failed")
            assert not inbox.handled(engine, HANDLER, event_id)
            # The same run's next transaction records it instead.
            write_effect(session_factory, effects, "kept")
        with handler_run(context(event_id)):
            write_effect(session_factory, effects, "duplicate")
    assert [row[0] for row in effect_rows(engine, effects)] == ["kept"]


def test_a_run_with_two_transactions_records_the_event_once_and_keeps_both(
    local_bus: EventBus, session_factory: sessionmaker[Session], inbox: Inbox, effects: str, engine: Engine
) -> None:
    event_id = uuid7()
    with bind_session(session_factory, bus=local_bus, inbox=inbox), handler_run(context(event_id)):
        write_effect(session_factory, effects, "first")
        write_effect(session_factory, effects, "second")
        # A second session while the first's transaction is open must not wait on its own row.
        with session_factory.begin() as outer:
            outer.execute(text(f"INSERT INTO {effects} (account, seq) VALUES ('outer', 0)"))
            write_effect(session_factory, effects, "inner")
    assert sorted(row[0] for row in effect_rows(engine, effects)) == ["first", "inner", "outer", "second"]


def test_every_transaction_of_a_duplicate_run_is_undone_with_one_line(
    local_bus: EventBus,
    session_factory: sessionmaker[Session],
    inbox: Inbox,
    effects: str,
    engine: Engine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    event_id = uuid7()
    with bind_session(session_factory, bus=local_bus, inbox=inbox), caplog.at_level(logging.INFO):
        with handler_run(context(event_id)):
            write_effect(session_factory, effects, "first")
        with handler_run(context(event_id)):
            write_effect(session_factory, effects, "again")
            write_effect(session_factory, effects, "again")
        # The pooled connection the duplicate used commits normally afterwards.
        with handler_run(context(uuid7())):
            write_effect(session_factory, effects, "next")
        write_effect(session_factory, effects, "outside")
    assert [row[0] for row in effect_rows(engine, effects)] == ["first", "next", "outside"]
    assert len([r for r in caplog.records if DUPLICATE_LINE in r.getMessage()]) == 1


def test_a_duplicates_outbox_rows_are_rolled_back_with_its_writes(
    bus: EventBus, session_factory: sessionmaker[Session], inbox: Inbox, outbox: Outbox, effects: str, engine: Engine
) -> None:
    event_id = uuid7()
    with bind_session(session_factory, bus=bus, outbox=outbox, inbox=inbox) as binding:
        assert binding.writes_rows()
        for _ in range(2):
            with handler_run(context(event_id)), session_factory.begin() as session:
                session.execute(text(f"INSERT INTO {effects} (account, seq) VALUES ('a', 0)"))
                bus.publish(Noted("t", "everyone"))  # one handler: one row
    with engine.connect() as connection:
        assert len(connection.execute(outbox.table.select()).all()) == 1
    assert len(effect_rows(engine, effects)) == 1


def test_outside_a_handler_and_without_an_inbox_nothing_is_recorded(
    local_bus: EventBus, session_factory: sessionmaker[Session], inbox: Inbox, effects: str, engine: Engine
) -> None:
    with bind_session(session_factory, bus=local_bus, inbox=inbox):
        write_effect(session_factory, effects, "no context")
        write_effect(session_factory, effects, "no context")
    event_id = uuid7()
    with bind_session(session_factory, bus=local_bus), handler_run(context(event_id)):
        write_effect(session_factory, effects, "no inbox")
        write_effect(session_factory, effects, "no inbox")
    assert len(effect_rows(engine, effects)) == 4
    with engine.connect() as connection:
        assert connection.execute(inbox.table.select()).all() == []


def test_a_session_that_is_not_bound_records_nothing_and_is_not_protected(
    local_bus: EventBus, session_factory: sessionmaker[Session], inbox: Inbox, effects: str, engine: Engine
) -> None:
    other_sessions = sessionmaker(engine)
    event_id = uuid7()
    with bind_session(session_factory, bus=local_bus, inbox=inbox):
        for _ in range(2):
            with handler_run(context(event_id)):
                write_effect(other_sessions, effects, "unbound")
    assert len(effect_rows(engine, effects)) == 2
    assert not inbox.handled(engine, HANDLER, event_id)


def test_create_is_idempotent_and_drop_removes_the_table(engine: Engine, schema: str) -> None:
    box = Inbox(unique("inbox"), schema=schema)
    assert not box.exists(engine)
    box.create(engine)
    box.create(engine)
    assert box.exists(engine)
    box.drop(engine)
    box.drop(engine)
    assert not box.exists(engine)


def test_a_duplicates_publish_calls_are_dropped_with_its_writes(
    session_factory: sessionmaker[Session], inbox: Inbox, effects: str, engine: Engine
) -> None:
    from dramatiq_eventbus.testing import recording

    bus = EventBus().configure(handlers={Credited: [inbox_handlers.Crediting]}, backend="inline")
    event_id = uuid7()
    with bind_session(session_factory, bus=bus, inbox=inbox), recording(bus) as box:
        for _ in range(2):
            with handler_run(context(event_id)), session_factory.begin() as session:
                session.execute(text(f"INSERT INTO {effects} (account, seq) VALUES ('a', 0)"))
                bus.publish(Credited("t", effects, "a"))
        assert len(box.published_events()) == 1
    assert len(effect_rows(engine, effects)) == 1


def test_prune_deletes_rows_older_than_the_retention_and_the_binding_prunes_after_a_commit(
    local_bus: EventBus, session_factory: sessionmaker[Session], engine: Engine, schema: str, effects: str
) -> None:
    box = Inbox(f"{schema}.{unique('inbox')}", retention=timedelta(days=1), prune_interval=timedelta(hours=1))
    box.create(engine)
    try:
        with engine.begin() as connection:
            connection.execute(
                box.table.insert(),
                [
                    {"handler": "h", "event_id": "old", "handled_at": datetime.now(UTC) - timedelta(days=2)},
                    {"handler": "h", "event_id": "new", "handled_at": datetime.now(UTC) - timedelta(hours=1)},
                ],
            )
        assert box.prune(engine, older_than=timedelta(days=3)) == 0
        # The binding's first commit in this process prunes; the next within the interval does not.
        with bind_session(session_factory, bus=local_bus, inbox=box):
            with handler_run(context(uuid7())):
                write_effect(session_factory, effects, "a")
            assert not box.handled(engine, "h", "old")
            assert box.handled(engine, "h", "new")
            with engine.begin() as connection:
                connection.execute(
                    box.table.insert(),
                    {"handler": "h", "event_id": "old", "handled_at": datetime.now(UTC) - timedelta(days=2)},
                )
            with handler_run(context(uuid7())):
                write_effect(session_factory, effects, "b")
            assert box.handled(engine, "h", "old")
        assert box.prune(engine) == 1
        assert box.prune(engine, older_than=timedelta(seconds=0)) == 3
    finally:
        box.drop(engine)


# -- the API ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"inbox": Inbox}, "pass inbox=Inbox(), not the class"),
        ({"inbox": "eventbus_inbox"}, "takes an Inbox, not str"),
        ({"outbox": Inbox()}, "takes an Outbox, not Inbox"),
    ],
)
def test_bind_session_refuses_what_is_not_an_inbox(
    local_bus: EventBus, kwargs: dict[str, object], expected: str
) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(expected)):
        bind_session(sessionmaker(), bus=local_bus, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "kwargs", "expected"),
    [
        (("bad name",), {}, "plain SQL identifier"),
        (("a.b",), {"schema": "c"}, "names a schema"),
        ((), {"retention": timedelta(0)}, "retention must be a positive"),
        ((), {"retention": 7}, "retention must be a positive"),
        ((), {"prune_interval": timedelta(seconds=-1)}, "prune_interval must be"),
    ],
)
def test_inbox_refuses_bad_settings(args: tuple[str, ...], kwargs: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(expected)):
        Inbox(*args, **kwargs)  # type: ignore[arg-type]


def test_the_binding_and_the_inbox_say_what_they_are(local_bus: EventBus) -> None:
    box = Inbox("s.my_inbox")
    assert (box.schema, box.name, repr(box)) == ("s", "my_inbox", "<Inbox s.my_inbox>")
    assert box.retention == timedelta(days=7)
    with bind_session(sessionmaker(), bus=local_bus, inbox=box) as binding:
        assert isinstance(binding, SessionBinding)
        assert "inbox=s.my_inbox" in repr(binding)
    assert Inbox(prune_interval=None).prune_due() is False


def test_a_handler_whose_inbox_table_is_missing_fails_and_changes_nothing(
    local_bus: EventBus, session_factory: sessionmaker[Session], effects: str, engine: Engine, schema: str
) -> None:
    box = Inbox(f"{schema}.{unique('missing')}")
    binding = bind_session(session_factory, bus=local_bus, inbox=box)
    with binding, handler_run(context(uuid7())), pytest.raises(Exception, match="does not exist"):
        write_effect(session_factory, effects, "a")
    assert effect_rows(engine, effects) == []


def test_sqlite_claims_with_on_conflict_too(local_bus: EventBus, tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    box = Inbox()
    box.create(engine)
    with engine.begin() as connection:
        assert box.claim(connection, "h", "e") is True
        assert box.claim(connection, "h", "e") is False
    assert box.handled(engine, "h", "e")
    engine.dispose()


# -- a real dramatiq worker ------------------------------------------------------------------------


def start_worker(
    engine: Engine,
    inbox: Inbox,
    queues: tuple[str, str],
    redis_url: str,
    records: Records,
    log_path: Path,
    threads: int = 2,
) -> WorkerProcess:
    return WorkerProcess(
        "tests.transactions.worker_with_inbox",
        queues=queues,
        env={
            "EVENTBUS_HANDLERS": "tests.transactions.inbox_handlers:HANDLERS",
            "EVENTBUS_BROKER_URL": redis_url,
            "EVENTBUS_QUEUE": queues[0],
            "EVENTBUS_PARTITIONED_QUEUE": queues[1],
            "EVENTBUS_DEFAULT_ACTOR_OPTIONS": json.dumps(ACTOR_OPTIONS),
            # A SIGKILLed worker's fetched messages go back after this long.
            "EVENTBUS_REDIS_HEARTBEAT_SECONDS": "2",
            "TX_DATABASE_URL": engine.url.render_as_string(hide_password=False),
            inbox_handlers.INBOX_TABLE_VAR: inbox.qualified_name,
            **records.env(),
        },
        log_path=log_path,
        threads=threads,
    ).start()


@pytest.fixture
def inbox_bus(redis_url: str, queues: tuple[str, str], view: BrokerView) -> Iterator[EventBus]:
    made = EventBus().configure(
        handlers=inbox_handlers.HANDLERS,
        broker=redis_url,
        queue=queues[0],
        partitioned_queue=queues[1],
        default_actor_options=ACTOR_OPTIONS,
    )
    yield made
    made.broker.close()
    view.client.zrem("dramatiq:__heartbeats__", getattr(made.broker, "broker_id", ""))


# Two runs at once, the second waiting on the first's claim, on a real worker: a slow variant. make test
# runs the duplicate after the first here, and two at once in this process
# (test_concurrent_duplicate_runs_end_as_one_effect_and_one_duplicate).
@pytest.mark.parametrize(
    "hold",
    [pytest.param(0.0, id="one-after-the-other"), pytest.param(1.0, id="at-once", marks=pytest.mark.slow)],
)
def test_a_message_delivered_twice_changes_the_database_once(
    inbox_bus: EventBus,
    inbox: Inbox,
    effects: str,
    engine: Engine,
    view: BrokerView,
    queues: tuple[str, str],
    redis_url: str,
    records: Records,
    tag: str,
    tmp_path: Path,
    hold: float,
) -> None:
    event_id = inbox_bus.publish(Credited(tag, effects, "a", hold=hold))
    [queued] = view.queued()
    # The copy a broker may deliver again: the same message under another broker id.
    copy = dramatiq.Message(**{**queued, "message_id": str(uuid.uuid4())})
    inbox_bus.broker.enqueue(copy)
    assert len(view.queued()) == 2

    worker = start_worker(engine, inbox, queues, redis_url, records, tmp_path / "worker.log")
    try:
        # The first run reaches the handler's end; the duplicate stops at its first statement, as
        # a success, and is acknowledged.
        records.wait_for(tag, 1, log=worker.log_tail())
        wait_for(lambda: DUPLICATE_LINE in worker.log() and view.queued() == [], describe=worker.log_tail)
    finally:
        worker.stop()
    assert [run["event_id"] for run in records.of(tag)] == [event_id]
    assert effect_rows(engine, effects) == [("a", 0, event_id)]
    assert inbox.handled(engine, "tests.transactions.inbox_handlers.Crediting", str(event_id))
    log = worker.log()
    assert log.count(DUPLICATE_LINE) == 1, log
    [line] = [line for line in log.splitlines() if DUPLICATE_LINE in line]
    assert "INFO" in line and repr(event_id) in line
    assert "Traceback" not in log and "was skipped" not in log


def test_a_worker_sigkilled_after_the_commit_before_the_ack_changes_the_database_once(
    inbox_bus: EventBus,
    inbox: Inbox,
    effects: str,
    engine: Engine,
    view: BrokerView,
    queues: tuple[str, str],
    redis_url: str,
    records: Records,
    tag: str,
    tmp_path: Path,
) -> None:
    victim = start_worker(engine, inbox, queues, redis_url, records, tmp_path / "victim.log")
    try:
        event_id = inbox_bus.publish(Credited(tag, effects, "a", block=True))
        # The handler committed and blocks before returning: the message is not acknowledged yet.
        records.wait_for(tag, 1, log=victim.log_tail())
        assert inbox.handled(engine, "tests.transactions.inbox_handlers.Crediting", str(event_id))
    finally:
        os.killpg(victim.pid, signal.SIGKILL)
        victim.process.wait(timeout=10)  # type: ignore[union-attr]

    survivor = start_worker(engine, inbox, queues, redis_url, records, tmp_path / "survivor.log")
    try:
        # The redelivery runs the handler again, which finds the inbox row and stops there.
        wait_for(lambda: DUPLICATE_LINE in survivor.log() and view.queued() == [], describe=survivor.log_tail)
    finally:
        survivor.stop()
    assert len(records.of(tag)) == 1  # the first run's, before it was killed
    assert effect_rows(engine, effects) == [("a", 0, event_id)]
    assert survivor.log().count(DUPLICATE_LINE) == 1, survivor.log()


def test_per_key_order_holds_with_the_inbox(
    inbox_bus: EventBus,
    inbox: Inbox,
    effects: str,
    engine: Engine,
    queues: tuple[str, str],
    redis_url: str,
    records: Records,
    tag: str,
    tmp_path: Path,
) -> None:
    keys = [f"{tag}-k{n}" for n in range(4)]
    per_key = 6
    worker = start_worker(engine, inbox, queues, redis_url, records, tmp_path / "worker.log", threads=4)
    try:
        for seq in range(per_key):
            inbox_bus.publish([KeyedCredit(tag, effects, key, seq) for key in keys])
        records.wait_for(tag, len(keys) * per_key, timeout=40, log=worker.log_tail())
    finally:
        worker.stop()
    rows = effect_rows(engine, effects)
    for key in keys:
        assert [seq for account, seq, _ in rows if account == key] == list(range(per_key)), rows
    with engine.connect() as connection:
        assert len(connection.execute(inbox.table.select()).all()) == len(keys) * per_key
    assert DUPLICATE_LINE not in worker.log()
