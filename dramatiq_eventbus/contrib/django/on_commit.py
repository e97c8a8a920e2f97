"""publish() inside ``transaction.atomic()`` waits for the commit, through ``transaction.on_commit``.

The Django twin of :mod:`dramatiq_eventbus.transactions.sqlalchemy`'s after-commit binding:
the bus asks :meth:`OnCommitBinding.find`, through its interceptor seam, whether the calling
thread's connection is in an atomic block. If it is, the publish() call (its events already
routed and encoded, so a bad event still fails at publish()) is kept as one
``transaction.on_commit`` callback, which hands it on when the outermost block commits:

- rolled back, the transaction drops it (Django drops the callbacks of a rolled-back transaction);
- a savepoint (an inner ``atomic()``) that rolls back drops its own publish() calls only:
  Django discards the callbacks registered inside a rolled-back savepoint, and keeps the others;
- committed, it goes where a publish() outside the transaction would: an enclosing
  ``deferred()`` block, a test mailbox (``event_bus``), or the backend;
- outside any atomic block (autocommit), nothing is intercepted: publish() sends at once.

A callback that fails (the broker is down) raises from the ``atomic()`` block's exit, after
the commit, as Django runs a non-robust callback: the data is committed, and neither those
events nor the callbacks registered after them run. Use the outbox (``OUTBOX: True``) when that must not happen.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from django.db import DEFAULT_DB_ALIAS, transaction

from ...delivery import Delivery
from ...metadata import EventMetadata

if TYPE_CHECKING:
    from ...bus import EventBus


class OnCommitBinding:
    """A bus whose publish() calls inside an atomic block of one database wait for its commit.

    Parameters:
      bus(EventBus): The bus whose publish() calls are kept.
      using(str): The database alias whose transactions count (Django's ``using``).
    """

    def __init__(self, bus: EventBus, *, using: str = DEFAULT_DB_ALIAS) -> None:
        self.bus = bus
        self.using = using
        # Set while a committed transaction's publish() calls are handed on, so that they go
        # past this binding: Django may run the callback inside another atomic block (in a test,
        # django_capture_on_commit_callbacks runs them inside the test's own transaction).
        self._handing_over: ContextVar[bool] = ContextVar(f"eventbus_django_handing_over_{id(self)}", default=False)
        self._bound = False

    def __repr__(self) -> str:
        return f"<OnCommitBinding using={self.using!r} bound={self._bound}>"

    def bind(self) -> OnCommitBinding:
        """Start intercepting the bus's publish() calls."""
        if not self._bound:
            self.bus.add_interceptor(self.find)
            self._bound = True
        return self

    def unbind(self) -> None:
        """Stop intercepting; callbacks already registered still run at their commit."""
        if self._bound:
            self.bus.remove_interceptor(self.find)
            self._bound = False

    def find(self) -> _AtomicBlock | None:
        """The innermost atomic block of this thread's connection, if it is in one."""
        if self._handing_over.get():
            return None
        connection = transaction.get_connection(self.using)
        if not connection.in_atomic_block:
            return None
        return _AtomicBlock(self, connection.atomic_blocks[-1])

    def hand_over(
        self, events: Sequence[object], deliveries: Sequence[Delivery], metadata: Sequence[EventMetadata]
    ) -> None:
        """Hand a committed publish() call on to whatever encloses the transaction."""
        token = self._handing_over.set(True)
        try:
            self.bus.hand_over(events, deliveries, metadata)
        finally:
            self._handing_over.reset(token)


class _AtomicBlock:
    """What the bus hands one publish() call to while the connection is in an atomic block.

    Two are equal when they stand for the same block, so that a ``deferred()`` block opened
    inside an atomic block buffers the publish() calls made in it (see ``EventBus.hand_over``).
    """

    __slots__ = ("atomic", "binding")

    def __init__(self, binding: OnCommitBinding, atomic: Any) -> None:
        self.binding = binding
        self.atomic = atomic

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _AtomicBlock) and other.binding is self.binding and other.atomic is self.atomic

    def __hash__(self) -> int:
        return hash((id(self.binding), id(self.atomic)))

    def published(
        self, events: Sequence[object], deliveries: Sequence[Delivery], metadata: Sequence[EventMetadata] = ()
    ) -> None:
        binding = self.binding
        callback = functools.partial(binding.hand_over, list(events), list(deliveries), list(metadata))
        transaction.on_commit(callback, using=binding.using)
