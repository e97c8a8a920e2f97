"""The transactional outbox on the Django ORM, relayed by the SQLAlchemy ``OutboxRelay``.

With ``EVENTBUS = {..., "OUTBOX": True}``, the app's ready() calls :func:`install_outbox`: a
publish() made while the thread's Django connection is in an atomic block writes one
:class:`~.models.OutboxMessage` row per delivery, in that transaction (rows written in a
savepoint that rolls back go with it). The rows are built as the SQLAlchemy outbox builds them
(:func:`~dramatiq_eventbus.transactions.outbox.outbox_rows`), into a table of the same schema,
so the same relay sends them, pointed at the same database: ``manage.py eventbus_outbox_relay``,
or a thread in each worker process (:func:`install_relay_in_workers`). Outside a transaction,
publish() sends at once. Needs SQLAlchemy (``pip install 'dramatiq-eventbus[django,sqlalchemy]'``).

Settings (keys of the ``EVENTBUS`` dict):

=============================== ================= =====================================================
``OUTBOX``                      ``False``         write rows instead of sending, inside transactions
``OUTBOX_DATABASE``             ``DATABASE``      the database alias whose transactions write rows
``OUTBOX_URL``                  derived           the relay's SQLAlchemy URL; derived from the alias
``OUTBOX_BATCH_SIZE``           ``500``           rows sent per pass
``OUTBOX_POLL_SECONDS``         ``1``             longest wait between passes without a NOTIFY
``OUTBOX_PRUNE_AFTER_SECONDS``  ``86400``         age at which sent rows are deleted; ``0`` keeps them
``OUTBOX_RELAY_IN_WORKERS``     ``False``         run a relay thread in each worker process
=============================== ================= =====================================================
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from django.db import DEFAULT_DB_ALIAS, connections
from dramatiq.brokers.stub import StubBroker

from ...delivery import Delivery
from ...errors import ConfigurationError
from ...metadata import EventMetadata
from ...middleware.outbox_relay import OutboxRelayMiddleware
from ...transactions.outbox import message_backend, outbox_rows
from ...transactions.relay import DEFAULT_BATCH_SIZE, DEFAULT_POLL_SECONDS, DEFAULT_PRUNE_AFTER_SECONDS
from ...transactions.settings import RelaySettings
from .models import OUTBOX_TABLE, OutboxMessage
from .on_commit import OnCommitBinding

if TYPE_CHECKING:
    from ...bus import EventBus

#: The ``EVENTBUS`` keys of the outbox, for the app's settings check.
SETTINGS = (
    "OUTBOX",
    "OUTBOX_DATABASE",
    "OUTBOX_URL",
    "OUTBOX_BATCH_SIZE",
    "OUTBOX_POLL_SECONDS",
    "OUTBOX_PRUNE_AFTER_SECONDS",
    "OUTBOX_RELAY_IN_WORKERS",
)

#: Django's PostgreSQL OPTIONS that are Django's own, not libpq connection parameters.
_DJANGO_ONLY_OPTIONS = frozenset({"isolation_level", "server_side_binding", "assume_role", "pool", "cursor_factory"})


class DjangoOutbox:
    """The interceptor :func:`install_outbox` adds to a bus: rows in the open Django transaction.

    While a test mailbox records the bus, or its broker is a StubBroker (no relay could reach
    it), or its backend builds no Dramatiq messages, it steps aside: a publish() then goes to
    the next interceptor, the app's on-commit binding (``ON_COMMIT``, on by default: sent at
    commit, dropped on rollback), or without it is sent at once.

    Parameters:
      bus(EventBus): The bus whose publish() calls are written as rows.
      using(str): The database alias.
    """

    def __init__(self, bus: EventBus, using: str = DEFAULT_DB_ALIAS) -> None:
        self.bus = bus
        self.using = using
        # Never bound: asked only which atomic block of this thread's connection is open.
        self._blocks = OnCommitBinding(bus, using=using)

    def __repr__(self) -> str:
        return f"<DjangoOutbox {OUTBOX_TABLE} on {self.using!r}>"

    def find(self) -> _OutboxBlock | None:
        """The bus's interceptor: a recorder while this thread's connection is in an atomic block."""
        if not self.writes_rows():
            return None
        block = self._blocks.find()
        return None if block is None else _OutboxBlock(self, block)

    def writes_rows(self) -> bool:
        """Whether a publish() in a transaction writes rows now (else the outbox steps aside)."""
        if self.bus.is_recording or isinstance(self.bus.config.broker, StubBroker):
            return False
        try:
            message_backend(self.bus)
        except ConfigurationError:
            return False
        return True

    def write(self, deliveries: Sequence[Delivery]) -> None:
        """Insert one row per delivery on this thread's connection, in its transaction, in order."""
        if deliveries:
            rows = [OutboxMessage(**row) for row in outbox_rows(self.bus, deliveries)]
            OutboxMessage.objects.using(self.using).bulk_create(rows)


