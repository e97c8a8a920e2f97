"""Dramatiq middleware the bus installs on its broker, one concern each."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from dramatiq.broker import Broker, MessageProxy
from dramatiq.middleware import Middleware, Retries

from ..ordering import LaneCoordinator, LaneSweeper, PartitionOrdering
from ..signing import Signer
from .authentication import MessageAuthentication
from .dead_letters import DeadLetterReasons

_M = TypeVar("_M", bound=Middleware)


def install(
    broker: Broker,
    *,
    coordinator: LaneCoordinator,
    keep_dead_letter: Callable[[MessageProxy], None] | None,
    signer: Signer | None = None,
) -> MessageAuthentication:
    """Add the bus's middleware to ``broker`` once; configuring again only updates it.

    Returns the MessageAuthentication, whose ``problem`` the broker's consumers may run too.
    DeadLetterReasons and PartitionOrdering go before Retries, so that their
    ``after_process_message`` runs after Retries has decided between a retry and a dead
    letter (Dramatiq runs "after" hooks in reverse order).
    """
    authentication = next((m for m in broker.middleware if isinstance(m, MessageAuthentication)), None)
    if authentication is None:
        # First of all: nothing may act on a message before it is known to be the bus's own.
        authentication = MessageAuthentication(signer)
        first = type(broker.middleware[0]) if broker.middleware else None
        broker.add_middleware(authentication, before=first)
    authentication.signer = signer
    coordinator.authenticated_by(signer)
    _ensure(broker, DeadLetterReasons, lambda: DeadLetterReasons(keep_dead_letter)).keep_dead_letter = keep_dead_letter
    _ensure(broker, PartitionOrdering, lambda: PartitionOrdering(coordinator)).coordinator = coordinator
    _ensure(broker, LaneSweeper, lambda: LaneSweeper(coordinator)).coordinator = coordinator
    return authentication


def _ensure(broker: Broker, kind: type[_M], make: Callable[[], _M]) -> _M:
    found = next((m for m in broker.middleware if isinstance(m, kind)), None)
    if found is not None:
        return found
    middleware = make()
    if any(isinstance(m, Retries) for m in broker.middleware):
        broker.add_middleware(middleware, before=Retries)
    else:
        broker.add_middleware(middleware)
    return middleware


__all__ = ["DeadLetterReasons", "MessageAuthentication", "install"]
