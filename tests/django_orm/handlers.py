"""Handlers of the Django tests: those of tests.transactions, and one that writes through ``inbox_atomic()``.

Imported by the outer test process too (to publish), where Django is not set up: the Django
imports are made inside ``handle_event``, which runs only in a Django process.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from dramatiq_eventbus import Handler, current_context
from tests.transactions.handlers import HANDLERS as TRANSACTION_HANDLERS
from tests.transactions.handlers import record


@dataclass(frozen=True)
class Credited:
    """Insert one row into ``table`` (``schema.table``) inside ``inbox_atomic()``; ``hold`` seconds in it;
    ``fail`` raises inside the block after the insert."""

    tag: str
    table: str
    account: str
    hold: float = 0.0
    fail: bool = False


#: Set once a run holds its inbox claim and wrote its row: the concurrent scenario starts its
#: second run then, not after a fixed delay a loaded machine may outlast.
CLAIMED = threading.Event()


def credit(event: Credited) -> None:
    from django.db import connection

    from dramatiq_eventbus.contrib.django.inbox import inbox_atomic

    context = current_context()
    assert context is not None
    with inbox_atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {event.table} (account, event_id) VALUES (%s, %s)", [event.account, context.event_id]
        )
        CLAIMED.set()
        if event.hold:
            time.sleep(event.hold)
        if event.fail:
            raise RuntimeError("failed after its insert")
    record(event.tag, handler="Crediting", account=event.account, event_id=context.event_id)


class Crediting(Handler):
    actor_options = {"max_retries": 0}

    def handle_event(self, event: Credited) -> None:
        credit(event)


HANDLERS = {**TRANSACTION_HANDLERS, Credited: [Crediting]}
