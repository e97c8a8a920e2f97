"""``python -m tests.django_orm.scenarios NAME JSON``: one Django scenario, in a process of its own.

Django is set up with :mod:`.settings` (the bus from the ``EVENTBUS_*`` variables, the outbox
installed by the app's ready()); the scenario prints one line ``RESULT <json>`` for the test.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.django_orm.settings")
django.setup()

from django.conf import settings  # noqa: E402
from django.db import connection, connections, transaction  # noqa: E402

import dramatiq_eventbus  # noqa: E402
from dramatiq_eventbus.contrib.django.inbox import inbox_atomic  # noqa: E402
from dramatiq_eventbus.contrib.django.models import OutboxMessage  # noqa: E402
from dramatiq_eventbus.contrib.django.outbox import relay_settings, sqlalchemy_url  # noqa: E402
from dramatiq_eventbus.errors import AlreadyHandled, ConfigurationError  # noqa: E402
from dramatiq_eventbus.metadata import running  # noqa: E402
from dramatiq_eventbus.transactions import OutboxRelay  # noqa: E402
from tests.transactions.handlers import Deposited, Noted  # noqa: E402
from tests.transactions.support import handler_context  # noqa: E402

from . import handlers  # noqa: E402
from .handlers import Credited, credit  # noqa: E402

bus = dramatiq_eventbus.default_bus


class Rollback(Exception):
    pass


def rows() -> list[dict[str, Any]]:
    """The outbox rows, in id order, with the event each message carries."""
    found = []
    for row in OutboxMessage.objects.order_by("id"):
        message = json.loads(bytes(row.message))
        found.append(
            {
                "id": row.id,
                "actor": row.actor_name,
                "key": row.partition_key,
                "event": message["args"][0],
                "sent": bool(row.sent_at),
            }
        )
    return found


def publish_keyed(tag: str, keys: list[str], per_key: int, per_transaction: int) -> dict[str, Any]:
    """Publish ``per_key`` Deposited events for each key, round robin, in transactions of ``per_transaction``;
    then try one relay pass (the broker is down: it must fail, leaving every row unsent)."""
    plan = [(key, seq) for seq in range(per_key) for key in keys]
    for start in range(0, len(plan), per_transaction):
        with transaction.atomic():
            for key, seq in plan[start : start + per_transaction]:
                bus.publish(Deposited(tag, key, seq))
    relay = OutboxRelay.from_settings(relay_settings(settings.EVENTBUS), bus=bus)
    try:
        relay.relay_once()
        error = None
    except Exception as exc:
        error = type(exc).__name__
    finally:
        relay.engine.dispose()
    return {"published": len(plan), "relay_error": error, "rows": rows(), "url": sqlalchemy_url()}


class Mailbox:
    """A test mailbox: what the bus hands it, as the ``event_bus`` fixture records."""

    def __init__(self) -> None:
        self.events: list[object] = []

    def published(self, events: Sequence[object], deliveries: Sequence[Any], metadata: Sequence[Any] = ()) -> None:
        self.events.extend(events)


def rollbacks(tag: str) -> dict[str, Any]:
    """Outside a transaction, in one that commits with a savepoint rolled back and one released, in one
    that rolls back; then the same with a test mailbox recording the bus (sent on commit, no rows)."""
    bus.publish(Noted(tag, "all", 0))  # no transaction: sent at once
    with transaction.atomic():
        bus.publish(Noted(tag, "all", 1))
        try:
            with transaction.atomic():
                bus.publish(Noted(tag, "all", 2))
                raise Rollback
        except Rollback:
            pass
        bus.publish(Noted(tag, "staff", 3))  # two handlers interested: two rows
        with transaction.atomic():
            bus.publish(Noted(tag, "all", 4))
    try:
        with transaction.atomic():
            bus.publish(Noted(tag, "all", 5))
            raise Rollback
    except Rollback:
        pass
    written = rows()

    mailbox = Mailbox()
    with bus.recording_to(mailbox):
        with transaction.atomic():
            bus.publish(Noted(tag, "all", 6))
            try:
                with transaction.atomic():
                    bus.publish(Noted(tag, "all", 7))
                    raise Rollback
            except Rollback:
                pass
            before_commit = len(mailbox.events)
        try:
            with transaction.atomic():
                bus.publish(Noted(tag, "all", 8))
                raise Rollback
        except Rollback:
            pass
    return {
        "rows": written,
        "rows_after_mailbox": len(rows()),
        "mailbox_before_commit": before_commit,
        "mailbox": [event.n for event in mailbox.events],  # type: ignore[attr-defined]
    }


def run(event: Credited, event_id: str, handler: str = "tests.django_orm.handlers.Crediting") -> str:
    """One run of the handler under a context of its own: handled, duplicate, or the error's name."""
    with running(handler_context(event_id, handler)):
        try:
            credit(event)
        except AlreadyHandled:
            return "duplicate"
        except Exception as exc:
            return type(exc).__name__
        finally:
            connection.close()
    return "handled"


