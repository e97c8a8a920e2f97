"""The outbox on the Django ORM, relayed by the shared SQLAlchemy relay, against PostgreSQL, Redis and a worker.

Rows committed while the broker is down wait, and are relayed after (by a relay thread in a real
``dramatiq`` worker of the Django project, or ``manage.py eventbus_outbox_relay``) in per-key order;
a rollback writes no rows, a savepoint rollback drops only its own; the migrated table is the
SQLAlchemy outbox's.
"""

from __future__ import annotations

import socket
from pathlib import Path

from sqlalchemy import Engine, func, inspect, select

from dramatiq_eventbus.transactions import Inbox, Outbox
from tests.support.worker_process import wait_for
from tests.transactions.handlers import Ledger
from tests.transactions.support import BrokerView, Records, per_key_sequences

from .conftest import Django


def dead_broker_url() -> str:
    """A Redis URL on a local port nobody listens on: the broker is down."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"redis://127.0.0.1:{port}/3"


def unsent(engine: Engine, schema: str) -> int:
    table = Outbox(f"{schema}.eventbus_outbox").table
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).where(table.c.sent_at.is_(None))).scalar_one())


def test_the_migrated_tables_are_the_sqlalchemy_outbox_and_inbox(engine: Engine, clean: str) -> None:
    outbox = Outbox(f"{clean}.eventbus_outbox")
    assert outbox.missing_columns(engine) == []
    assert outbox.has_notify_trigger(engine)
    inspector = inspect(engine)
    for table in (outbox.table, Inbox(f"{clean}.eventbus_inbox").table):
        columns = {c["name"]: c for c in inspector.get_columns(table.name, schema=clean)}
        assert sorted(columns) == sorted(c.name for c in table.columns), table.name
        for column in table.columns:
            found = columns[column.name]
            assert found["nullable"] == column.nullable, column.name
            assert found["type"].compile(dialect=engine.dialect) == column.type.compile(dialect=engine.dialect), (
                column.name
            )
        primary = inspector.get_pk_constraint(table.name, schema=clean)["constrained_columns"]
        assert primary == [c.name for c in table.primary_key.columns], table.name
        indexes = {index["name"]: index["column_names"] for index in inspector.get_indexes(table.name, schema=clean)}
        assert indexes == {index.name: [c.name for c in index.columns] for index in table.indexes}, table.name


def test_rows_committed_while_the_broker_is_down_wait_and_a_workers_relay_sends_them_in_per_key_order(
    django_env: Django,
    engine: Engine,
    view: BrokerView,
    records: Records,
    queues: tuple[str, str],
    tag: str,
    tmp_path: Path,
) -> None:
    keys = [f"{tag}-{k}" for k in range(5)]
    published = django_env.scenario(
        "publish_keyed", broker_url=dead_broker_url(), tag=tag, keys=keys, per_key=20, per_transaction=15
    )

    # Every transaction committed its rows with the broker down; the relay's pass failed, and sent nothing.
    assert published["published"] == 100
    assert published["relay_error"] is not None
    assert [row["sent"] for row in published["rows"]] == [False] * 100
    assert [(row["key"], row["event"]["seq"]) for row in published["rows"]] == [
        (key, seq) for seq in range(20) for key in keys
    ]
    assert published["url"].startswith("postgresql+psycopg://postgres@127.0.0.1:5432/test?options=")
    assert unsent(engine, clean_schema(django_env)) == 100
    assert view.queued() == [] and view.lanes(tag) == {}

    # The broker is back: the relay thread of a worker of the Django project sends them, the worker handles them.
    worker = django_env.worker(queues, tmp_path / "worker.log", threads=4, DJANGO_ORM_RELAY_IN_WORKERS="1")
    try:
        lines = records.wait_for(tag, 100, log=worker.log_tail())
        wait_for(lambda: unsent(engine, clean_schema(django_env)) == 0, describe=worker.log_tail)
    finally:
        worker.stop()
    assert per_key_sequences(lines) == {key: list(range(20)) for key in keys}
    log = worker.log()
    assert "Outbox relay started on eventbus_outbox" in log and "Outbox relay stopped" in log


def test_the_relay_command_sends_nothing_while_the_broker_is_down_then_everything_in_per_key_order(
    django_env: Django, engine: Engine, view: BrokerView, tag: str
) -> None:
    keys = [f"{tag}-{k}" for k in range(3)]
    down = dead_broker_url()
    django_env.scenario("publish_keyed", broker_url=down, tag=tag, keys=keys, per_key=10, per_transaction=7)

    failed = django_env.manage("eventbus_outbox_relay", "--once", EVENTBUS_BROKER_URL=down)
    assert failed.returncode != 0
    assert unsent(engine, clean_schema(django_env)) == 30

    relayed = django_env.manage("eventbus_outbox_relay", "--once")
    assert relayed.returncode == 0, relayed.stdout + relayed.stderr
    assert "relayed 30 message(s) from eventbus_outbox" in relayed.stdout
    assert unsent(engine, clean_schema(django_env)) == 0
    for key in keys:
        assert [m["args"][0]["seq"] for m in view.lane(Ledger, key)] == list(range(10)), key


def test_a_rollback_writes_no_rows_and_a_savepoint_rollback_drops_only_its_own(
    django_env: Django, view: BrokerView, tag: str
) -> None:
    result = django_env.scenario("rollbacks", tag=tag)

    written = [(row["actor"].rsplit(".", 1)[-1], row["event"]["n"]) for row in result["rows"]]
    assert written == [("Everyone", 1), ("StaffOnly", 3), ("Everyone", 3), ("Everyone", 4)]
    # Outside a transaction: sent at once, no row.
    assert [m["args"][0]["n"] for m in view.queued()] == [0]
    # A test mailbox recording the bus gets a transaction's events at its commit, without rows.
    assert result["rows_after_mailbox"] == len(result["rows"])
    assert result["mailbox_before_commit"] == 0
    assert result["mailbox"] == [6]


def clean_schema(django_env: Django) -> str:
    return django_env.env["DJANGO_ORM_SCHEMA"]


def test_the_apps_own_ready_installs_the_outbox_and_the_relay_thread_on_django_dramatiqs_broker(
    django_env: Django,
    engine: Engine,
    view: BrokerView,
    records: Records,
    queues: tuple[str, str],
    tag: str,
    tmp_path: Path,
) -> None:
    keys = [f"{tag}-{k}" for k in range(3)]
    app = {"DJANGO_SETTINGS_MODULE": "tests.django_orm.settings_app"}
    published = django_env.scenario(
        "publish_keyed",
        env={**app, "DJANGO_ORM_BROKER_URL": dead_broker_url()},
        tag=tag,
        keys=keys,
        per_key=10,
        per_transaction=4,
    )
    assert published["relay_error"] is not None
    assert unsent(engine, clean_schema(django_env)) == 30

    worker = django_env.worker(queues, tmp_path / "worker.log", DJANGO_ORM_BROKER_URL=view.url, **app)
    try:
        lines = records.wait_for(tag, 30, log=worker.log_tail())
    finally:
        worker.stop()
    assert per_key_sequences(lines) == {key: list(range(10)) for key in keys}
    assert "Outbox relay started on eventbus_outbox" in worker.log()


def test_the_relay_reaches_the_database_django_uses_or_the_url_given(django_env: Django) -> None:
    result = django_env.scenario("relay_configuration")

    schema = clean_schema(django_env)
    assert result["default"] == f"postgresql+psycopg://postgres@127.0.0.1:5432/test?options=-c+search_path%3D{schema}"
    assert result["files"] == ["sqlite:////var/lib/shop/db.sqlite3", "eventbus_outbox", 7, None]
    assert result["given"] == ["postgresql+psycopg://relay@db/shop", 2.5]
    assert "in-memory SQLite, which no relay can open" in result["memory"]
    assert "OUTBOX_DATABASE'] must name a database of DATABASES, not 'nowhere'" in result["unknown"]
    assert "OUTBOX_BATCH_SIZE'] must be a positive integer, not '500'" in result["batch"]
    assert "OUTBOX_POLL_SECONDS'] must be a positive number of seconds, not 0" in result["poll"]
