"""stub_worker(): the production path in process, a real Dramatiq Worker on a StubBroker."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import dramatiq
from dramatiq.broker import Broker, MessageProxy
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import dq_name
from dramatiq.middleware import Middleware, Retries, TimeLimit, default_middleware

from ..bus import EventBus
from ..errors import ConfigurationError
from .mailbox import EventMailbox, active_mailbox

#: The retry backoff, in milliseconds, of every message a stub worker processes.
RETRY_BACKOFF_MS = 1


class StubWorker:
    """A running Dramatiq Worker on the StubBroker the bus is configured onto; see :func:`stub_worker`.

    Parameters:
      bus(EventBus): The bus, configured onto ``broker`` while the worker runs.
      broker(StubBroker): Where publish() enqueues and the worker consumes.
      worker(dramatiq.Worker): The worker.
    """

    def __init__(self, bus: EventBus, broker: StubBroker, worker: dramatiq.Worker) -> None:
        self.bus = bus
        self.broker = broker
        self.worker = worker
        self._mailbox_at_start: EventMailbox | None = active_mailbox()
        self._reported: set[str] = set()
        self._failures = next(m for m in broker.middleware if isinstance(m, _Failures))

    @property
    def dead_letters(self) -> list[MessageProxy]:
        """Every message dead-lettered so far."""
        return self.broker.dead_letters

    def drain(self, *, timeout: int = 10_000) -> None:
        """Process messages until both bus queues and their delay queues are empty.

        Messages that handlers publish are processed too, and retries run at once.

        Parameters:
          timeout(int): Milliseconds to wait for the queues to empty.

        Raises:
          Exception: The error of the first message dead-lettered since the last drain(),
            after all its retries: what the handler raised, or HandlerFailed for ``Error(reason)``.
          dramatiq.errors.QueueJoinTimeout: The queues did not empty in time.
          RuntimeError: publish() no longer reaches this worker's broker.
        """
        self._check_publish_reaches_broker()
        queues = self.bus.config.queues
        names = (queues.default, queues.partitioned)
        deadline = time.monotonic() + timeout / 1000
        while True:
            for name in names:
                remaining = max(1, int((deadline - time.monotonic()) * 1000))
                self.broker.join(name, timeout=remaining, fail_fast=False)
            self.worker.join()
            # A handler may publish to the queue joined before its own, so join until all are still.
            if not any(self.broker.queues[q].unfinished_tasks for name in names for q in (name, dq_name(name))):
                break
        for name in names:
            for message in self.broker.dead_letters_by_queue[name]:
                if message.message_id in self._reported:
                    continue
                self._reported.add(message.message_id)
                error = self._failures.exceptions.get(message.message_id)
                if error is None:
                    error = RuntimeError(f"message {message.message_id} to {message.actor_name} was dead-lettered")
                raise error

    def _check_publish_reaches_broker(self) -> None:
        if self.bus.config.broker is not self.broker:
            raise RuntimeError(
                "the bus was configured with another broker inside stub_worker(), so publish() no longer "
                "reaches the worker: configure before entering it, or use reconfigure(), which keeps the broker"
            )
        if active_mailbox() is not self._mailbox_at_start:
            raise RuntimeError(
                "a mailbox began recording inside stub_worker(), so publish() records instead of "
                "enqueueing: start the recording (or request the event_bus fixture) before stub_worker"
            )


@contextmanager
def stub_worker(
    bus: EventBus | None = None,
    *,
    worker_threads: int = 1,
    worker_timeout: int = 20,
    middleware: Iterable[Middleware] = (),
) -> Iterator[StubWorker]:
    """Run the bus's handlers in a real Dramatiq Worker, in process, for the duration.

    The bus is configured again, with its own handlers and options, onto a fresh
    StubBroker with Dramatiq's default middleware, with backend ``"dramatiq"``; a Worker
    consumes every queue. publish() enqueues there, even inside a recording mailbox,
    which is suspended meanwhile; :meth:`StubWorker.drain` runs the messages. Every
    retry waits 1 ms instead of its backoff. On exit the worker stops and the bus gets
    its previous configuration back (configured again from the same arguments).

    Parameters:
      bus(EventBus | None): The bus; the default bus if None. It must be configured.
      worker_threads(int): Worker threads. With one, handlers run one at a time, most urgent first.
      worker_timeout(int): Milliseconds the worker's threads wait for a message before
        looking again; it bounds how long a retry waits in the delay queue.
      middleware(Iterable[Middleware]): More middleware for the broker, such as your own.

    Raises:
      ConfigurationError: The bus is not configured.
    """
    if bus is None:
        from .. import default_bus

        bus = default_bus
    if not bus.is_configured:
        raise ConfigurationError(
            "stub_worker() runs the configured handlers: call configure(handlers=...) before entering it"
        )
    previous = dict(bus.config.arguments)
    broker = _stub_broker(middleware)
    bus.reconfigure(broker=broker, backend="dramatiq")
    try:
        worker = dramatiq.Worker(broker, worker_timeout=worker_timeout, worker_threads=worker_threads)
        worker.start()
        try:
            # A recording mailbox would keep the messages from the broker; this block, innermost, wins.
            with bus.recording_to(None):
                yield StubWorker(bus, broker, worker)
        finally:
            worker.stop()
    finally:
        broker.close()
        bus.configure(**previous)


class _ShortBackoff(Middleware):
    """Gives every message a short retry backoff.

    Dramatiq's Retries reads a message's own options before its actor's and its own, so
    this wins over whatever the handlers or the bus set.
    """

    def __init__(self, backoff: int) -> None:
        self.backoff = backoff

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        message.options["min_backoff"] = self.backoff
        message.options["max_backoff"] = self.backoff


class _Failures(Middleware):
    """Keeps the exception of each message that failed for good, for drain() to raise.

    Installed before Retries, so that its ``after_process_message`` runs after Retries has
    decided (Dramatiq runs "after" hooks in reverse order).
    """

    def __init__(self) -> None:
        self.exceptions: dict[str, BaseException] = {}

    def after_process_message(
        self, broker: Broker, message: MessageProxy, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        if message.failed and exception is not None:
            self.exceptions[message.message_id] = exception


_time_limit: TimeLimit | None = None
_time_limit_lock = threading.Lock()


def _shared_time_limit() -> TimeLimit:
    # TimeLimit starts a thread that never ends; one for every stub worker would pile up over a
    # test run, and its deadlines are per thread id, so one instance can serve every broker.
    global _time_limit
    with _time_limit_lock:
        if _time_limit is None:
            _time_limit = TimeLimit()
            _time_limit.after_process_boot(None)  # type: ignore[no-untyped-call]
        return _time_limit


def _stub_broker(extra: Iterable[Middleware]) -> StubBroker:
    middleware: list[Any] = [_shared_time_limit() if cls is TimeLimit else cls() for cls in default_middleware]
    retries = next(index for index, m in enumerate(middleware) if isinstance(m, Retries))
    middleware.insert(retries, _Failures())
    return StubBroker(middleware=[*middleware, *extra, _ShortBackoff(RETRY_BACKOFF_MS)])
