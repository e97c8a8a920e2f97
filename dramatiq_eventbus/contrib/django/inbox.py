"""The inbox on the Django ORM: a handler's writes take effect once per event, however often it is delivered.

::

    from dramatiq_eventbus.contrib.django.inbox import inbox_atomic

    class InvoiceHandler(Handler):
        def handle_event(self, event: OrderPlaced) -> None:
            with inbox_atomic():                     # transaction.atomic(), the inbox row first
                Invoice.objects.create(order_id=event.order_id)

The row ``(handler, event_id)`` of :class:`~.models.InboxEntry` is inserted with
``INSERT ... ON CONFLICT DO NOTHING`` in the block's transaction, on the handler's own Django
connection, before the block's first statement: the same table and claim as the SQLAlchemy
:class:`~dramatiq_eventbus.transactions.Inbox`. A duplicate delivery finds the row and ends
the run as a success (:class:`~dramatiq_eventbus.errors.AlreadyHandled`); two deliveries at
once: the second waits for the first's transaction on the primary key.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta

from django.db import DEFAULT_DB_ALIAS, connections, transaction

from ...errors import AlreadyHandled, ConfigurationError
from ...metadata import EventContext, current_context
from ...untrusted import shown
from .models import InboxEntry

logger = logging.getLogger("dramatiq_eventbus.transactions")

#: How long rows are kept by :func:`prune_inbox` when no age is given (the SQLAlchemy inbox's retention).
DEFAULT_RETENTION = timedelta(days=7)

# The handler run (its context object: each run has its own) whose row an inbox_atomic() block
# claimed: a later or nested block of the same run must not claim it again (it would find its own row).
_claimed: ContextVar[EventContext | None] = ContextVar("eventbus_django_inbox_claimed", default=None)


@contextmanager
def inbox_atomic(using: str | None = None) -> Iterator[None]:
    """``transaction.atomic(using)`` that first records, in that transaction, that the running handler
    handled its event; on a duplicate delivery, ends the run before the block's first statement.

    - First delivery: the row is inserted and commits with the block's writes; if the block
      raises, both roll back, and the retry runs as a first delivery.
    - A duplicate (the row exists): one INFO line, then :class:`~dramatiq_eventbus.errors.AlreadyHandled`
      is raised (a ``BaseException``: ``except Exception`` does not swallow it); the transaction
      rolls back, and the bus counts the run a success: the message is acknowledged.
    - Two deliveries at once: the second's insert waits for the first's transaction; if that
      committed, the second is a duplicate; if it rolled back, the second runs.

    Use one block per run for the handler's writes. A later block of the same run (after the
    first committed) is not checked again, nor is a block nested in one that claimed.

    Parameters:
      using(str | None): The database alias; the default database if None.

    Raises:
      AlreadyHandled: The event was handled by this handler already.
      ConfigurationError: Not inside a running handler (``current_context()`` is None).
    """
    context = current_context()
    if context is None:
        raise ConfigurationError(
            "inbox_atomic() records the event a handler is running for: use it inside handle_event() "
            "(dramatiq_eventbus.current_context() is None here); elsewhere use transaction.atomic()"
        )
    alias = using or DEFAULT_DB_ALIAS
    with transaction.atomic(using=alias):
        if _claimed.get() is context:
            yield
            return
        if not claim(context.handler, context.event_id, using=alias):
            logger.info(
                "Event %s was already handled by %s (its inbox row exists): a duplicate delivery, stopped "
                "before its first statement; nothing it did in the database is kept.",
                shown(context.event_id),
                shown(context.handler),
            )
            raise AlreadyHandled(context.handler, context.event_id)
        token = _claimed.set(context)
        try:
            yield
        except BaseException:
            _claimed.reset(token)  # rolled back with the row: a later block of the run claims it
            raise


def claim(handler: str, event_id: str, *, using: str | None = None) -> bool:
    """Insert the row of ``handler`` and ``event_id`` in the current transaction of ``using``;
    whether it was inserted (False: the row exists, the event was handled already).

    Waits for another transaction holding an uncommitted row of the same key to end (PostgreSQL).
    The statement is the SQLAlchemy inbox's: ``INSERT ... ON CONFLICT DO NOTHING RETURNING``
    (PostgreSQL, SQLite); on other databases, a plain insert in a savepoint.
    """
    connection = connections[using or DEFAULT_DB_ALIAS]
    meta = InboxEntry._meta
    table = connection.ops.quote_name(meta.db_table)
    columns = ", ".join(connection.ops.quote_name(meta.get_field(name).column) for name in ("handler", "event_id"))
    if connection.vendor in ("postgresql", "sqlite"):
        returned = connection.ops.quote_name(meta.get_field("handler").column)
        with connection.cursor() as cursor:
            # RETURNING rather than rowcount, which some drivers leave at -1 for an INSERT.
            cursor.execute(
                f"INSERT INTO {table} ({columns}) VALUES (%s, %s) ON CONFLICT DO NOTHING RETURNING {returned}",
                [handler, event_id],
            )
            return cursor.fetchone() is not None
    from django.db import IntegrityError

    try:
        with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
            cursor.execute(f"INSERT INTO {table} ({columns}) VALUES (%s, %s)", [handler, event_id])
    except IntegrityError:
        return False
    return True


def prune_inbox(*, older_than: timedelta = DEFAULT_RETENTION, using: str | None = None) -> int:
    """Delete the inbox rows older than ``older_than``; return how many (call it from a periodic task).

    A message redelivered after its row was pruned runs again: keep rows longer than a message can wait.
    """
    cutoff = datetime.now(UTC) - older_than
    deleted: int
    deleted, _ = InboxEntry.objects.using(using or DEFAULT_DB_ALIAS).filter(handled_at__lt=cutoff).delete()
    return deleted
