"""The inbox table: one row per (handler, event) whose transaction committed, so that a redelivery changes nothing.

Given to :func:`~.sqlalchemy.bind_session` (``inbox=Inbox()``), the binding writes the row
when a handler's transaction on a bound session begins, in that transaction; a second run
of the same handler for the same event finds it, and its writes are undone at commit.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import Column, DateTime, Index, MetaData, String, Table, delete, func, insert, inspect
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from ..errors import ConfigurationError
from .outbox import _IDENTIFIER, _connection

#: The table's name when none is given.
DEFAULT_TABLE = "eventbus_inbox"

#: How long a row is kept when no retention is given: longer than any redelivery of the
#: bus's (retries back off to minutes; a lane's sweep resends within one lease).
DEFAULT_RETENTION = timedelta(days=7)

#: How often, at most, one process prunes the table when no interval is given.
DEFAULT_PRUNE_INTERVAL = timedelta(hours=1)

#: The longest handler name and event id stored: a handler's import path, a UUIDv7 (36).
HANDLER_CHARACTERS = 255
EVENT_ID_CHARACTERS = 200


class Inbox:
    """The inbox table, and what claims and prunes its rows.

    Each row says that ``handler`` handled ``event_id`` in a transaction that committed;
    ``(handler, event_id)`` is the primary key. The binding inserts it with
    ``ON CONFLICT DO NOTHING`` (PostgreSQL, SQLite; elsewhere a plain insert in a
    savepoint whose key violation means the same): a second delivery of the event to the
    same handler inserts nothing, and is a duplicate. Two deliveries running at once both
    try the insert; the unique index makes the second wait for the first's transaction,
    then find its row (a duplicate) if it committed, or insert its own if it rolled back.

    Rows older than ``retention`` are deleted by :meth:`prune`, which the binding calls
    after a handler's commit at most once per ``prune_interval`` in each process: an event
    redelivered after that is handled again, so keep ``retention`` longer than the longest
    time a message can wait (retries, a broker outage).

    Parameters:
      table(str): The table's name, optionally ``"schema.table"``.
      schema(str | None): The schema, if not given in ``table``.
      metadata(MetaData | None): The MetaData to define the table in, e.g. your models'
        own, so that Alembic's autogenerate sees it. A private one if None.
      retention(timedelta): How long a row is kept.
      prune_interval(timedelta | None): How often, at most, the binding prunes (per process);
        None never prunes (call :meth:`prune` yourself, e.g. from a cron job).

    Raises:
      ConfigurationError: A name that is not a plain SQL identifier, or a retention or
        interval that is not positive.
    """

    def __init__(
        self,
        table: str = DEFAULT_TABLE,
        *,
        schema: str | None = None,
        metadata: MetaData | None = None,
        retention: timedelta = DEFAULT_RETENTION,
        prune_interval: timedelta | None = DEFAULT_PRUNE_INTERVAL,
    ) -> None:
        if "." in table:
            if schema is not None:
                raise ConfigurationError(f"the inbox table {table!r} names a schema, and schema={schema!r} another")
            schema, table = table.split(".", 1)
        for what, name in (("table", table), ("schema", schema)):
            if name is not None and not _IDENTIFIER.match(name):
                raise ConfigurationError(
                    f"the inbox {what} name must be a plain SQL identifier (letters, digits, _), not {name!r}"
                )
        if not isinstance(retention, timedelta) or retention <= timedelta(0):
            raise ConfigurationError(f"the inbox's retention must be a positive timedelta, not {retention!r}")
        if prune_interval is not None and (not isinstance(prune_interval, timedelta) or prune_interval <= timedelta(0)):
            raise ConfigurationError(
                f"the inbox's prune_interval must be a positive timedelta or None, not {prune_interval!r}"
            )
        self.name = table
        self.schema = schema
        self.retention = retention
        self.prune_interval = prune_interval
        self.table = Table(
            table,
            metadata or MetaData(),
            Column("handler", String(HANDLER_CHARACTERS), primary_key=True),
            Column("event_id", String(EVENT_ID_CHARACTERS), primary_key=True),
            Column("handled_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
            # prune()'s query.
            Index(f"ix_{table}_handled_at", "handled_at"),
            schema=schema,
        )
        # monotonic() of the last prune in this process; 0 prunes at the first commit.
        self._pruned_at = 0.0
        self._prune_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<Inbox {self.qualified_name}>"

    @property
    def qualified_name(self) -> str:
        return f"{self.schema}.{self.name}" if self.schema else self.name

    # -- the table's lifetime -----------------------------------------------------------------

    def create(self, bind: Engine | Connection) -> None:
        """Create the table and its index, unless the table exists.

        The migration helper: call it from an Alembic migration with ``op.get_bind()``, or
        at start-up with the engine.

        Parameters:
          bind(Engine | Connection): The database.

        Raises:
          sqlalchemy.exc.SQLAlchemyError: The database refused.
        """
        self.table.create(bind, checkfirst=True)

    def drop(self, bind: Engine | Connection) -> None:
        """Drop the table, if it exists."""
        self.table.drop(bind, checkfirst=True)

    def exists(self, bind: Engine | Connection) -> bool:
        return inspect(bind).has_table(self.name, schema=self.schema)

    # -- rows ----------------------------------------------------------------------------------

    def claim(self, connection: Connection, handler: str, event_id: str) -> bool:
        """Insert the row of ``handler`` and ``event_id`` in ``connection``'s transaction;
        whether it was inserted (False: the row exists, the event was handled already).

        While another transaction holds an uncommitted row of the same key, this waits for
        it to end (PostgreSQL's unique index), then returns False if it committed.

        Parameters:
          connection(Connection): In the transaction that the row commits with.
          handler(str): The handler's name.
          event_id(str): The event's id.

        Raises:
          sqlalchemy.exc.SQLAlchemyError: The database failed (e.g. the table does not exist).
        """
        values = {"handler": handler, "event_id": event_id}
        dialect = connection.dialect.name
        if dialect in ("postgresql", "sqlite"):
            module = postgresql if dialect == "postgresql" else sqlite
            # RETURNING rather than rowcount, which some drivers leave at -1 for an INSERT.
            statement = (
                module.insert(self.table).values(values).on_conflict_do_nothing().returning(self.table.c.handler)
            )
            return connection.execute(statement).first() is not None
        # No ON CONFLICT here: a savepoint keeps a key violation from aborting the handler's transaction.
        try:
            with connection.begin_nested():
                connection.execute(insert(self.table).values(values))
        except IntegrityError:
            return False
        return True

    def handled(self, bind: Engine | Connection, handler: str, event_id: str) -> bool:
        """Whether a committed row says ``handler`` handled ``event_id``."""
        query = self.table.select().where(self.table.c.handler == handler, self.table.c.event_id == event_id)
        with _connection(bind) as connection:
            return connection.execute(query).first() is not None

    def prune(self, bind: Engine | Connection, *, older_than: timedelta | None = None) -> int:
        """Delete the rows older than ``older_than`` (the retention if None); return how many.

        Parameters:
          bind(Engine | Connection): The database; a connection's own transaction takes the delete.
          older_than(timedelta | None): The age past which rows go.

        Raises:
          sqlalchemy.exc.SQLAlchemyError: The database failed.
        """
        cutoff = datetime.now(UTC) - (older_than if older_than is not None else self.retention)
        with _connection(bind) as connection:
            return connection.execute(delete(self.table).where(self.table.c.handled_at < cutoff)).rowcount

    def prune_due(self) -> bool:
        """Whether this process should prune now (and, if so, it counts as done): at most once per interval."""
        if self.prune_interval is None:
            return False
        now = time.monotonic()
        with self._prune_lock:
            if self._pruned_at and now - self._pruned_at < self.prune_interval.total_seconds():
                return False
            self._pruned_at = now
            return True

    def retry_prune(self) -> None:
        """Make the next :meth:`prune_due` true again (a prune failed)."""
        with self._prune_lock:
            self._pruned_at = 0.0
