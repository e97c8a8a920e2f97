"""Events and handlers of the transaction tests, for in-process workers and the ``dramatiq`` subprocess.

Handlers record what they saw as JSON lines RPUSHed to the Redis list ``<TX_RECORD_PREFIX>:<tag>``
on ``TX_RECORD_URL``; ``ReadsAccount`` also looks its account up in PostgreSQL (``TX_DATABASE_URL``),
from its own connection, to show what a handler can see of the publisher's transaction.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from functools import cache
from typing import Any

import redis
from sqlalchemy import Engine, create_engine, text

from dramatiq_eventbus import Handler

RECORD_URL_VAR = "TX_RECORD_URL"
RECORD_PREFIX_VAR = "TX_RECORD_PREFIX"
DATABASE_URL_VAR = "TX_DATABASE_URL"

_lock = threading.Lock()


@cache
def _redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


@cache
def _engine(url: str) -> Engine:
    return create_engine(url, pool_size=2)


def record(tag: str, **fields: Any) -> None:
    with _lock:
        client = _redis(os.environ[RECORD_URL_VAR])
    client.rpush(f"{os.environ[RECORD_PREFIX_VAR]}:{tag}", json.dumps({"pid": os.getpid(), **fields}))


@dataclass(frozen=True)
class AccountOpened:
    """An account row was inserted into ``table`` in the publisher's transaction."""

    tag: str
    table: str
    account_id: int


class ReadsAccount(Handler):
    actor_options = {"max_retries": 0}

    def handle_event(self, event: AccountOpened) -> None:
        with _engine(os.environ[DATABASE_URL_VAR]).connect() as connection:
            found = connection.execute(
                text(f"SELECT name FROM {event.table} WHERE id = :id"), {"id": event.account_id}
            ).scalar()
        record(event.tag, handler="ReadsAccount", account_id=event.account_id, found=found)


@dataclass(frozen=True)
class Deposited:
    """A keyed event: per account, handled in publish order."""

    tag: str
    account: str
    seq: int

    def partition_key(self) -> str:
        return self.account


class Ledger(Handler):
    actor_options = {"max_retries": 0}

    def handle_event(self, event: Deposited) -> None:
        record(event.tag, account=event.account, seq=event.seq)


@dataclass(frozen=True)
class Noted:
    tag: str
    audience: str
    n: int = 0


class StaffOnly(Handler):
    def interested(self, event: Noted) -> bool:
        return event.audience == "staff"

    def handle_event(self, event: Noted) -> None:
        record(event.tag, handler="StaffOnly", n=event.n)


class Everyone(Handler):
    def handle_event(self, event: Noted) -> None:
        record(event.tag, handler="Everyone", n=event.n)


HANDLERS = {
    AccountOpened: [ReadsAccount],
    Deposited: [Ledger],
    Noted: [StaffOnly, Everyone],
}