def effects(table: str) -> list[list[str]]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT account, event_id FROM {table} ORDER BY id")
        return [list(row) for row in cursor.fetchall()]


def inbox_runs(tag: str, table: str) -> dict[str, Any]:
    """Runs in this process: a redelivery, a failed run and its retry, another handler, outside a handler."""
    outcomes = {
        "first": run(Credited(tag, table, "a"), "event-1"),
        "redelivered": run(Credited(tag, table, "a"), "event-1"),
        "failed": run(Credited(tag, table, "b", fail=True), "event-2"),
        "retried": run(Credited(tag, table, "b"), "event-2"),
        "other_handler": run(Credited(tag, table, "a"), "event-1", handler="tests.other.Handler"),
    }
    try:
        with inbox_atomic():
            pass
        outcomes["outside"] = "no error"
    except ConfigurationError as exc:
        outcomes["outside"] = str(exc)
    with connection.cursor() as cursor:
        cursor.execute("SELECT handler, event_id FROM eventbus_inbox ORDER BY handler, event_id")
        inbox = [list(row) for row in cursor.fetchall()]
    return {"outcomes": outcomes, "effects": effects(table), "inbox": inbox}


def inbox_concurrent(tag: str, table: str) -> dict[str, Any]:
    """Two runs of one handler for one event at once: the second's claim waits for the first's commit."""
    outcomes: dict[str, tuple[str, float]] = {}
    lock = threading.Lock()

    def one(delay: float) -> None:
        if delay:
            # The second run starts once the first holds its claim (then waits 0.3 s more).
            assert handlers.CLAIMED.wait(30), "the first run never claimed"
            time.sleep(delay)
        started = time.monotonic()
        outcome = run(Credited(tag, table, "a", hold=1.0), "event-c")
        with lock:
            outcomes[str(delay)] = (outcome, time.monotonic() - started)

    handlers.CLAIMED.clear()
    threads = [threading.Thread(target=one, args=(delay,)) for delay in (0.0, 0.3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    connections.close_all()
    return {"outcomes": outcomes, "effects": effects(table)}


def relay_configuration() -> dict[str, Any]:
    """The relay's settings derived from DATABASES and EVENTBUS, and what each wrong value says."""

    def error(eventbus: dict[str, Any]) -> str:
        try:
            relay_settings(eventbus)
        except ConfigurationError as exc:
            return str(exc)
        return "no error"

    derived = relay_settings({"OUTBOX_DATABASE": "files", "OUTBOX_PRUNE_AFTER_SECONDS": 0, "OUTBOX_BATCH_SIZE": 7})
    given = relay_settings({"OUTBOX_URL": "postgresql+psycopg://relay@db/shop"}, poll_seconds=2.5)
    return {
        "default": sqlalchemy_url(),
        "files": [derived.url, derived.table, derived.batch_size, derived.prune_after_seconds],
        "given": [given.url, given.poll_seconds],
        "memory": error({"OUTBOX_DATABASE": "memory"}),
        "unknown": error({"OUTBOX_DATABASE": "nowhere"}),
        "batch": error({"OUTBOX_BATCH_SIZE": "500"}),
        "poll": error({"OUTBOX_POLL_SECONDS": 0}),
    }


SCENARIOS: dict[str, Callable[..., dict[str, Any]]] = {
    "relay_configuration": relay_configuration,
    "publish_keyed": publish_keyed,
    "rollbacks": rollbacks,
    "inbox_runs": inbox_runs,
    "inbox_concurrent": inbox_concurrent,
}

if __name__ == "__main__":
    name, arguments = sys.argv[1], json.loads(sys.argv[2])
    result = SCENARIOS[name](**arguments)
    print("RESULT " + json.dumps(result), flush=True)