class _OutboxBlock:
    """What the bus hands one publish() to while an atomic block is open; equal for the same block,
    so that a ``deferred()`` block opened inside it stays the innermost there."""

    __slots__ = ("block", "outbox")

    def __init__(self, outbox: DjangoOutbox, block: object) -> None:
        self.outbox = outbox
        self.block = block

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _OutboxBlock) and other.outbox is self.outbox and other.block == self.block

    def __hash__(self) -> int:
        return hash((id(self.outbox), self.block))

    def published(
        self, events: Sequence[object], deliveries: Sequence[Delivery], metadata: Sequence[EventMetadata] = ()
    ) -> None:
        self.outbox.write(deliveries)  # the rows hold the messages, metadata included


# The outbox installed on each bus, so that installing again (a second ready(), a test) replaces it.
_installed: weakref.WeakKeyDictionary[EventBus, DjangoOutbox] = weakref.WeakKeyDictionary()
_installed_lock = threading.Lock()


def install_outbox(bus: EventBus, settings: Mapping[str, Any]) -> None:
    """Write ``bus``'s publish() calls made inside Django transactions as outbox rows; see :class:`DjangoOutbox`.

    The app's ready() calls it when ``EVENTBUS["OUTBOX"]`` is true, after any on-commit
    interceptor of its own (the latest interceptor added is asked first). Installing again
    replaces the outbox installed before.

    Parameters:
      bus(EventBus): The bus, configured.
      settings(Mapping[str, Any]): The ``EVENTBUS`` dict; ``OUTBOX_DATABASE`` is read here.

    Raises:
      ConfigurationError: ``OUTBOX_DATABASE`` names no database of ``DATABASES``.
    """
    using = _database(settings)
    outbox = DjangoOutbox(bus, using)
    with _installed_lock:
        previous = _installed.pop(bus, None)
        if previous is not None:
            bus.remove_interceptor(previous.find)
        bus.add_interceptor(outbox.find)
        _installed[bus] = outbox


def uninstall_outbox(bus: EventBus) -> None:
    """Stop writing ``bus``'s publish() calls as rows (none installed: nothing happens)."""
    with _installed_lock:
        previous = _installed.pop(bus, None)
        if previous is not None:
            bus.remove_interceptor(previous.find)


def sqlalchemy_url(using: str = DEFAULT_DB_ALIAS) -> str:
    """The SQLAlchemy URL of the Django database ``using``, for the relay (password included).

    PostgreSQL becomes ``postgresql+psycopg://`` (``+psycopg2`` where Django uses psycopg2), its
    libpq ``OPTIONS`` (``sslmode``, ``options``, ``service``...) query parameters; SQLite a
    ``sqlite:///`` path.

    Raises:
      ConfigurationError: Another database (set ``EVENTBUS["OUTBOX_URL"]``), or an in-memory SQLite.
    """
    from sqlalchemy.engine import URL

    if using not in connections.settings:
        raise ConfigurationError(f"the outbox's database {using!r} is not in DATABASES")
    connection = connections[using]
    database = connection.settings_dict
    if connection.vendor == "postgresql":
        from django.db.backends.postgresql.psycopg_any import is_psycopg3

        options = database.get("OPTIONS") or {}
        query = {
            key: str(value)
            for key, value in options.items()
            if key not in _DJANGO_ONLY_OPTIONS and isinstance(value, str | int) and not isinstance(value, bool)
        }
        return URL.create(
            "postgresql+psycopg" if is_psycopg3 else "postgresql+psycopg2",
            username=database.get("USER") or None,
            password=database.get("PASSWORD") or None,
            host=database.get("HOST") or None,
            port=int(database["PORT"]) if database.get("PORT") else None,
            database=database.get("NAME") or None,
            query=query,
        ).render_as_string(hide_password=False)
    if connection.vendor == "sqlite":
        name = str(database.get("NAME") or "")
        if not name or name == ":memory:" or name.startswith("file::memory:"):
            raise ConfigurationError(
                f"the outbox's database {using!r} is an in-memory SQLite, which no relay can open: use a file"
            )
        return URL.create("sqlite", database=name).render_as_string(hide_password=False)
    raise ConfigurationError(
        f"the outbox's database {using!r} is {connection.vendor}: set EVENTBUS['OUTBOX_URL'] to its SQLAlchemy URL"
    )


