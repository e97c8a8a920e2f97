"""Event metadata: ids, timestamps, correlation and causation, and the context a handler runs in.

Every event a publish() call takes gets an :class:`EventMetadata`: a time-ordered
``event_id`` (a UUIDv7), when it was published, the ``correlation_id`` of the request or
flow it belongs to and the ``causation_id`` of the event whose handler published it. It
travels in the message's options, never in the payload, and the signature covers it. A
handler reads it, with what only the worker knows (the attempt, the message id), through
:func:`current_context`.
"""

from __future__ import annotations

import itertools
import logging
import os
import sysconfig
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

#: The option names the metadata travels under, in every message of the bus.
EVENT_ID = "event_id"
PUBLISHED_AT = "published_at"
CORRELATION_ID = "correlation_id"
CAUSATION_ID = "causation_id"
#: The option that carries the publisher's trace context (W3C ``traceparent``, ``tracestate``...),
#: written by an instrument such as the OpenTelemetry one; absent without one.
TRACE_CONTEXT = "trace_context"

#: Bounds of a trace context: entries, characters of a name and of a value. W3C's
#: ``traceparent`` has 55 characters and ``tracestate`` at most 512.
MAX_TRACE_ENTRIES = 8
MAX_TRACE_NAME_CHARACTERS = 64
MAX_TRACE_VALUE_CHARACTERS = 1024

#: The longest correlation id accepted (and, on a worker, the longest id of any kind): a
#: request id or a UUID fits many times over, and a forged message cannot make log lines long.
MAX_ID_CHARACTERS = 200

#: The latest ``published_at`` accepted in a message, in epoch milliseconds (the year 9999).
MAX_PUBLISHED_AT_MS = 253_402_300_799_999


# os.urandom read 4 KiB at a time, written as hex digits once, and handed out 20 digits per id:
# one system call per 400 ids instead of one per id, which publish() calls no handler wants
# would notice. A pool is the digits and a counter of the ids taken from them, swapped whole for
# the next: ``next()`` on an itertools.count is atomic under the GIL, so no two threads get the
# same digits, with no lock on the way (a lock took a fifth of an id's time). A free-threaded
# build of Python, where that is not promised, takes the lock. Emptied in a forked child, so
# that two workers forked from one parent never hand out the same digits.
_ENTROPY_BYTES = 4000
_DIGITS_PER_ID = 20
_LOCK_FREE = not sysconfig.get_config_var("Py_GIL_DISABLED")
_pool: tuple[str, Iterator[int]] = ("", itertools.count())
_refill_lock = threading.Lock()
# The ids' first 14 characters (their millisecond, and the version) for the latest millisecond:
# read and replaced as one tuple, so a thread never pairs a millisecond with another's prefix.
_prefix: tuple[int | None, str] = (None, "")
# The variant's hex digit: its two high bits are 10 (RFC 9562), its two low bits random.
_VARIANT_DIGIT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def _forget_entropy() -> None:
    global _pool, _refill_lock
    _pool = ("", itertools.count())
    _refill_lock = threading.Lock()  # a lock held by another thread at the fork stays held


os.register_at_fork(after_in_child=_forget_entropy)


def _refilled(spent: str) -> tuple[str, int]:
    """The caller found ``spent`` used up: a new pool, unless another thread made one first,
    and where the caller's digits in it start."""
    global _pool
    while True:
        with _refill_lock:
            if _pool[0] is spent:
                _pool = (os.urandom(_ENTROPY_BYTES).hex(), itertools.count())
            pool, taken = _pool
        start = next(taken) * _DIGITS_PER_ID
        if start + _DIGITS_PER_ID <= len(pool):
            return pool, start
        spent = pool


