"""Events and handlers of the inbox tests (their worker is ``tests.transactions.worker_with_inbox``).

Each handler inserts one row into the event's ``table`` in a bound session's transaction, and
records in Redis (see :func:`.handlers.record`) that it ran, after the commit.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from dramatiq_eventbus import Handler, current_context

from .handlers import RECORD_PREFIX_VAR, RECORD_URL_VAR, _redis, record

INBOX_TABLE_VAR = "TX_INBOX_TABLE"

#: Configured (bound to an engine, and the bus bound to it) where the worker starts.
SessionLocal: sessionmaker[Session] = sessionmaker()


@dataclass(frozen=True)
class Credited:
    """Insert one row into ``table``; ``hold`` seconds inside the transaction; ``block`` after the
    commit on the first run only (the test SIGKILLs the worker then)."""

    tag: str
    table: str
    account: str
    seq: int = 0
    hold: float = 0.0
    block: bool = False


@dataclass(frozen=True)
class KeyedCredit(Credited):
    def partition_key(self) -> str:
        return self.account


def _credit(event: Credited, handler: str) -> None:
    context = current_context()
    assert context is not None
    with SessionLocal.begin() as session:
        session.execute(
            text(f"INSERT INTO {event.table} (account, seq, event_id) VALUES (:account, :seq, :event_id)"),
            {"account": event.account, "seq": event.seq, "event_id": context.event_id},
        )
        if event.hold:
            time.sleep(event.hold)
    record(event.tag, handler=handler, account=event.account, seq=event.seq, event_id=context.event_id)
    if event.block:
        client = _redis(os.environ[RECORD_URL_VAR])
        if client.set(f"{os.environ[RECORD_PREFIX_VAR]}:{event.tag}:blocked", 1, nx=True):
            # Committed, not yet acknowledged: the test kills the worker during this sleep.
            time.sleep(120)


class Crediting(Handler):
    def handle_event(self, event: Credited) -> None:
        _credit(event, "Crediting")


class KeyedCrediting(Handler):
    actor_options = {"max_retries": 0}

    def handle_event(self, event: KeyedCredit) -> None:
        _credit(event, "KeyedCrediting")


HANDLERS = {Credited: [Crediting], KeyedCredit: [KeyedCrediting]}
