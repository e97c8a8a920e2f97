"""End to end with ``dramatiq``: a handler in a worker process never sees the publisher's uncommitted data.

The worker is ``dramatiq tests.transactions.worker_with_relay``, configured only through
``EVENTBUS_*`` variables, with the outbox relay running as a thread inside it.
"""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from dramatiq_eventbus import EventBus
from dramatiq_eventbus.transactions import Outbox, bind_session
from tests.support.worker_process import WorkerProcess

from .handlers import AccountOpened
from .support import ACTOR_OPTIONS, Records


def open_account(session: Session, accounts: str, name: str) -> int:
    return int(
        session.execute(text(f"INSERT INTO {accounts} (name) VALUES (:name) RETURNING id"), {"name": name}).scalar_one()
    )


def test_a_handler_reads_the_row_its_transaction_wrote_after_commit_and_through_the_outbox(
    bus: EventBus,
    session_factory: sessionmaker[Session],
    outbox: Outbox,
    engine: Engine,
    accounts: str,
    queues: tuple[str, str],
    redis_url: str,
    records: Records,
    tag: str,
    tmp_path: Path,
) -> None:
    import json

    worker = WorkerProcess(
        "tests.transactions.worker_with_relay",
        queues=queues,
        env={
            "EVENTBUS_HANDLERS": "tests.transactions.handlers:HANDLERS",
            "EVENTBUS_BROKER_URL": redis_url,
            "EVENTBUS_QUEUE": queues[0],
            "EVENTBUS_PARTITIONED_QUEUE": queues[1],
            "EVENTBUS_DEFAULT_ACTOR_OPTIONS": json.dumps(ACTOR_OPTIONS),
            "EVENTBUS_OUTBOX_URL": engine.url.render_as_string(hide_password=False),
            "EVENTBUS_OUTBOX_TABLE": outbox.qualified_name,
            "TX_DATABASE_URL": engine.url.render_as_string(hide_password=False),
            **records.env(),
        },
        log_path=tmp_path / "worker.log",
        threads=2,
    ).start()
    try:
        # The control: published directly, the handler runs while the transaction is open, and finds nothing.
        with session_factory.begin() as session:
            account = open_account(session, accounts, "direct")
            bus.publish(AccountOpened(f"{tag}-direct", accounts, account))
            [seen] = records.wait_for(f"{tag}-direct", 1, log=worker.log_tail())
        assert seen["found"] is None

        for mode, outbox_or_none in (("after-commit", None), ("outbox", outbox)):
            with bind_session(session_factory, bus=bus, outbox=outbox_or_none):
                with session_factory.begin() as session:
                    account = open_account(session, accounts, mode)
                    bus.publish(AccountOpened(f"{tag}-{mode}", accounts, account))
                    time.sleep(0.3)
                    assert records.of(f"{tag}-{mode}") == []
                [seen] = records.wait_for(f"{tag}-{mode}", 1, log=worker.log_tail())
            assert seen["found"] == mode, mode
            assert seen["pid"] != worker.pid  # in the worker's own process
        assert "Outbox relay started" in worker.log()
    finally:
        worker.stop()
    assert "Outbox relay stopped" in worker.log()