def uuid7(millis: int | None = None) -> str:
    """A new UUIDv7 (RFC 9562) as a str: 48 bits of Unix milliseconds, then 74 random bits.

    Ids made later sort after those made earlier (at millisecond precision), which keeps an
    index on them compact; within one millisecond their order is random. The random bits
    come from ``os.urandom``, so that no id can be guessed from others (a forger who could
    would know a future message's id), and two forked workers never share a sequence.

    Parameters:
      millis(int | None): The time, in Unix milliseconds; now if None.
    """
    global _prefix
    if millis is None:
        millis = time.time_ns() // 1_000_000
    cached, prefix = _prefix
    if cached != millis:
        digits = millis.to_bytes(6, "big").hex()
        prefix = f"{digits[:8]}-{digits[8:]}-7"
        _prefix = (millis, prefix)
    if _LOCK_FREE:
        pool, taken = _pool  # one read of one tuple: the digits and their counter always match
        start = next(taken) * _DIGITS_PER_ID
    else:
        with _refill_lock:
            pool, taken = _pool
            start = next(taken) * _DIGITS_PER_ID
    if start + _DIGITS_PER_ID > len(pool):
        pool, start = _refilled(pool)
    # The 74 random bits: 3 digits after the version's, the 2 low bits of the variant's digit,
    # then 15 digits. Cut from hex digits made in advance: 0.46 µs an id, against 0.85 for the
    # same id built as an int and formatted (and three times that with uuid.UUID).
    variant = _VARIANT_DIGIT[pool[start + 3]]
    return f"{prefix}{pool[start : start + 3]}-{variant}{pool[start + 4 : start + 7]}-{pool[start + 7 : start + 19]}"


class EventMetadata(NamedTuple):
    """What the bus adds to one published event, the same for each of its handlers.

    A named tuple, not a frozen dataclass: one is made per event published, and a tuple is
    made in a third of the time, which publish() calls no handler wants would notice.

    Attributes:
      event_id(str): Unique and time-ordered (a UUIDv7).
      published_at_ms(int): When publish() was called, in Unix milliseconds (UTC).
      correlation_id(str): The request or flow the event belongs to (see :func:`correlation`).
      causation_id(str | None): The ``event_id`` of the event whose handler published it, else None.
      trace_context(Mapping[str, str] | None): What the instruments added for tracing (W3C
        ``traceparent`` and ``tracestate``); None without instruments.
    """

    event_id: str
    published_at_ms: int
    correlation_id: str
    causation_id: str | None
    trace_context: Mapping[str, str] | None = None

    @property
    def published_at(self) -> datetime:
        """When publish() was called, as an aware UTC datetime."""
        return datetime.fromtimestamp(self.published_at_ms / 1000, tz=UTC)

    def options(self) -> dict[str, Any]:
        """The message options that carry it.

        A ``correlation_id`` equal to the ``event_id`` (an event published outside any
        handler or ``correlation()`` block) and a ``causation_id`` of None are left out, as
        :func:`from_options` reads them back: every byte of a message costs every publish().
        """
        options: dict[str, Any] = {EVENT_ID: self.event_id, PUBLISHED_AT: self.published_at_ms}
        if self.correlation_id != self.event_id:
            options[CORRELATION_ID] = self.correlation_id
        if self.causation_id is not None:
            options[CAUSATION_ID] = self.causation_id
        if self.trace_context is not None:
            options[TRACE_CONTEXT] = dict(self.trace_context)
        return options


@dataclass(frozen=True)
class EventContext:
    """The event a handler is running for, as :func:`current_context` returns it.

    Parameters:
      event_id(str): The event's id: the same for every handler of one publish of it, and
        on every redelivery; key idempotent writes on it.
      correlation_id(str): The request or flow the event belongs to.
      causation_id(str | None): The id of the event whose handler published this one, else None.
      published_at(datetime): When it was published (aware, UTC).
      attempt(int): 1 on the first try, 2 on the first retry, and so on.
      handler(str): The handler's name (its actor's name, ``package.module.ClassName``).
      partition_key(str | None): The event's partition key.
      message_id(str | None): Dramatiq's message id; None where no message was sent (inline,
        the test mailbox's inline mode, ``run_event``).
      trace_context(Mapping[str, str] | None): The publisher's trace context, for an instrument
        to continue its trace; None when it had none.
    """

    event_id: str
    correlation_id: str
    causation_id: str | None
    published_at: datetime
    attempt: int
    handler: str
    partition_key: str | None
    message_id: str | None
    trace_context: Mapping[str, str] | None = None


