"""Publishing inside a database transaction, with SQLAlchemy (``pip install 'dramatiq-eventbus[sqlalchemy]'``).

Two ways to tie publish() to a transaction:

- **After commit**: ``bind_session(SessionLocal)``. A publish() while a bound session is
  in a transaction waits for its commit, and is dropped on rollback; a savepoint's
  events follow the savepoint.
- **Outbox**: ``bind_session(SessionLocal, outbox=Outbox())``. A publish() writes one row
  per interested handler in the same transaction, and an :class:`OutboxRelay` moves
  committed rows to the broker, so an event survives a broker that is down at commit.

And, for handlers, an **inbox**: ``bind_session(SessionLocal, inbox=Inbox())`` records
``(handler, event_id)`` in the handler's transaction, so a redelivered event changes nothing.
"""

from __future__ import annotations

try:
    import sqlalchemy  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        "dramatiq_eventbus.transactions needs SQLAlchemy: pip install 'dramatiq-eventbus[sqlalchemy]'"
    ) from exc

from .inbox import Inbox
from .outbox import Outbox
from .relay import OutboxRelay
from .settings import RelaySettings
from .sqlalchemy import SessionBinding, bind_session

__all__ = ["Inbox", "Outbox", "OutboxRelay", "RelaySettings", "SessionBinding", "bind_session"]
