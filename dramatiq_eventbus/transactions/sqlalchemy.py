"""Binding a bus to SQLAlchemy sessions: publish() inside a transaction waits for its commit.

The bus asks each binding, through an interceptor, whether the caller's thread or task
has a bound session in a transaction. If it has, the publish() call is kept with that
transaction (or, with an outbox, written as rows in it) instead of being sent.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from dramatiq.brokers.stub import StubBroker
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, SessionTransaction, scoped_session, sessionmaker

from ..codecs.names import qualified_name
from ..delivery import Delivery, PublishBuffer
from ..errors import AlreadyHandled, ConfigurationError
from ..metadata import EventContext, EventMetadata, current_context
from ..untrusted import shown
from .inbox import Inbox
from .outbox import Outbox, message_backend

if TYPE_CHECKING:
    from ..bus import EventBus

logger = logging.getLogger("dramatiq_eventbus.transactions")

#: The events a binding listens to on its target, and the method that handles each.
_LISTENERS = (
    ("after_transaction_create", "_transaction_created"),
    ("after_begin", "_began"),
    ("after_commit", "_committed"),
    ("after_transaction_end", "_transaction_ended"),
)


class _Pending(PublishBuffer):
    """The publish() calls kept by one transaction or savepoint until it ends."""

    __slots__ = ("committed",)

    def __init__(self) -> None:
        super().__init__()
        self.committed = False


#: The savepoint a duplicate's transaction is rolled back to at its commit.
_DUPLICATE_SAVEPOINT = "eventbus_inbox_duplicate"


class _Claim:
    """The inbox row one root transaction of a handler wrote, or found (a duplicate)."""

    __slots__ = ("committed", "context", "duplicate", "engine")

    def __init__(self, context: EventContext, engine: Engine, *, duplicate: bool) -> None:
        self.context = context
        self.engine = engine
        self.duplicate = duplicate
        self.committed = False


class SessionBinding:
    """A bus bound to SQLAlchemy sessions; made by :func:`bind_session`.

    A publish() on the bus, from the thread or asyncio task that began a bound session's
    transaction, while that transaction is open:

    - without an outbox, is kept until the transaction ends: handed on when it commits
      (to the backend, or to whatever encloses the transaction), dropped when it rolls
      back. A savepoint (``begin_nested()``) that rolls back drops its own publish()
      calls only; one that is released joins them to the enclosing transaction.
    - with an outbox, writes one outbox row per interested handler through the session's
      connection, in the transaction itself, for an :class:`~.relay.OutboxRelay` to send
      once committed. While a test mailbox records the bus, or its backend is not
      ``"dramatiq"``, or its broker is a StubBroker (no relay could reach it), the
      outbox is skipped and the binding delivers after commit instead, as without one.

    With an inbox, the first transaction that a handler (while
    :func:`~dramatiq_eventbus.current_context` is not None) begins on a bound session
    inserts the row ``(handler, event_id)`` in that transaction, before the handler's own
    first statement. If the row exists, the event was handled already: one INFO line says
    so, and when the handler commits, everything it wrote in that transaction is rolled
    back first (a savepoint taken after the inbox's insert), its publish() calls are
    dropped, and the handler returns normally, so the message is acknowledged.

    Parameters:
      target: What to bind: a ``Session``, a ``sessionmaker``, a ``scoped_session``, a
        ``Session`` subclass (every session of that class), or an ``AsyncSession``
        (through its ``sync_session``).
      bus(EventBus): The bus whose publish() calls are kept.
      outbox(Outbox | None): Where to write the rows; None delivers after commit.
      inbox(Inbox | None): Where handlers record the events they handled; None records nothing.

    Raises:
      ConfigurationError: ``target`` is none of the above, or ``outbox`` or ``inbox`` is not one.
    """

    def __init__(
        self, target: object, *, bus: EventBus, outbox: Outbox | None = None, inbox: Inbox | None = None
    ) -> None:
        if outbox is not None and not isinstance(outbox, Outbox):
            raise ConfigurationError(f"bind_session(outbox=...) takes an Outbox, not {type(outbox).__qualname__}")
        if inbox is not None and not isinstance(inbox, Inbox):
            hint = " (pass inbox=Inbox(), not the class)" if inbox is Inbox else ""
            raise ConfigurationError(
                f"bind_session(inbox=...) takes an Inbox, not {type(inbox).__qualname__}: {inbox!r:.80}{hint}"
            )
        self.bus = bus
        self.outbox = outbox
        self.inbox = inbox
        self.target = _listen_target(target)
        # The root transactions begun in this thread or task, latest last. Weak, so that a
        # session dropped without closing is forgotten; a transaction already over is skipped.
        self._roots: ContextVar[tuple[weakref.ref[SessionTransaction], ...]] = ContextVar(
            f"eventbus_session_roots_{id(self)}", default=()
        )
        # The key of this binding's pending publish() calls in each session's info dict.
        self._key = f"dramatiq_eventbus.pending.{id(self)}"
        # Set while a committed transaction's publish() calls are handed on, so that they
        # never land in another open transaction of this thread, whose rollback would drop them.
        self._handing_over: ContextVar[bool] = ContextVar(f"eventbus_handing_over_{id(self)}", default=False)
        # The sessions whose transactions keep publish() calls, for unbind() to account for.
        self._keeping: weakref.WeakSet[Session] = weakref.WeakSet()
        self._keeping_lock = threading.Lock()
        # The key of the inbox claims of each session's root transactions, in its info dict.
        self._claims_key = f"dramatiq_eventbus.inbox.{id(self)}"
        # The handler run (its context object: each run has its own) whose inbox row an open or
        # committed transaction holds: a later transaction of the same run must not insert it
        # again (it would find its own row, or wait for itself on another session's lock).
        self._claimed: ContextVar[EventContext | None] = ContextVar(f"eventbus_inbox_claimed_{id(self)}", default=None)
        # The handler run found to be a duplicate, whose later transactions are duplicates too.
        self._duplicate: ContextVar[EventContext | None] = ContextVar(
            f"eventbus_inbox_duplicate_{id(self)}", default=None
        )
        self._bound = False
        self.bind()

    def __repr__(self) -> str:
        mode = "outbox" if self.outbox is not None else "after commit"
        inbox = f" inbox={self.inbox.qualified_name}" if self.inbox is not None else ""
        return f"<SessionBinding {mode}{inbox} target={self.target!r}>"

    def __enter__(self) -> SessionBinding:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.unbind()

    def bind(self) -> None:
        """Listen to the target's transactions and intercept the bus's publish() calls (done at creation)."""
        if self._bound:
            return
        for name, method in _LISTENERS:
            event.listen(self.target, name, getattr(self, method))
        self.bus.add_interceptor(self._find)
        self._bound = True

    def unbind(self) -> None:
        """Stop intercepting and listening.

        publish() calls kept by transactions still open are dropped, with a warning: unbind
        when no bound transaction is open, as at shutdown or at the end of a test.
        """
        if not self._bound:
            return
        self.bus.remove_interceptor(self._find)
        for name, method in _LISTENERS:
            event.remove(self.target, name, getattr(self, method))
        self._bound = False
        with self._keeping_lock:
            sessions = list(self._keeping)
        dropped = sum(
            len(pending.events) for session in sessions for pending in session.info.pop(self._key, {}).values()
        )
        if dropped:
            logger.warning("%r unbound while its open transactions kept %d event(s); they are dropped.", self, dropped)

    # -- publish() ---------------------------------------------------------------------------

    def _find(self) -> _TransactionTarget | None:
        if self._handing_over.get():
            return None
        for ref in reversed(self._roots.get()):
            root = ref()
            # A new transaction of the same session, begun elsewhere, is another object.
            if root is not None and root.session.get_transaction() is root:
                return _TransactionTarget(self, root.session)
        return None

    def writes_rows(self) -> bool:
        """Whether a publish() in a transaction writes outbox rows now, rather than waiting for the commit."""
        # The test mailbox receives what the backend would: it must see events at commit, like a handler.
        if self.outbox is None or self.bus.is_recording or isinstance(self.bus.config.broker, StubBroker):
            return False
        try:
            message_backend(self.bus)
        except ConfigurationError:
            return False  # a backend that builds no messages (inline, your own) gets the deliveries at commit
        return True

    def keep(
        self,
        session: Session,
        events: Sequence[object],
        deliveries: Sequence[Delivery],
        metadata: Sequence[EventMetadata] = (),
    ) -> None:
        """Keep one publish() call with the innermost transaction or savepoint of ``session``."""
        transaction = session.get_nested_transaction() or session.get_transaction()
        if transaction is None:  # pragma: no cover - _find() returned this session for its transaction
            raise RuntimeError("the session's transaction ended while publishing")
        pending: dict[SessionTransaction, _Pending] = session.info.setdefault(self._key, {})
        pending.setdefault(transaction, _Pending()).published(events, deliveries, metadata)
        with self._keeping_lock:
            self._keeping.add(session)

    # -- the session's transactions ----------------------------------------------------------

    def _transaction_created(self, session: Session, transaction: SessionTransaction) -> None:
        if transaction.parent is not None:
            return
        live = tuple(ref for ref in self._roots.get() if _is_open(ref))
        self._roots.set((*live, weakref.ref(transaction)))

    def _began(self, session: Session, transaction: SessionTransaction, connection: Connection) -> None:
        # Fires when a transaction first uses a connection: before the handler's first statement in it.
        if self.inbox is None:
            return
        context = current_context()
        if context is None:
            return  # not in a handler: nothing to record
        root = transaction
        while root.parent is not None:
            root = root.parent
        claims: dict[SessionTransaction, _Claim] = session.info.setdefault(self._claims_key, {})
        if root in claims or self._claimed.get() is context:
            return  # a second connection of the same transaction, or a run that holds its row already
        # A duplicate run's later transactions are duplicates too, without another line.
        known_duplicate = self._duplicate.get() is context
        if not known_duplicate and self.inbox.claim(connection, context.handler, context.event_id):
            claims[root] = _Claim(context, connection.engine, duplicate=False)
            self._claimed.set(context)
            return
        claims[root] = _Claim(context, connection.engine, duplicate=True)
        # The handler runs on to its commit, which must change nothing: everything after this
        # savepoint is undone just before the commit (the inbox's insert, before it, inserted nothing).
        _watch_commits(connection.engine)
        connection.exec_driver_sql(f"SAVEPOINT {_DUPLICATE_SAVEPOINT}")
        # The Connection itself, not a flag: its info dict is the pooled DBAPI connection's, which
        # outlives it, and a later transaction on it must never be rolled back to a stale savepoint.
        connection.info[_DUPLICATE_KEY] = weakref.ref(connection)
        if not known_duplicate:
            self._duplicate.set(context)
            logger.info(
                "Event %s was already handled by %s (its inbox row exists): a duplicate delivery, "
                "stopped before its first statement; nothing it did in the database is kept, and "
                "nothing it published is sent.",
                shown(context.event_id),
                shown(context.handler),
            )
        # The run ends here, as a success the worker acknowledges: going on, the handler would
        # write again what its first run wrote, and a second insert of a key would fail it on
        # every redelivery. Should it swallow this (a bare except), the savepoint above still
        # undoes whatever it writes before its commit.
        raise AlreadyHandled(context.handler, context.event_id)

    def _committed(self, session: Session) -> None:
        # Fires for the root and for each released savepoint, while it is still the session's current one.
        pending: dict[SessionTransaction, _Pending] | None = session.info.get(self._key)
        transaction = session.get_nested_transaction() or session.get_transaction()
        claims: dict[SessionTransaction, _Claim] | None = session.info.get(self._claims_key)
        claim = claims.get(transaction) if claims and transaction is not None else None
        if claim is not None:
            claim.committed = True
            if claim.duplicate:
                return  # its publish() calls are dropped with its writes
        if pending and transaction in pending:
            pending[transaction].committed = True

    def _transaction_ended(self, session: Session, transaction: SessionTransaction) -> None:
        if transaction.parent is None:
            self._roots.set(tuple(ref for ref in self._roots.get() if ref() is not transaction and _is_open(ref)))
            self._claim_ended(session, transaction)
        pending_by_transaction: dict[SessionTransaction, _Pending] | None = session.info.get(self._key)
        if not pending_by_transaction:
            return
        pending = pending_by_transaction.pop(transaction, None)
        if pending is not None and pending.committed and transaction.parent is not None:
            enclosing = _keeping_transaction(transaction.parent)
            pending_by_transaction.setdefault(enclosing, _Pending()).published(
                pending.events, pending.deliveries, pending.metadata
            )
        if not pending_by_transaction:
            session.info.pop(self._key, None)
            with self._keeping_lock:
                self._keeping.discard(session)
        if pending is None or not pending.committed or transaction.parent is not None:
            return  # nothing kept here, rolled back (dropped), or a savepoint joined to its enclosing transaction
        # What encloses the transaction now takes them: a deferred() block, a test mailbox, or the backend.
        token = self._handing_over.set(True)
        try:
            self.bus.hand_over(pending.events, pending.deliveries, pending.metadata)
        finally:
            self._handing_over.reset(token)

    def _claim_ended(self, session: Session, transaction: SessionTransaction) -> None:
        claims: dict[SessionTransaction, _Claim] | None = session.info.get(self._claims_key)
        claim = claims.pop(transaction, None) if claims else None
        if claims is not None and not claims:
            session.info.pop(self._claims_key, None)
        if claim is None or claim.duplicate:
            return
        if not claim.committed:
            # Rolled back with the row: the run's next transaction records it instead.
            if self._claimed.get() is claim.context:
                self._claimed.set(None)
            return
        inbox = self.inbox
        if inbox is not None and inbox.prune_due():
            # After the handler's commit, on its own connection: never in the handler's transaction,
            # whose locks it would hold longer, nor able to undo it by failing.
            try:
                pruned = inbox.prune(claim.engine)
            except Exception:
                logger.warning("Pruning the inbox %s failed; the next commit tries again.", inbox, exc_info=True)
                inbox.retry_prune()
            else:
                logger.debug("Pruned %d row(s) from the inbox %s.", pruned, inbox)


#: Set in a connection's info while its transaction is a duplicate's.
_DUPLICATE_KEY = "dramatiq_eventbus.inbox_duplicate"

# The engines whose commits are watched for duplicates. Listened to on the engine, once: a
# listener on one Connection joins the engine's own list (SQLAlchemy shares it), and an engine's
# listeners reach the connections it made already.
_watched: weakref.WeakSet[Engine] = weakref.WeakSet()
_watched_lock = threading.Lock()


def _watch_commits(engine: Engine) -> None:
    with _watched_lock:
        if engine in _watched:
            return
        event.listen(engine, "commit", _undo_duplicate)
        event.listen(engine, "rollback", _forget_duplicate)
        _watched.add(engine)


def _forget_duplicate(connection: Connection) -> None:
    # The info dict outlives the transaction (it is the pooled DBAPI connection's).
    connection.info.pop(_DUPLICATE_KEY, None)


def _undo_duplicate(connection: Connection) -> None:
    """Roll a duplicate's transaction back to the savepoint taken after its inbox insert, just before it commits."""
    marked = connection.info.pop(_DUPLICATE_KEY, None)
    if marked is None or marked() is not connection:
        return
    # Through the DBAPI connection: Connection.execute() is not for use while it commits.
    cursor = connection.connection.cursor()
    try:
        cursor.execute(f"ROLLBACK TO SAVEPOINT {_DUPLICATE_SAVEPOINT}")
    finally:
        cursor.close()


class _TransactionTarget:
    """What the bus hands one publish() call to, while a bound session is in a transaction."""

    __slots__ = ("binding", "session")

    def __init__(self, binding: SessionBinding, session: Session) -> None:
        self.binding = binding
        self.session = session

    def published(
        self, events: Sequence[object], deliveries: Sequence[Delivery], metadata: Sequence[EventMetadata] = ()
    ) -> None:
        binding = self.binding
        if binding.outbox is not None and binding.writes_rows():
            # The rows hold the messages, options and so metadata included.
            binding.outbox.write(self.session, binding.bus, deliveries)
        else:
            binding.keep(self.session, events, deliveries, metadata)


def bind_session(
    target: object, *, bus: EventBus | None = None, outbox: Outbox | None = None, inbox: Inbox | None = None
) -> SessionBinding:
    """Tie publish() to the transactions of ``target``'s sessions; see :class:`SessionBinding`.

    ``bind_session(SessionLocal)`` sends a publish() made inside a transaction after its
    commit, and drops it on rollback. ``bind_session(SessionLocal, outbox=Outbox())``
    writes it as outbox rows in the transaction instead, for an :class:`~.relay.OutboxRelay`.
    ``inbox=Inbox()`` records, in a handler's transaction, that the handler handled the
    event, so that a redelivery of it changes nothing (see :class:`~.inbox.Inbox`).

    Parameters:
      target: A ``Session``, ``sessionmaker``, ``scoped_session``, ``Session`` subclass or ``AsyncSession``.
      bus(EventBus | None): The bus; the default bus (``dramatiq_eventbus.publish``) if None.
      outbox(Outbox | None): Write outbox rows instead of delivering after commit.
      inbox(Inbox | None): Record each handler's event in its transaction; a duplicate changes nothing.

    Returns:
      SessionBinding: Call its ``unbind()`` (or use it as a context manager) to stop.

    Raises:
      ConfigurationError: ``target`` is not one of those, or ``outbox`` or ``inbox`` is not one.
    """
    if bus is None:
        from .. import default_bus

        bus = default_bus
    return SessionBinding(target, bus=bus, outbox=outbox, inbox=inbox)


def _listen_target(target: object) -> Any:
    """What SQLAlchemy's session events are registered on for ``target``."""
    if isinstance(target, Session | sessionmaker):
        return target
    if isinstance(target, type) and issubclass(target, Session):
        return target
    if isinstance(target, scoped_session):
        return target.session_factory
    # An AsyncSession runs a sync Session inside, which is where its events fire; checked by
    # shape so that binding never imports sqlalchemy.ext.asyncio (and greenlet).
    sync_session = getattr(target, "sync_session", None)
    if isinstance(sync_session, Session):
        return sync_session
    hint = ""
    if type(target).__name__ == "async_sessionmaker":
        hint = (
            " (an async_sessionmaker has no session events: give it sync_session_class=MySession, "
            "a Session subclass of your own, and bind MySession)"
        )
    elif isinstance(target, type):
        hint = f" (the class {target.__qualname__} is not a Session subclass)"
    raise ConfigurationError(
        "bind_session() takes a SQLAlchemy Session, sessionmaker, scoped_session, Session subclass "
        f"or AsyncSession, not {qualified_name(type(target))}: {target!r:.80}{hint}"
    )


def _is_open(ref: weakref.ref[SessionTransaction]) -> bool:
    transaction = ref()
    return transaction is not None and transaction.session.get_transaction() is transaction


def _keeping_transaction(transaction: SessionTransaction) -> SessionTransaction:
    """The nearest savepoint or root at or above ``transaction``: internal subtransactions keep nothing."""
    while transaction.parent is not None and not transaction.nested:
        transaction = transaction.parent
    return transaction