_current: ContextVar[EventContext | None] = ContextVar("dramatiq_eventbus_event_context", default=None)
_correlation: ContextVar[str | None] = ContextVar("dramatiq_eventbus_correlation", default=None)


def current_context() -> EventContext | None:
    """The context of the event whose handler is running in this thread or task, else None."""
    return _current.get()


@contextmanager
def running(context: EventContext | None) -> Iterator[EventContext | None]:
    """Make ``context`` the current one for the duration (a handler runs inside)."""
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)


@contextmanager
def correlation(correlation_id: str) -> Iterator[str]:
    """Give every event published in the block (and, through them, every event their handlers
    publish) ``correlation_id``, e.g. the id of the request being served.

    Parameters:
      correlation_id(str): Any string of 1 to :data:`MAX_ID_CHARACTERS` characters.

    Raises:
      TypeError: It is not a str.
      ValueError: It is empty or longer than :data:`MAX_ID_CHARACTERS`.
    """
    check_correlation_id(correlation_id)
    token = _correlation.set(correlation_id)
    try:
        yield correlation_id
    finally:
        _correlation.reset(token)


def check_correlation_id(correlation_id: object) -> None:
    """Refuse what a worker would refuse to carry as a correlation id.

    Raises:
      TypeError: It is not a str.
      ValueError: It is empty, longer than :data:`MAX_ID_CHARACTERS`, or not printable.
    """
    if not isinstance(correlation_id, str):
        raise TypeError(f"a correlation id must be a str, not {type(correlation_id).__qualname__}")
    if not 0 < len(correlation_id) <= MAX_ID_CHARACTERS:
        raise ValueError(f"a correlation id must have 1 to {MAX_ID_CHARACTERS} characters, not {len(correlation_id)}")
    if not correlation_id.isprintable():
        raise ValueError("a correlation id must be printable: it is written in log lines")


_new_tuple = tuple.__new__


def new_metadata() -> EventMetadata:
    """The metadata of an event published now, in this thread or task: its correlation is the
    innermost :func:`correlation` block's, else the running handler's event's, else its own id."""
    millis = time.time_ns() // 1_000_000
    event_id = uuid7(millis)
    handling = _current.get()
    correlation_id = _correlation.get()
    if correlation_id is None:
        correlation_id = event_id if handling is None else handling.correlation_id
    # tuple.__new__, as NamedTuple's own _make does: a NamedTuple's __new__ is Python code,
    # 0.25 µs against 0.11, which a publish() no handler wants notices (scenario 3).
    return _new_tuple(
        EventMetadata, (event_id, millis, correlation_id, None if handling is None else handling.event_id, None)
    )


def context_for(
    metadata: EventMetadata, *, handler: str, partition_key: str | None, attempt: int = 1, message_id: str | None = None
) -> EventContext:
    """The context a handler runs in for an event with ``metadata``."""
    return EventContext(
        event_id=metadata.event_id,
        correlation_id=metadata.correlation_id,
        causation_id=metadata.causation_id,
        published_at=metadata.published_at,
        attempt=attempt,
        handler=handler,
        partition_key=partition_key,
        message_id=message_id,
        trace_context=metadata.trace_context,
    )


def option_problem(options: Mapping[str, Any]) -> str | None:
    """Why a message's metadata options are not what the bus writes, or None.

    Every one may be absent (a message from a publisher older than the metadata); present,
    the ids are bounded strs and ``published_at`` a whole number of milliseconds.
    """
    for name in (EVENT_ID, CORRELATION_ID, CAUSATION_ID):
        value = options.get(name)
        if value is None:
            continue
        if type(value) is not str:
            return f"its option {name!r} is {_a(type(value).__name__)}, not a str"
        if not 0 < len(value) <= MAX_ID_CHARACTERS:
            return f"its option {name!r} has {len(value)} characters, not 1 to {MAX_ID_CHARACTERS}"
        if not value.isprintable():
            # Ids reach log lines (EventContextFilter) unescaped: no control characters.
            return f"its option {name!r} holds characters that are not printable"
    published_at = options.get(PUBLISHED_AT)
    if published_at is not None and (type(published_at) is not int or not 0 <= published_at <= MAX_PUBLISHED_AT_MS):
        return f"its option {PUBLISHED_AT!r} is not a time in Unix milliseconds"
    trace_context = options.get(TRACE_CONTEXT)
    if trace_context is not None:
        problem = trace_context_problem(trace_context)
        if problem is not None:
            return f"its option {TRACE_CONTEXT!r} {problem}"
    return None


