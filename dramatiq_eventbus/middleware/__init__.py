"""Dramatiq middleware the bus installs on its broker, one concern each."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from dramatiq import Worker
from dramatiq.asyncio import get_event_loop_thread
from dramatiq.broker import Broker, MessageProxy
from dramatiq.middleware import AsyncIO, Middleware, Retries

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
    _ensure(broker, RunningWorkers, RunningWorkers)
    return authentication


def install_asyncio(broker: Broker) -> None:
    """Add Dramatiq's AsyncIO middleware to ``broker`` once, for the actors of async handlers.

    Dramatiq runs a coroutine actor on the one event-loop thread per process that this
    middleware starts when a worker boots. A worker that booted before it was added (a
    configure() inside a running ``stub_worker``) never boots again, so the loop is started
    for it here, by the middleware's own hook, as its boot would have; the worker's shutdown
    stops it.

    Parameters:
      broker(Broker): The broker whose actors include an async handler's.
    """
    if any(isinstance(m, AsyncIO) for m in broker.middleware):
        return
    asyncio_middleware = AsyncIO()
    broker.add_middleware(asyncio_middleware)
    running = next((m for m in broker.middleware if isinstance(m, RunningWorkers)), None)
    worker = running.any_worker() if running is not None else None
    # The loop thread is global to the process: one running already serves this broker's actors too.
    if worker is not None and get_event_loop_thread() is None:
        asyncio_middleware.before_worker_boot(broker, worker)  # type: ignore[no-untyped-call]


class RunningWorkers(Middleware):
    """The workers of a broker that booted and have not shut down, for :func:`install_asyncio`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._workers: list[Worker] = []

    def any_worker(self) -> Worker | None:
        """A running worker of the broker, or None."""
        with self._lock:
            return self._workers[0] if self._workers else None

    def before_worker_boot(self, broker: Broker, worker: Worker) -> None:
        with self._lock:
            self._workers.append(worker)

    def after_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        with self._lock:
            if worker in self._workers:
                self._workers.remove(worker)


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


__all__ = [
    "DeadLetterReasons",
    "MessageAuthentication",
    "RunningWorkers",
    "install",
    "install_asyncio",
]
