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
from sqlalchemy.orm import Session, SessionTransaction, scoped_session, sessionmaker

from ..codecs.names import qualified_name
from ..delivery import Delivery, PublishBuffer
from ..errors import ConfigurationError
from ..metadata import EventMetadata
from .outbox import message_backend

if TYPE_CHECKING:
    from ..bus import EventBus
    from .outbox import Outbox

logger = logging.getLogger("dramatiq_eventbus.transactions")

#: The events a binding listens to on its target, and the method that handles each.
_LISTENERS = (
    ("after_transaction_create", "_transaction_created"),
    ("after_commit", "_committed"),
    ("after_transaction_end", "_transaction_ended"),
)


class _Pending(PublishBuffer):
    """The publish() calls kept by one transaction or savepoint until it ends."""

    __slots__ = ("committed",)

    def __init__(self) -> None:
        super().__init__()
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

    Parameters:
      target: What to bind: a ``Session``, a ``sessionmaker``, a ``scoped_session``, a
        ``Session`` subclass (every session of that class), or an ``AsyncSession``
        (through its ``sync_session``).
      bus(EventBus): The bus whose publish() calls are kept.
      outbox(Outbox | None): Where to write the rows; None delivers after commit.

    Raises:
      ConfigurationError: ``target`` is none of the above.
    """

    def __init__(self, target: object, *, bus: EventBus, outbox: Outbox | None = None) -> None:
        self.bus = bus
        self.outbox = outbox
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
        self._bound = False
        self.bind()

    def __repr__(self) -> str:
        mode = "outbox" if self.outbox is not None else "after commit"
        return f"<SessionBinding {mode} target={self.target!r}>"

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

    def _committed(self, session: Session) -> None:
        # Fires for the root and for each released savepoint, while it is still the session's current one.
        pending: dict[SessionTransaction, _Pending] | None = session.info.get(self._key)
        transaction = session.get_nested_transaction() or session.get_transaction()
        if pending and transaction in pending:
            pending[transaction].committed = True

    def _transaction_ended(self, session: Session, transaction: SessionTransaction) -> None:
        if transaction.parent is None:
            self._roots.set(tuple(ref for ref in self._roots.get() if ref() is not transaction and _is_open(ref)))
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


def bind_session(target: object, *, bus: EventBus | None = None, outbox: Outbox | None = None) -> SessionBinding:
    """Tie publish() to the transactions of ``target``'s sessions; see :class:`SessionBinding`.

    ``bind_session(SessionLocal)`` sends a publish() made inside a transaction after its
    commit, and drops it on rollback. ``bind_session(SessionLocal, outbox=Outbox())``
    writes it as outbox rows in the transaction instead, for an :class:`~.relay.OutboxRelay`.

    Parameters:
      target: A ``Session``, ``sessionmaker``, ``scoped_session``, ``Session`` subclass or ``AsyncSession``.
      bus(EventBus | None): The bus; the default bus (``dramatiq_eventbus.publish``) if None.
      outbox(Outbox | None): Write outbox rows instead of delivering after commit.

    Returns:
      SessionBinding: Call its ``unbind()`` (or use it as a context manager) to stop.

    Raises:
      ConfigurationError: ``target`` is not one of those.
    """
    if bus is None:
        from .. import default_bus

        bus = default_bus
    return SessionBinding(target, bus=bus, outbox=outbox)


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
