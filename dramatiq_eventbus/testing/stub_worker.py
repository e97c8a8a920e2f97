"""stub_worker(): the production path in process, a real Dramatiq Worker on a StubBroker."""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from queue import Empty
from typing import Any

import dramatiq
from dramatiq.broker import Broker, MessageProxy
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import dq_name
from dramatiq.errors import DecodeError
from dramatiq.message import Message
from dramatiq.middleware import Middleware, Retries, TimeLimit, default_middleware
from dramatiq.middleware.time_limit import TimeLimitExceeded

from ..bus import EventBus
from ..delivery import Delivery
from ..errors import ConfigurationError
from ..metadata import EventMetadata
from ..routing import Queues
from .mailbox import EventMailbox, active_mailbox

#: The retry backoff, in milliseconds, of every message a stub worker processes.
RETRY_BACKOFF_MS = 1

#: How often, in milliseconds, a stub worker looks for handlers past their time limit.
TIME_LIMIT_INTERVAL_MS = 100


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
        self._mailbox_at_start: EventMailbox | None = active_mailbox(bus)
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
        if active_mailbox(self.bus) is not self._mailbox_at_start:
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
    consumes every queue. publish() enqueues there; :meth:`StubWorker.drain` runs the
    messages. Every retry waits 1 ms instead of its backoff. On exit the worker stops and
    the bus gets its previous configuration back (configured again from the same arguments).

    What was published before it started and not handled yet is delivered to it too: the
    messages of the bus's handlers waiting on the StubBroker the bus was configured onto
    (messages on a Redis or RabbitMQ broker stay there, for its own workers), then what a
    recording mailbox of the bus recorded and no stub worker has had.

    While a mailbox records (the ``event_bus`` fixture, or ``recording()``, started
    before), every publish(), the code's and the handlers', is both recorded there, for
    assertions, and enqueued for the worker; the mailbox must then be in ``"default"`` or
    ``"strict"`` mode.

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
    with run_stub_worker(
        bus, worker_threads=worker_threads, worker_timeout=worker_timeout, middleware=middleware
    ) as worker:
        yield worker


@dataclass(frozen=True)
class WaitingMark:
    """Where the queues of a bus's StubBroker ended at one moment: see :func:`mark_waiting`.

    Parameters:
      broker(StubBroker): The broker.
      last(Mapping[str, object]): Each queue's last message then, as the queue holds it.
    """

    broker: StubBroker
    last: Mapping[str, object]


def mark_waiting(bus: EventBus) -> WaitingMark | None:
    """Mark the messages waiting now on the bus's StubBroker, for a later stub worker to leave alone.

    The pytest plugin marks them as each test's setup begins: messages that earlier tests
    left there are not this test's to run. None if the bus has no StubBroker.
    """
    if not bus.is_configured or not isinstance(bus.config.broker, StubBroker):
        return None
    broker = bus.config.broker
    last: dict[str, object] = {}
    for name in _queue_names(bus.config.queues):
        queue = broker.queues.get(name)
        if queue is not None:
            # The last message's identity is enough: a queue is first in, first out, and
            # nothing consumes the queues of a StubBroker without a worker.
            with queue.mutex:
                if queue.queue:
                    last[name] = queue.queue[-1]
    return WaitingMark(broker, last)


@contextmanager
def run_stub_worker(
    bus: EventBus,
    *,
    after: WaitingMark | None = None,
    worker_threads: int = 1,
    worker_timeout: int = 20,
    middleware: Iterable[Middleware] = (),
) -> Iterator[StubWorker]:
    """:func:`stub_worker`, leaving on the bus's StubBroker the messages that ``after`` marked.

    Raises:
      ConfigurationError: The bus is not configured.
    """
    if not bus.is_configured:
        raise ConfigurationError(
            "stub_worker() runs the configured handlers: call configure(handlers=...) before entering it"
        )
    previous = bus.config
    mailbox = active_mailbox(bus)
    time_limit = _TimeLimit(TIME_LIMIT_INTERVAL_MS)
    broker = _stub_broker(middleware, time_limit)
    bus.reconfigure(broker=broker, backend="dramatiq")
    with ExitStack() as undo:  # in the reverse order of these lines
        undo.callback(bus.configure, **previous.arguments)
        undo.callback(broker.close)
        worker = dramatiq.Worker(broker, worker_timeout=worker_timeout, worker_threads=worker_threads)
        time_limit.start()
        undo.callback(time_limit.stop)
        worker.start()
        undo.callback(worker.stop)
        _deliver_earlier(bus, previous.broker, after, mailbox)
        # This block is innermost: with a mailbox, publish() is recorded there and enqueued
        # here; without one, enqueued here, whatever recorder was taking publish() calls.
        with bus.recording_to(None if mailbox is None else _RecordAndSend(mailbox, bus)):
            yield StubWorker(bus, broker, worker)


