"""The outbox table: one row per message that a committed transaction published, until a relay sends it."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    DDL,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    event,
    func,
    inspect,
    text,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session

from ..backends import MessageBackend
from ..delivery import Delivery
from ..errors import ConfigurationError

if TYPE_CHECKING:
    from ..bus import EventBus

#: The table's name when none is given.
DEFAULT_TABLE = "eventbus_outbox"

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class Outbox:
    """The outbox table, and what writes to it.

    Each row is one Dramatiq message, built and encoded at publish() time exactly as the
    ``"dramatiq"`` backend would have sent it. ``id`` orders the rows of one transaction
    in publish order; the relay sends committed rows in ``id`` order and sets ``sent_at``.
    A row the relay cannot send (it holds no Dramatiq message: written by something else,
    or damaged) is set aside instead: ``failed_at`` and ``failure`` (why) are set, and the
    row stays in the table, never pruned, until it is corrected (then set ``failed_at`` to
    NULL, and the relay sends it) or deleted.

    On PostgreSQL, :meth:`create` also installs a statement trigger that NOTIFYs the
    relays when rows are committed, so they wake at once instead of polling.

    Parameters:
      table(str): The table's name, optionally ``"schema.table"``.
      schema(str | None): The schema, if not given in ``table``.
      metadata(MetaData | None): The MetaData to define the table in, e.g. your models'
        own, so that Alembic's autogenerate sees it (the NOTIFY trigger comes only with
        :meth:`create`). A private one if None.

    Raises:
      ConfigurationError: A name that is not a plain SQL identifier.
    """

    def __init__(
        self, table: str = DEFAULT_TABLE, *, schema: str | None = None, metadata: MetaData | None = None
    ) -> None:
        if "." in table:
            if schema is not None:
                raise ConfigurationError(f"the outbox table {table!r} names a schema, and schema={schema!r} another")
            schema, table = table.split(".", 1)
        for what, name in (("table", table), ("schema", schema)):
            if name is not None and not _IDENTIFIER.match(name):
                raise ConfigurationError(
                    f"the outbox {what} name must be a plain SQL identifier (letters, digits, _), not {name!r}"
                )
        self.name = table
        self.schema = schema
        self.table = _define_table(metadata or MetaData(), table, schema)
        #: The LISTEN/NOTIFY channel of this table on PostgreSQL.
        self.channel = f"{schema}.{table}" if schema else table
        event.listen(self.table, "after_create", _notify_trigger(self).execute_if(dialect="postgresql"))

    def __repr__(self) -> str:
        return f"<Outbox {self.qualified_name}>"

    @property
    def qualified_name(self) -> str:
        return f"{self.schema}.{self.name}" if self.schema else self.name

    # -- the table's lifetime -----------------------------------------------------------------

    def create(self, bind: Engine | Connection) -> None:
        """Create the table, its indexes and, on PostgreSQL, its NOTIFY trigger, unless the table
        exists; add to an existing table the columns it lacks (:meth:`add_missing_columns`).

        The migration helper: call it from an Alembic migration with ``op.get_bind()``, or
        at start-up with the engine.
        """
        self.table.create(bind, checkfirst=True)
        self.add_missing_columns(bind)

    def missing_columns(self, bind: Engine | Connection) -> list[str]:
        """The columns of :attr:`table` that the table in the database lacks (made by an older
        version: ``failed_at`` and ``failure`` came with setting unsendable rows aside).

        Parameters:
          bind(Engine | Connection): The database holding the table.

        Raises:
          sqlalchemy.exc.SQLAlchemyError: The database failed, or the table does not exist.
        """
        present = {column["name"] for column in inspect(bind).get_columns(self.name, schema=self.schema)}
        return [column.name for column in self.table.columns if column.name not in present]

    def add_missing_columns(self, bind: Engine | Connection) -> list[str]:
        """Add the columns the table lacks, all nullable and without a default (instant on
        PostgreSQL); return their names.

        Parameters:
          bind(Engine | Connection): The database holding the table; a connection's own
            transaction, if any, takes the change.

        Raises:
          sqlalchemy.exc.SQLAlchemyError: The database refused (e.g. the user does not own the table).
        """
        missing = self.missing_columns(bind)
        if not missing:
            return []
        # Another relay starting at the same time may add them first: PostgreSQL and MariaDB say
        # IF NOT EXISTS; elsewhere a failed ALTER is checked against the columns found after it.
        if_not_exists = "IF NOT EXISTS " if bind.dialect.name in ("postgresql", "mariadb") else ""
        with _connection(bind) as connection:
            for name in missing:
                column = self.table.columns[name]
                kind = column.type.compile(dialect=connection.dialect)
                statement = f'ALTER TABLE {self._quoted_name()} ADD COLUMN {if_not_exists}"{name}" {kind}'
                try:
                    connection.exec_driver_sql(statement)
                except Exception:
                    if if_not_exists or name in self.missing_columns(connection):
                        raise
        return missing

    def drop(self, bind: Engine | Connection) -> None:
        """Drop the table (with its trigger), if it exists."""
        self.table.drop(bind, checkfirst=True)
        if bind.dialect.name == "postgresql":
            with _connection(bind) as connection:
                connection.exec_driver_sql(f"DROP FUNCTION IF EXISTS {self._notify_function()}()")

    def exists(self, bind: Engine | Connection) -> bool:
        return inspect(bind).has_table(self.name, schema=self.schema)

    def has_notify_trigger(self, bind: Engine | Connection) -> bool:
        """Whether the table has the NOTIFY trigger that :meth:`create` installs on PostgreSQL."""
        with _connection(bind) as connection:
            found = connection.execute(
                text("SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass(:table) AND tgname = :name"),
                {"table": self._quoted_name(), "name": f"{self.name}_notify"},
            ).first()
        return found is not None

    def notify_trigger_sql(self) -> str:
        """The PostgreSQL statements with which :meth:`create` installs the NOTIFY trigger, for a
        table made by another tool (the Django app's migration runs them)."""
        return str(_notify_trigger(self).statement)

    # -- writing -------------------------------------------------------------------------------

    def write(self, session: Session, bus: EventBus, deliveries: Sequence[Delivery]) -> None:
        """Insert one row per delivery through ``session``'s connection, in its current transaction.

        The messages are built by the bus's ``"dramatiq"`` backend, so a row holds exactly
        what a direct publish() would have sent.

        Raises:
          ConfigurationError: From :func:`message_backend`.
        """
        if not deliveries:
            return
        rows = outbox_rows(bus, deliveries)
        insert = self.table.insert()
        # connection(), not execute(): no autoflush, so a publish() from inside a flush works too.
        session.connection(bind_arguments={"clause": insert}).execute(insert, rows)

    def _notify_function(self) -> str:
        prefix = f'"{self.schema}".' if self.schema else ""
        return f'{prefix}"{self.name}_notify"'

    def _quoted_name(self) -> str:
        return f'"{self.schema}"."{self.name}"' if self.schema else f'"{self.name}"'


def outbox_rows(bus: EventBus, deliveries: Sequence[Delivery]) -> list[dict[str, Any]]:
    """The outbox rows of ``deliveries``, one per delivery in order, as column values: what
    :meth:`Outbox.write` inserts, and the Django outbox too (``id``, ``created_at`` and the
    relay's columns are left to the database).

    Raises:
      ConfigurationError: From :func:`message_backend`.
    """
    backend = message_backend(bus)
    rows: list[dict[str, Any]] = []
    for delivery in deliveries:
        message = backend.message_for(delivery)
        rows.append(
            {
                "queue_name": delivery.queue_name,
                "actor_name": delivery.handler.name,
                "event_type": message.options.get("event_type"),
                "partition_key": delivery.partition_key,
                "message": message.encode(),
            }
        )
    return rows


def message_backend(bus: EventBus) -> MessageBackend:
    """The bus's backend, as the seam through which the outbox stores messages and its relay sends them.

    Raises:
      ConfigurationError: The backend builds no Dramatiq messages (``"inline"``, or one of your own).
    """
    backend = bus.config.backend
    if not isinstance(backend, MessageBackend):
        raise ConfigurationError(
            "the outbox stores Dramatiq messages, and its relay sends through the 'dramatiq' backend; this bus's "
            f"backend is {backend!r}: configure the bus with backend='dramatiq' (the default)"
        )
    return backend


def _define_table(metadata: MetaData, name: str, schema: str | None) -> Table:
    return Table(
        name,
        metadata,
        # BIGINT everywhere but SQLite, whose auto-increment needs an INTEGER primary key.
        Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("queue_name", String(255), nullable=False),
        Column("actor_name", String(255), nullable=False),
        Column("event_type", String(255), nullable=True),
        Column("partition_key", Text(), nullable=True),
        Column("message", LargeBinary(), nullable=False),
        Column("sent_at", DateTime(timezone=True), nullable=True),
        # Set, with why, on a row the relay cannot send: it is set aside rather than stop every
        # row after it. Nullable without a default, so that an older table takes them at once.
        Column("failed_at", DateTime(timezone=True), nullable=True),
        Column("failure", Text(), nullable=True),
        # The relay's query: unsent rows in id order. Partial where the database allows, so
        # it stays as small as the backlog however many sent rows wait to be pruned.
        Index(
            f"ix_{name}_unsent", "id", postgresql_where=text("sent_at IS NULL"), sqlite_where=text("sent_at IS NULL")
        ),
        Index(f"ix_{name}_sent_at", "sent_at"),
        schema=schema,
    )


def _notify_trigger(outbox: Outbox) -> DDL:
    table = outbox._quoted_name()
    function = outbox._notify_function()
    channel = outbox.channel.replace("'", "''")
    # One NOTIFY per statement, delivered by PostgreSQL only if the transaction commits, and
    # folded into one per transaction: nothing reaches a relay for a rollback or a savepoint undone.
    return DDL(  # type: ignore[no-untyped-call]
        f"""
CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('{channel}', '');
  RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS "{outbox.name}_notify" ON {table};
CREATE TRIGGER "{outbox.name}_notify" AFTER INSERT ON {table} FOR EACH STATEMENT EXECUTE FUNCTION {function}();
"""
    )


@contextmanager
def _connection(bind: Engine | Connection) -> Iterator[Connection]:
    """A connection for ``bind``: the given one, or a transaction of the engine's."""
    if isinstance(bind, Connection):
        yield bind
        return
    with bind.begin() as connection:
        yield connection