def relay_settings(settings: Mapping[str, Any], **overrides: Any) -> RelaySettings:
    """The relay's settings from the ``EVENTBUS`` dict; keyword ``overrides`` that are not None win
    (``url``, ``table``, ``batch_size``, ``poll_seconds``, ``prune_after_seconds``).

    Raises:
      ConfigurationError: A value of the wrong type, or a database the URL cannot be derived from.
    """
    values: dict[str, Any] = {
        "url": settings.get("OUTBOX_URL"),
        "table": OUTBOX_TABLE,
        "batch_size": settings.get("OUTBOX_BATCH_SIZE", DEFAULT_BATCH_SIZE),
        "poll_seconds": settings.get("OUTBOX_POLL_SECONDS", DEFAULT_POLL_SECONDS),
        "prune_after_seconds": settings.get("OUTBOX_PRUNE_AFTER_SECONDS", DEFAULT_PRUNE_AFTER_SECONDS),
    }
    values.update({key: value for key, value in overrides.items() if value is not None})
    if not values["url"]:
        values["url"] = sqlalchemy_url(_database(settings))
    if not isinstance(values["url"], str):
        raise ConfigurationError(f"EVENTBUS['OUTBOX_URL'] must be a SQLAlchemy URL string, not {values['url']!r}")
    batch_size = values["batch_size"]
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
        raise ConfigurationError(f"EVENTBUS['OUTBOX_BATCH_SIZE'] must be a positive integer, not {batch_size!r}")
    for key, name in (("poll_seconds", "OUTBOX_POLL_SECONDS"), ("prune_after_seconds", "OUTBOX_PRUNE_AFTER_SECONDS")):
        value = values[key]
        if value is None and key == "prune_after_seconds":
            continue
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or value < 0
            or (value == 0 and key == "poll_seconds")
        ):
            raise ConfigurationError(f"EVENTBUS[{name!r}] must be a positive number of seconds, not {value!r}")
    if not values["prune_after_seconds"]:
        values["prune_after_seconds"] = None  # 0 keeps sent rows, as EVENTBUS_OUTBOX_PRUNE_AFTER_SECONDS=0
    return RelaySettings(**values)


def install_relay_in_workers(bus: EventBus, settings: Mapping[str, Any]) -> OutboxRelayMiddleware:
    """Run an outbox relay thread in each worker process of ``bus``'s broker (``rundramatiq``, ``dramatiq``).

    The app's ready() calls it when ``EVENTBUS["OUTBOX_RELAY_IN_WORKERS"]`` is true. It adds an
    :class:`~dramatiq_eventbus.middleware.outbox_relay.OutboxRelayMiddleware`, which makes the
    relay (and its engine) when a worker process boots, and stops it at shutdown; in a process
    that runs no worker (a web server, manage.py) it does nothing. Installing twice keeps the first.

    Raises:
      ConfigurationError: From :func:`relay_settings`.
    """
    from ...transactions.relay import OutboxRelay

    broker = bus.broker
    existing = next((m for m in broker.middleware if isinstance(m, OutboxRelayMiddleware)), None)
    if existing is not None:
        return existing
    relay = relay_settings(settings)
    middleware = OutboxRelayMiddleware(lambda: OutboxRelay.from_settings(relay, bus=bus))
    broker.add_middleware(middleware)
    return middleware


def _database(settings: Mapping[str, Any]) -> str:
    using = settings.get("OUTBOX_DATABASE") or settings.get("DATABASE") or DEFAULT_DB_ALIAS
    if not isinstance(using, str) or using not in connections.settings:
        raise ConfigurationError(f"EVENTBUS['OUTBOX_DATABASE'] must name a database of DATABASES, not {using!r}")
    return using
