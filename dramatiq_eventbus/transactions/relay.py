"""The outbox relay's pass: moves committed outbox rows to the broker, in order, and marks them sent.

runner.py runs pass after pass; wakers.py waits between them.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from dramatiq.errors import DecodeError
from dramatiq.message import Message
from sqlalchemy import create_engine, delete, select, update
from sqlalchemy.engine import Connection, Engine

from ..errors import ConfigurationError
from ..untrusted import described
from .outbox import Outbox, message_backend
from .runner import HELD_BACK_PAUSE_SECONDS, RelayRunner

if TYPE_CHECKING:
    from ..bus import EventBus
    from .settings import RelaySettings

logger = logging.getLogger("dramatiq_eventbus.outbox")

DEFAULT_BATCH_SIZE = 500
DEFAULT_POLL_SECONDS = 1.0
#: Sent rows are kept this long (a day), for looking into, before the relay deletes them.
DEFAULT_PRUNE_AFTER_SECONDS = 86_400.0
DEFAULT_PRUNE_EVERY_SECONDS = 60.0
DEFAULT_MAX_BACKOFF_SECONDS = 5.0


@dataclass(frozen=True)
class Batch:
    """What one pass of the relay did.

    Parameters:
      sent(int): Rows sent and marked sent.
      held_back(int): Rows locked but left for later, because another relay held earlier
        unsent rows of the same lane (handler and partition key).
    """

    sent: int
    held_back: int


class OutboxRelay:
    """Moves committed outbox rows to the broker through the bus's message backend (``"dramatiq"``).

    Each pass takes up to ``batch_size`` unsent rows in ``id`` order, locking them with
    ``FOR UPDATE SKIP LOCKED`` (on PostgreSQL, MySQL, Oracle), sends their messages
    together (partitioned ones through their lanes, in that order), sets ``sent_at``, and
    commits. Several relays can therefore run at once without sending a row twice, and a
    relay that dies between sending and marking leaves its rows unsent and unlocked, to
    be sent again (at least once). A row is held back while another relay holds an earlier
    unsent row of its lane, so per-lane order survives several relays.

    Every send gives each message a new Dramatiq message id (the row's id travels in its
    ``outbox_id`` option), so that a message sent again after a crash is a new entry in
    its lane rather than a duplicate id. The handler then sees that event again, after the
    others the dead relay had sent; its first delivery was in order.

    It waits for a PostgreSQL NOTIFY from :meth:`Outbox.create`'s trigger (with psycopg 3),
    or ``poll_seconds``, whichever comes first, and deletes rows sent more than
    ``prune_after_seconds`` ago. A database without row locks (SQLite) takes one relay.

    Parameters:
      outbox(Outbox): The table.
      engine(Engine): The database holding it.
      bus(EventBus | None): The bus whose backend sends (the default bus if None),
        configured like the workers: same handlers, broker and Redis for lanes.
      batch_size(int): Rows per pass.
      poll_seconds(float): The longest wait between passes when nothing wakes the relay.
      prune_after_seconds(float | None): How long sent rows are kept; None keeps them.
      prune_every_seconds(float): How often the relay prunes.
      max_backoff_seconds(float): The longest wait before trying again after a failure
        (the broker or the database down); waits double from 0.1 s up to this.

    Raises:
      ConfigurationError: A number out of range.
    """

    def __init__(
        self,
        outbox: Outbox,
        engine: Engine,
        *,
        bus: EventBus | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
        prune_after_seconds: float | None = DEFAULT_PRUNE_AFTER_SECONDS,
        prune_every_seconds: float = DEFAULT_PRUNE_EVERY_SECONDS,
        max_backoff_seconds: float = DEFAULT_MAX_BACKOFF_SECONDS,
    ) -> None:
        if bus is None:
            from .. import default_bus

            bus = default_bus
        if not (isinstance(batch_size, int) and batch_size > 0):
            raise ConfigurationError(f"the relay's batch_size must be a positive integer, not {batch_size!r}")
        for name, value in (
            ("poll_seconds", poll_seconds),
            ("prune_every_seconds", prune_every_seconds),
            ("max_backoff_seconds", max_backoff_seconds),
            ("prune_after_seconds", 1 if prune_after_seconds is None else prune_after_seconds),
        ):
            if not (isinstance(value, int | float) and value > 0):
                raise ConfigurationError(f"the relay's {name} must be a positive number of seconds, not {value!r}")
        self.outbox = outbox
        self.engine = engine
        self.bus = bus
        self.batch_size = batch_size
        self.poll_seconds = float(poll_seconds)
        self.prune_after_seconds = prune_after_seconds
        self.prune_every_seconds = float(prune_every_seconds)
        self.max_backoff_seconds = float(max_backoff_seconds)
        self._runner = RelayRunner(self)

    def __repr__(self) -> str:
        return f"<OutboxRelay {self.outbox.qualified_name} on {self.engine.url.render_as_string(hide_password=True)}>"

    def relay_once(self) -> Batch:
        """Send one batch of committed, unsent rows and mark them sent, in one database transaction.

        Raises:
          PublishError: The broker failed; nothing of the batch is marked sent.
          sqlalchemy.exc.SQLAlchemyError: The database failed.
        """
        backend = message_backend(self.bus)
        table = self.outbox.table
        with self._transaction() as connection:
            rows = connection.execute(
                select(table.c.id, table.c.actor_name, table.c.partition_key, table.c.message)
                .where(table.c.sent_at.is_(None))
                .order_by(table.c.id)
                .limit(self.batch_size)
                .with_for_update(skip_locked=True)
            ).all()
            if not rows:
                return Batch(0, 0)
            held = self._lanes_held_elsewhere(connection, rows)
            to_send = [
                row for row in rows if row.partition_key is None or (row.actor_name, row.partition_key) not in held
            ]
            if to_send:
                backend.send_again([_stored(row) for row in to_send], [{"outbox_id": row.id} for row in to_send])
                self._mark_sent(connection, [row.id for row in to_send])
        return Batch(len(to_send), len(rows) - len(to_send))

    def relay_pending(self) -> int:
        """Relay until no committed row is left unsent; return how many were sent."""
        total = 0
        while True:
            batch = self.relay_once()
            total += batch.sent
            if batch.sent == 0 and batch.held_back == 0:
                return total
            if batch.sent == 0:
                time.sleep(HELD_BACK_PAUSE_SECONDS)

    def prune(self) -> int:
        """Delete rows sent more than ``prune_after_seconds`` ago; return how many."""
        if self.prune_after_seconds is None:
            return 0
        cutoff = _now() - timedelta(seconds=self.prune_after_seconds)
        table = self.outbox.table
        with self.engine.begin() as connection:
            result = connection.execute(delete(table).where(table.c.sent_at < cutoff))
        pruned = result.rowcount
        if pruned:
            logger.info("Pruned %d outbox row(s) sent before %s.", pruned, cutoff.isoformat(timespec="seconds"))
        return pruned

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Connection]:
        with self.engine.connect() as connection:
            if connection.dialect.name in ("postgresql", "mysql", "mariadb"):
                # Each statement sees the latest commits: under a stricter level, locking a row that
                # another relay has just marked sent would be a serialization failure, not a skip.
                connection = connection.execution_options(isolation_level="READ COMMITTED")
            with connection.begin():
                yield connection

    def _lanes_held_elsewhere(self, connection: Connection, rows: Sequence[Any]) -> set[tuple[str, str]]:
        """The lanes with an earlier unsent row that this pass did not get: another relay has it locked."""
        if all(row.partition_key is None for row in rows):
            return set()
        table = self.outbox.table
        ours = [row.id for row in rows]
        found = connection.execute(
            select(table.c.actor_name, table.c.partition_key)
            .distinct()
            .where(
                table.c.sent_at.is_(None),
                table.c.partition_key.is_not(None),
                table.c.id < max(ours),
                table.c.id.not_in(ours),
            )
        ).all()
        return {(actor, key) for actor, key in found}

    def _mark_sent(self, connection: Connection, ids: Sequence[int]) -> None:
        table = self.outbox.table
        connection.execute(update(table).where(table.c.id.in_(ids)).values(sent_at=_now()))

    def check(self) -> None:
        """Fail early on a missing table or a bus that cannot send; warn when PostgreSQL has no NOTIFY trigger.

        Raises:
          ConfigurationError: Naming what is missing.
        """
        message_backend(self.bus)
        if not self.outbox.exists(self.engine):
            raise ConfigurationError(
                f"the outbox table {self.outbox.qualified_name!r} does not exist in "
                f"{self.engine.url.render_as_string(hide_password=True)}: create it with Outbox(...).create(engine)"
            )
        if self.engine.dialect.name == "postgresql" and not self.outbox.has_notify_trigger(self.engine):
            logger.warning(
                "The outbox table %s has no NOTIFY trigger: the relay polls every %.1f s. "
                "Outbox(...).create(engine) installs it.",
                self.outbox.qualified_name,
                self.poll_seconds,
            )

    # -- running: see runner.py ----------------------------------------------------------------

    def run(self, stop: threading.Event | None = None) -> None:
        """Relay until ``stop`` (or :meth:`stop`) is set: pass after pass, waiting between them.

        Failures are logged and retried after a growing wait: rows stay in the outbox until
        the broker takes them.

        Raises:
          ConfigurationError: From :meth:`check`, before anything starts.
        """
        self._runner.run(stop)

    def start(self) -> threading.Thread:
        """Run the relay in a daemon thread; :meth:`stop` ends it.

        Raises:
          ConfigurationError: From :meth:`check`, in the caller.
        """
        return self._runner.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the relay to stop, and wait up to ``timeout`` seconds for its thread."""
        self._runner.stop(timeout)

    @classmethod
    def from_settings(cls, settings: RelaySettings, *, bus: EventBus | None = None) -> OutboxRelay:
        """A relay on a new engine for ``settings.url``."""
        return cls(
            Outbox(settings.table),
            create_engine(settings.url, pool_pre_ping=True),
            bus=bus,
            batch_size=settings.batch_size,
            poll_seconds=settings.poll_seconds,
            prune_after_seconds=settings.prune_after_seconds,
        )


def _stored(row: Any) -> Message[Any]:
    """The message an outbox row holds.

    Raises:
      ValueError: The row holds no Dramatiq message (written by something else than the bus,
        or damaged). Its text says which row, bounded, and it chains nothing: Dramatiq's
        DecodeError quotes the whole row, and the relay logs the traceback of a failed pass.
    """
    try:
        return Message.decode(row.message)
    except DecodeError as exc:
        cause = exc.error if isinstance(exc.error, BaseException) else exc
        raise ValueError(
            f"outbox row {row.id} holds no Dramatiq message ({described(cause, 200)}): the relay sends no row "
            f"after it until it is corrected or deleted"
        ) from None


def _now() -> datetime:
    return datetime.now(timezone.utc)
