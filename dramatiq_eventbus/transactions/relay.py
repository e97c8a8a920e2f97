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

from dramatiq.encoder import JSONEncoder
from dramatiq.message import Message, get_encoder
from sqlalchemy import case, create_engine, delete, func, null, select, update
from sqlalchemy.engine import Connection, Engine

from ..backends import MessageBackend
from ..brokers.limits import DEFAULT_MAX_MESSAGE_BYTES, size_problem
from ..errors import ConfigurationError, PublishError
from ..untrusted import REASON_CHARACTERS, described, escaped, shown
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
      set_aside(int): Rows that hold no message the bus can send, marked failed instead.
    """

    sent: int
    held_back: int
    set_aside: int = 0


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

    A row that holds no message the bus can send (not a Dramatiq message, fields of the wrong
    type, larger than the broker's ``max_message_bytes``, or refused by the backend on its
    own) is set aside, in the pass that meets it: ``failed_at`` and ``failure`` are set, with
    one ERROR line naming the row, and the rows after it are sent. This holds for a row with
    a partition key too: the rows of its key after it are sent, in order, as a lane moves on
    past a dead-lettered event, rather than wait for good behind a row that may never be
    corrected (and that anyone able to write to the table could put there). Its key's
    handler therefore never sees that event, unless it is corrected and sent again, out of
    order. A table made before rows could be set aside gets the two columns when the relay
    starts (:meth:`check`), or on its first pass; where its database user may not add them,
    the relay says so, and each pass that meets such a row fails after sending the others.

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
        # Whether the table has failed_at and failure (None: not looked yet); see _has_failure_columns().
        self._has_columns: bool | None = None

    def __repr__(self) -> str:
        return f"<OutboxRelay {self.outbox.qualified_name} on {self.engine.url.render_as_string(hide_password=True)}>"

    def relay_once(self) -> Batch:
        """Send one batch of committed, unsent rows and mark them sent, in one database transaction;
        set aside the rows of the batch that hold no message the bus can send.

        Raises:
          PublishError: The broker failed; nothing of the batch is marked sent or set aside.
          ValueError: A row holds no message the bus can send, and the table lacks the columns to
            set it aside (see :meth:`_has_failure_columns`); the batch's other rows were sent.
          sqlalchemy.exc.SQLAlchemyError: The database failed.
        """
        backend = message_backend(self.bus)
        can_set_aside = self._has_failure_columns()
        table = self.outbox.table
        max_bytes = self._max_message_bytes()
        queues = (self.bus.config.queues.default, self.bus.config.queues.partitioned)
        size = func.length(table.c.message)
        set_aside: list[tuple[Any, str]] = []
        with self._transaction() as connection:
            rows = connection.execute(
                # A row's message is read only when it may be sent: a forged row may be of any size.
                select(
                    table.c.id,
                    table.c.actor_name,
                    table.c.partition_key,
                    size.label("size"),
                    case((size <= max_bytes, table.c.message), else_=null()).label("message"),
                )
                .where(table.c.sent_at.is_(None), *_not_set_aside(table, can_set_aside))
                .order_by(table.c.id)
                .limit(self.batch_size)
                .with_for_update(skip_locked=True)
            ).all()
            if not rows:
                return Batch(0, 0)
            held = self._lanes_held_elsewhere(connection, rows, can_set_aside)
            to_send: list[tuple[Any, Message[Any]]] = []
            for row in rows:
                if row.partition_key is not None and (row.actor_name, row.partition_key) in held:
                    continue
                stored = _stored(row, max_bytes, queues)
                if isinstance(stored, str):
                    set_aside.append((row, stored))
                else:
                    to_send.append((row, stored))
            sent, refused = _send(backend, to_send)
            # Each reason is built of escaped parts; cut the whole once more, for the column and the line.
            set_aside = [(row, escaped(reason, REASON_CHARACTERS)) for row, reason in [*set_aside, *refused]]
            unsendable: tuple[Any, str] | None = None
            if set_aside and not can_set_aside:
                # They stay unsent; the rows sent are committed before the pass fails, or they would go twice.
                unsendable, set_aside = min(set_aside, key=lambda pair: int(pair[0].id)), []
            if sent:
                self._mark_sent(connection, sent)
            if set_aside:
                self._set_aside(connection, set_aside)
        if unsendable is not None:
            self._cannot_set_aside(*unsendable)
        # Said once committed: a pass that fails later sets nothing aside, and the next says it again.
        for row, reason in sorted(set_aside, key=lambda pair: int(pair[0].id)):
            logger.error(
                "Set aside outbox row %d of %s for %s (partition key %s): %s. The relay goes on with the rows "
                "after it; this one stays in the table with failed_at set: correct its message and set failed_at "
                "to NULL to send it, or delete it.",
                row.id,
                self.outbox.qualified_name,
                shown(row.actor_name),
                shown(row.partition_key),
                reason,
            )
        held_back = len(rows) - len(sent) - len(set_aside)
        return Batch(len(sent), held_back, len(set_aside))

    def relay_pending(self) -> int:
        """Relay until no committed row is left unsent; return how many were sent."""
        total = 0
        while True:
            batch = self.relay_once()
            total += batch.sent
            if batch.sent == 0 and batch.held_back == 0 and batch.set_aside == 0:
                return total
            if batch.sent == 0 and batch.set_aside == 0:
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

    def _lanes_held_elsewhere(
        self, connection: Connection, rows: Sequence[Any], can_set_aside: bool
    ) -> set[tuple[str, str]]:
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
                *_not_set_aside(table, can_set_aside),
                table.c.partition_key.is_not(None),
                table.c.id < max(ours),
                table.c.id.not_in(ours),
            )
        ).all()
        return {(actor, key) for actor, key in found}

    def _mark_sent(self, connection: Connection, ids: Sequence[int]) -> None:
        table = self.outbox.table
        connection.execute(update(table).where(table.c.id.in_(ids)).values(sent_at=_now()))

    def _set_aside(self, connection: Connection, rows: Sequence[tuple[Any, str]]) -> None:
        table = self.outbox.table
        now = _now()
        for row, reason in rows:
            connection.execute(update(table).where(table.c.id == row.id).values(failed_at=now, failure=reason))

    def _max_message_bytes(self) -> int:
        """The largest message a worker reads: the bus's brokers carry it; 1 MiB for another broker."""
        limit = getattr(self.bus.broker, "max_message_bytes", None)
        return limit if isinstance(limit, int) and not isinstance(limit, bool) else DEFAULT_MAX_MESSAGE_BYTES

    def _has_failure_columns(self) -> bool:
        """Whether the table has ``failed_at`` and ``failure``, adding them, on the first call, to a
        table made by a version of the bus without them.

        When they cannot be added (the relay's database user does not own the table), the relay
        still sends every row it can, but a row it cannot send stays unsent, and each pass that
        meets it fails after sending the others (see :meth:`_cannot_set_aside`): failing the
        worker's boot, or the relay, over a migration would stop far more than it saves. The
        columns are looked for again each time such a row is met.
        """
        if self._has_columns is not None:
            return self._has_columns
        try:
            added = self.outbox.add_missing_columns(self.engine)
        except Exception as exc:
            self._has_columns = False
            logger.error(
                "The outbox table %s lacks the column(s) %s, and adding them failed (%s): until they are added, "
                "a row the relay cannot send stays unsent instead of set aside, and each pass that meets it fails "
                "after sending the others. Run Outbox(%r).create(engine) "
                "as the table's owner, or add them in a migration (failed_at: a timestamp with time zone, failure: "
                "text; both nullable).",
                self.outbox.qualified_name,
                ", ".join(self.outbox.missing_columns(self.engine)),
                described(exc),
                self.outbox.qualified_name,
            )
            return False
        if added:
            logger.warning(
                "Added the column(s) %s to the outbox table %s: the relay sets aside there the rows it cannot send.",
                ", ".join(added),
                self.outbox.qualified_name,
            )
        self._has_columns = True
        return True

    def _cannot_set_aside(self, row: Any, reason: str) -> None:
        """Fail a pass that met ``row``, which the table has no columns to set aside (the others are
        sent): the runner says so and backs off, and the row is met again. Look for the columns first.

        Raises:
          ValueError: Always.
        """
        if not self.outbox.missing_columns(self.engine):
            self._has_columns = True  # added meanwhile: the next pass sets the row aside
        raise ValueError(
            f"outbox row {row.id} holds no message the bus can send ({reason}), and the table lacks the columns "
            f"failed_at and failure to set it aside: it stays unsent, and each pass that meets it fails, until "
            f"they are added (see Outbox.create) or the row is corrected or deleted"
        )

    def check(self) -> None:
        """Fail early on a missing table or a bus that cannot send; warn when PostgreSQL has no NOTIFY
        trigger, and when rows wait set aside; add the columns to set rows aside to an older table.

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
        if not self._has_failure_columns():
            return
        table = self.outbox.table
        with self.engine.connect() as connection:
            failed = connection.execute(select(func.count()).where(table.c.failed_at.is_not(None))).scalar_one()
        if failed:
            logger.warning(
                "The outbox table %s holds %d row(s) set aside, which the relay could not send: see their "
                "columns failed_at and failure.",
                self.outbox.qualified_name,
                failed,
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


#: The envelope fields of a Dramatiq message, and the JSON types each must have.
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "queue_name": (str,),
    "actor_name": (str,),
    "args": (list,),
    "kwargs": (dict,),
    "options": (dict,),
    "message_id": (str,),
    "message_timestamp": (int,),
}


def _stored(row: Any, max_bytes: int, queues: tuple[str, str]) -> Message[Any] | str:
    """The message an outbox row holds, or why it holds none the bus can send (escaped and cut).

    The row may have been written by something else than the bus, or damaged: a message
    larger than a worker reads (``max_bytes``), bytes the global encoder cannot decode,
    an envelope that lacks a field, or has one of the wrong type or one Dramatiq does not
    know, or a message for a queue that is neither of the bus's ``queues``: no worker of the
    bus would read it there, and RabbitMQ refuses some names (``amq.*``), failing every pass.
    Dramatiq's own ``Message.decode()`` checks no type, and quotes the whole row in its error.
    """
    body = row.message
    if body is None:  # not read: see relay_once()
        return f"its message is {row.size:,} bytes, more than max_message_bytes ({max_bytes:,})"
    encoder = get_encoder()
    problem = size_problem(body, max_bytes, json=isinstance(encoder, JSONEncoder))
    if problem is not None:
        return f"its message: {problem}"
    try:
        fields = encoder.decode(body)
    except Exception as exc:  # an encoder may raise anything
        # Dramatiq's DecodeError carries the real error as its last argument; its text quotes the whole body.
        inner = exc.args[-1] if exc.args and isinstance(exc.args[-1], BaseException) else exc
        return f"its message cannot be decoded ({described(inner, 200)}); it starts {shown(body[:60])}"
    if not isinstance(fields, dict):
        return f"its message is a {type(fields).__name__}, not a Dramatiq message; it starts {shown(body[:60])}"
    missing = [name for name in _FIELD_TYPES if name not in fields]
    unknown = sorted(name for name in fields if name not in _FIELD_TYPES)
    if missing or unknown:
        told = (["lacks " + ", ".join(missing)] if missing else []) + (
            ["has unknown field(s) " + ", ".join(shown(name) for name in unknown[:4])] if unknown else []
        )
        return f"its message {' and '.join(told)}; it starts {shown(body[:60])}"
    for name, types in _FIELD_TYPES.items():
        value = fields[name]
        if not isinstance(value, types) or isinstance(value, bool):
            return f"its message's {name} is a {type(value).__name__}, not a {' or a '.join(t.__name__ for t in types)}"
    if fields["queue_name"] not in queues:
        return (
            f"its message is for queue {shown(fields['queue_name'])}, which is neither of this bus's queues "
            f"({queues[0]!r} and {queues[1]!r}): is the relay configured like the publishers?"
        )
    return Message(**{**fields, "args": tuple(fields["args"])})


def _not_set_aside(table: Any, can_set_aside: bool) -> list[Any]:
    """The condition that leaves out rows set aside, where the table can hold them."""
    return [table.c.failed_at.is_(None)] if can_set_aside else []


def _send(backend: MessageBackend, rows: Sequence[tuple[Any, Message[Any]]]) -> tuple[list[int], list[tuple[Any, str]]]:
    """Send the messages of ``rows`` in order; return the ids of the rows sent, and the rows the
    backend refused, with why.

    A broker failure (PublishError) fails the pass, whose rows then stay unsent. Any other
    error is the backend refusing a message that passed :func:`_stored` (too large once signed,
    a value it cannot sign): the rows are then sent one by one, in order, to find which, and
    the others go. A batch that failed half-way may have put some messages in their lanes
    already: sent again, those arrive twice (at least once, as after a relay crash).

    Raises:
      PublishError: The broker failed.
    """
    if not rows:
        return [], []
    try:
        backend.send_again([message for _, message in rows], [{"outbox_id": row.id} for row, _ in rows])
        return [row.id for row, _ in rows], []
    except PublishError:
        raise
    except Exception:
        pass
    sent: list[int] = []
    refused: list[tuple[Any, str]] = []
    for row, message in rows:
        try:
            backend.send_again([message], [{"outbox_id": row.id}])
        except PublishError:
            raise
        except Exception as exc:
            refused.append((row, f"the bus cannot send its message ({described(exc, 300)})"))
        else:
            sent.append(row.id)
    return sent, refused


def _now() -> datetime:
    return datetime.now(timezone.utc)