def trace_context_problem(trace_context: object) -> str | None:
    """Why ``trace_context`` is not one a worker accepts, or None.

    A dict of at most :data:`MAX_TRACE_ENTRIES` printable str names and values, bounded in
    length: an instrument hands its values to a tracing library, and a forger's would reach it.

    Parameters:
      trace_context(object): A message's option, or what an instrument returned.
    """
    if type(trace_context) is not dict:
        return f"is {_a(type(trace_context).__name__)}, not a dict"
    if len(trace_context) > MAX_TRACE_ENTRIES:
        return f"has {len(trace_context)} entries, more than {MAX_TRACE_ENTRIES}"
    for name, value in trace_context.items():
        if type(name) is not str or not 0 < len(name) <= MAX_TRACE_NAME_CHARACTERS or not name.isprintable():
            return f"has a name that is not a printable str of 1 to {MAX_TRACE_NAME_CHARACTERS} characters"
        if type(value) is not str or len(value) > MAX_TRACE_VALUE_CHARACTERS or not value.isprintable():
            return f"has a value that is not a printable str of at most {MAX_TRACE_VALUE_CHARACTERS} characters"
    return None


def from_options(options: Mapping[str, Any], *, message_id: str, message_timestamp: int) -> EventMetadata:
    """The metadata a message carries; for one without any (sent by a publisher that predates
    it), or with an option the bus never writes, the message's own id and timestamp stand in.

    Parameters:
      options(Mapping[str, Any]): The message's options, which a forger may have written.
      message_id(str): Dramatiq's message id.
      message_timestamp(int): Dramatiq's enqueue time, in Unix milliseconds.
    """
    event_id = options.get(EVENT_ID)
    if option_problem(options) is not None or event_id is None:
        return EventMetadata(message_id, _millis(message_timestamp), message_id, None)
    correlation_id = options.get(CORRELATION_ID)
    published_at = options.get(PUBLISHED_AT)
    return EventMetadata(
        event_id,
        _millis(message_timestamp) if published_at is None else published_at,
        event_id if correlation_id is None else correlation_id,
        options.get(CAUSATION_ID),
        options.get(TRACE_CONTEXT),
    )


def _millis(value: object) -> int:
    return value if type(value) is int and 0 <= value <= MAX_PUBLISHED_AT_MS else 0


def _a(name: str) -> str:
    return f"an {name}" if name[:1] in "aeiou" else f"a {name}"


class EventContextFilter(logging.Filter):
    """A logging filter that adds ``event_id``, ``correlation_id`` and ``handler`` to every
    record, from :func:`current_context`: the running handler's, else ``"-"``.

    Install it on the handlers that format the records (a filter on a logger does not see
    the records its children propagate), in one line: ``EventContextFilter.install()``,
    then use ``%(event_id)s``, ``%(correlation_id)s`` and ``%(handler)s`` in a format.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        context = _current.get()
        if context is None:
            record.event_id = record.correlation_id = record.handler = "-"
        else:
            record.event_id = context.event_id
            record.correlation_id = context.correlation_id
            record.handler = context.handler
        return True

    @classmethod
    def install(cls, logger: logging.Logger | None = None) -> EventContextFilter:
        """Add one filter to every handler of ``logger`` (the root logger if None); return it.

        Parameters:
          logger(logging.Logger | None): Whose handlers; configure logging first.
        """
        installed = cls()
        for handler in (logging.getLogger() if logger is None else logger).handlers:
            handler.addFilter(installed)
        return installed