def _deliver_earlier(
    bus: EventBus, earlier_broker: Broker, after: WaitingMark | None, mailbox: EventMailbox | None
) -> None:
    """Hand the new worker what was published before it started, oldest first."""
    config = bus.config
    if isinstance(earlier_broker, StubBroker) and earlier_broker is not config.broker:
        names = _queue_names(config.queues)
        marked = after.last if after is not None and after.broker is earlier_broker else {}
        for name, data in _take_waiting(earlier_broker, names, config.actors, marked):
            # As the earlier broker held it: signed, delayed (a retry's eta) or not.
            config.broker.queues[name].put(data)
    if mailbox is not None:
        undelivered = mailbox.take_undelivered()
        if undelivered:
            config.backend.deliver(undelivered)


def _take_waiting(
    broker: StubBroker, names: Sequence[str], actors: Collection[str], marked: Mapping[str, object]
) -> list[tuple[str, bytes]]:
    """Remove from ``broker`` the messages of ``actors`` queued after those ``marked``, in order.

    Other messages (another application's actors, those marked) stay, in their order.
    """
    taken: list[tuple[str, bytes]] = []
    for name in names:
        queue = broker.queues.get(name)
        if queue is None:
            continue
        items: list[bytes] = []
        while True:
            try:
                items.append(queue.get_nowait())
            except Empty:
                break
            queue.task_done()
        last = marked.get(name)
        start = next((index + 1 for index, item in enumerate(items) if item is last), 0)
        staying = items[:start]
        for data in items[start:]:
            try:
                ours = Message.decode(data).actor_name in actors
            except DecodeError:
                ours = False
            if ours:
                taken.append((name, data))
            else:
                staying.append(data)
        for data in staying:
            queue.put(data)
    return taken


def _queue_names(queues: Queues) -> list[str]:
    return [name for queue in (queues.default, queues.partitioned) for name in (queue, dq_name(queue))]


class _RecordAndSend:
    """What publish() reaches while a stub worker runs inside a recording mailbox: both."""

    def __init__(self, mailbox: EventMailbox, bus: EventBus) -> None:
        self.mailbox = mailbox
        self.bus = bus

    def published(
        self, events: Sequence[object], deliveries: Sequence[Delivery], metadata: Sequence[EventMetadata] = ()
    ) -> None:
        self.mailbox.published_and_sent(events, deliveries, self.bus.config.backend.deliver, metadata)


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


class _TimeLimit(TimeLimit):
    """Dramatiq's TimeLimit, for one stub worker: its watching thread ends with the worker.

    Dramatiq's own starts a thread that never ends: one per stub worker would pile up over
    a test run, and one shared by all would be state outliving each of them.

    Parameters:
      interval(int): Milliseconds between two looks for handlers past their limit.
    """

    def __init__(self, interval: int) -> None:
        super().__init__()  # Dramatiq's watcher is made here, but never started
        self._interval = interval / 1000
        self._deadlines: dict[int, float] = {}
        self._deadlines_lock = threading.Lock()
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    def start(self) -> None:
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, name="stub_worker time limit", daemon=True)
            self._watcher.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._watcher is not None:
            self._watcher.join()

    def after_process_boot(self, broker: Broker) -> None:
        self.start()

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        actor = broker.get_actor(message.actor_name)
        limit = message.options.get("time_limit") or actor.options.get("time_limit", self.time_limit)
        with self._deadlines_lock:
            self._deadlines[threading.get_ident()] = time.monotonic() + limit / 1000

    def after_process_message(
        self, broker: Broker, message: MessageProxy, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        with self._deadlines_lock:
            self._deadlines.pop(threading.get_ident(), None)

    after_skip_message = after_process_message

    def _watch(self) -> None:
        while not self._stopping.wait(self._interval):
            now = time.monotonic()
            with self._deadlines_lock:
                late = [thread for thread, deadline in self._deadlines.items() if now >= deadline]
                for thread in late:
                    del self._deadlines[thread]
            for thread in late:
                self.logger.warning("Time limit exceeded. Raising exception in worker thread %r.", thread)
                _raise_in_thread(thread, TimeLimitExceeded)


def _raise_in_thread(thread_id: int, exception: type[BaseException]) -> None:
    """Raise ``exception`` in thread ``thread_id`` at its next bytecode, as Dramatiq's TimeLimit
    does, through CPython's documented C API rather than Dramatiq's unexported helper."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exception))


def _stub_broker(extra: Iterable[Middleware], time_limit: TimeLimit) -> StubBroker:
    middleware: list[Any] = [time_limit if cls is TimeLimit else cls() for cls in default_middleware]
    retries = next(index for index, m in enumerate(middleware) if isinstance(m, Retries))
    middleware.insert(retries, _Failures())
    return StubBroker(middleware=[*middleware, *extra, _ShortBackoff(RETRY_BACKOFF_MS)])
