"""Dead letters you can work with: read, replay and purge what the workers dead-lettered.

A message whose handler failed for good, or that a worker refused, waits in its queue's
dead-letter queue (``<queue>.XQ``) until the broker expires it (7 days by default).
:class:`DeadLetters` reads those queues on Redis and RabbitMQ (and a StubBroker's, in tests),
sends a dead letter back to its handler with its retries reset, or removes it. The
``eventbus dead-letters`` command is built on it::

    from dramatiq_eventbus import default_bus
    from dramatiq_eventbus.dead_letters import DeadLetters

    letters = DeadLetters(default_bus)
    failed = letters.list(handler="shop.notifications.handlers.OrderConfirmation", older_than=60)
    outcome = letters.replay(failed)          # once the bug is fixed
    letters.purge(letters.list(event_type="shop.orders.events:OrderPlaced"))

Everything in a dead-letter queue may have been written by someone else than the bus: a
body is never unpickled or run to be listed, one over ``max_message_bytes`` is not parsed,
one that cannot be read is listed as unreadable (with what it can be known by), every value
shown is escaped, and, where the bus has a secret key, only a message whose signature
verifies is replayed (and signed again on its way, under a new message id).
"""

from __future__ import annotations

import argparse
import builtins
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dramatiq.common import current_millis
from dramatiq.message import Message

from .actors import is_handler_actor
from .backends import DramatiqBackend
from .brokers import BROKER_ERRORS, support_for
from .brokers.inspection import Refusal, inspect_body
from .brokers.support import DeadLetterQueue, StoredDeadLetter
from .bus import BusConfig, EventBus
from .environment import arguments_from_env
from .errors import ConfigurationError, EventBusError
from .middleware.authentication import REFUSED, MessageAuthentication
from .untrusted import REASON_CHARACTERS, escaped, shown

#: How many dead letters :meth:`DeadLetters.list` returns unless told otherwise.
DEFAULT_LIMIT = 100

#: How many dead letters of each queue are looked at, at most, to find those selected.
DEFAULT_SCAN = 10_000

#: Options that say how a message failed. A replay drops them, so that its handler gets all its
#: retries again: Dramatiq's (``retries``, ``traceback``, ``requeue_timestamp``, a delayed
#: retry's ``eta``, the Redis id) and the bus's reason for refusing it.
FAILURE_OPTIONS = frozenset(("retries", "traceback", "requeue_timestamp", "eta", "redis_message_id", REFUSED))

#: The option in which a replayed message names the dead letter it was sent from.
REPLAYED_FROM = "replayed_from"


@dataclass(frozen=True)
class DeadLetter:
    """One dead-lettered message, as read from its queue.

    Every value but ``queue_name`` and ``location`` comes from the message, which anyone with
    access to the broker may have written: pass them through
    :func:`~dramatiq_eventbus.untrusted.shown` before a log line or a terminal.

    Parameters:
      message_id(str | None): Dramatiq's message id; None when the body could not be read that far.
      queue_name(str): The queue it was dead-lettered from.
      location(str): What its dead-letter queue knows it by: its Redis id on Redis, the
        SHA-256 of its body on RabbitMQ. Selects an unreadable one too.
      handler(str | None): The handler's actor name; None when unreadable.
      event_type(str | None): The event's type name.
      partition_key(str | None): The event's partition key.
      event_id(str | None): The event's id (the metadata's).
      dead_lettered_at(datetime | None): When it was dead-lettered (UTC); None where the broker
        does not say (a StubBroker).
      age_seconds(float | None): How long ago that was, when read.
      attempts(int): How many times it was delivered to its handler. On RabbitMQ, which
        dead-letters a message as it was delivered, the last delivery counts as an attempt
        even when the worker refused it unrun.
      last_failure(str | None): The last failure it records: the exception's line of the
        traceback Dramatiq's Retries wrote, or why the bus refused it (escaped). On RabbitMQ,
        the failure of the attempt before the last (the last one is in the worker's log line).
      problem(str | None): Why it cannot be read, for an unreadable one; None otherwise.
      message(Message | None): The message itself; None when unreadable.
    """

    message_id: str | None
    queue_name: str
    location: str
    handler: str | None = None
    event_type: str | None = None
    partition_key: str | None = None
    event_id: str | None = None
    dead_lettered_at: datetime | None = None
    age_seconds: float | None = field(default=None, compare=False)  # it grows
    attempts: int = 0
    last_failure: str | None = None
    problem: str | None = None
    message: Message[Any] | None = field(default=None, repr=False, compare=False)

    @property
    def readable(self) -> bool:
        """Whether its body could be read as a message (it has no ``problem``)."""
        return self.problem is None


@dataclass(frozen=True)
class ReplayOutcome:
    """What :meth:`DeadLetters.replay` did.

    Parameters:
      replayed(tuple[DeadLetter, ...]): Sent back to their handlers and removed from their
        dead-letter queues (on a dry run: those that would be).
      refused(tuple[tuple[DeadLetter, str], ...]): Left where they are, each with why.
      dry_run(bool): Nothing was sent or removed.
      not_removed(tuple[DeadLetter, ...]): Of those replayed, the ones not found in their
        dead-letter queue to be removed afterwards: removed meanwhile (by a replay or purge at
        the same time), or, on RabbitMQ, held by another reader. Purge them before replaying again.
    """

    replayed: tuple[DeadLetter, ...]
    refused: tuple[tuple[DeadLetter, str], ...]
    dry_run: bool = False
    not_removed: tuple[DeadLetter, ...] = ()


class ReplayFailed(EventBusError):
    """A replay stopped: the broker failed to send a message, or to remove one that was sent.

    Parameters:
      message(str): What happened and what to do.
      replayed(tuple[DeadLetter, ...]): Those replayed before it stopped.
    """

    def __init__(self, message: str, replayed: tuple[DeadLetter, ...]) -> None:
        super().__init__(message)
        self.replayed = replayed


class DeadLetters:
    """The dead letters of a configured bus's queues: list, get, replay and purge them.

    Parameters:
      bus(EventBus): A configured bus; its broker, codec, secret key and lanes are used.
      scan(int): How many dead letters of each queue are looked at, at most, to find the
        selected ones (a dead-letter queue may hold anything, in any number).

    Raises:
      ConfigurationError: The bus is not configured, or its broker keeps no dead letters the
        bus can read (any broker but Redis, RabbitMQ and a StubBroker).
    """

    def __init__(self, bus: EventBus, *, scan: int = DEFAULT_SCAN) -> None:
        config = bus.config
        queue = support_for(config.broker).dead_letters
        if queue is None:
            raise ConfigurationError(
                f"the bus's broker, a {type(config.broker).__name__}, keeps no dead letters the bus can read: "
                f"dead letters can be listed, replayed and purged on Redis and RabbitMQ brokers"
            )
        if isinstance(scan, bool) or not isinstance(scan, int) or scan < 1:
            raise ConfigurationError(f"scan must be a whole number of at least 1, not {scan!r}")
        self.bus = bus
        self.scan = scan
        self._queue: DeadLetterQueue = queue
        self._max_bytes: int = config.arguments.get("max_message_bytes") or 0
        self._authentication = MessageAuthentication(config.signer)

    @property
    def _config(self) -> BusConfig:
        return self.bus.config

    # -- reading -------------------------------------------------------------------------------

    def list(
        self,
        *,
        queues: Sequence[str] | None = None,
        handler: str | None = None,
        event_type: str | None = None,
        older_than: float | None = None,
        message_ids: Iterable[str] = (),
        limit: int = DEFAULT_LIMIT,
    ) -> builtins.list[DeadLetter]:
        """The dead letters selected, oldest first, at most ``limit`` of them.

        An unreadable dead letter is selected by no ``handler`` or ``event_type`` filter, and
        by its ``location`` as well as its ``message_id``.

        Parameters:
          queues(Sequence[str] | None): The queues whose dead letters to read; default the bus's two.
          handler(str | None): The handler's actor name, or its class's name alone (``OrderConfirmation``).
          event_type(str | None): The event's type name (``shop.orders.events:OrderPlaced``), or its
            class's name alone.
          older_than(float | None): Only those dead-lettered at least this many seconds ago
            (none whose time the broker does not keep).
          message_ids(Iterable[str]): Only these (message ids or locations).
          limit(int): The most returned.

        Raises:
          ConfigurationError: A ``limit`` below 1, or a negative ``older_than``.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigurationError(f"limit must be a whole number of at least 1, not {limit!r}")
        if older_than is not None and not older_than >= 0:
            raise ConfigurationError(f"older_than must be a number of seconds of at least 0, not {older_than!r}")
        wanted = frozenset(message_ids)
        found: builtins.list[DeadLetter] = []
        for queue_name in self.queue_names(queues):
            matched = 0
            now = current_millis() / 1000
            stored = self._queue.read(queue_name, scan=self.scan, max_bytes=self._max_bytes)
            try:
                for letter in (self._letter(queue_name, one, now) for one in stored):
                    if self._selects(letter, handler, event_type, older_than, wanted):
                        found.append(letter)
                        matched += 1
                        if matched >= limit:
                            break
            finally:
                # Closed when done with, even early: on RabbitMQ, that puts back what was taken.
                close = getattr(stored, "close", None)
                if close is not None:
                    close()
        found.sort(key=lambda letter: -1.0 if letter.age_seconds is None else -letter.age_seconds)
        return found[:limit]

    @staticmethod
    def _selects(
        letter: DeadLetter,
        handler: str | None,
        event_type: str | None,
        older_than: float | None,
        wanted: frozenset[str],
    ) -> bool:
        age = letter.age_seconds
        return (
            _named(letter.handler, handler, ".")
            and _named(letter.event_type, event_type, ":.")
            and (older_than is None or (age is not None and age >= older_than))
            and (not wanted or letter.message_id in wanted or letter.location in wanted)
        )

    def get(self, message_id: str, *, queues: Sequence[str] | None = None) -> DeadLetter | None:
        """The dead letter with this message id (or location), or None.

        Parameters:
          message_id(str): Its message id, or its location for an unreadable one.
          queues(Sequence[str] | None): Where to look; default the bus's two queues.
        """
        found = self.list(queues=queues, message_ids=[message_id], limit=1)
        return found[0] if found else None

    def event(self, letter: DeadLetter) -> object:
        """The event ``letter`` carries, decoded with the bus's codec.

        Nothing is run to decode it: the typed codec only reads JSON, and the pickle codec
        unpickles only a payload signed with the bus's key.

        Raises:
          EventBusError: It is unreadable, or the codec cannot decode its payload (the
            error, an EventDecodeError, says why).
        """
        if letter.message is None or len(letter.message.args) != 1:
            raise EventBusError(f"dead letter {shown(letter.location)} holds no event the bus can read")
        return self._config.codec.decode(letter.message.args[0])

    # -- changing ------------------------------------------------------------------------------

    def replay_problem(self, letter: DeadLetter) -> str | None:
        """Why ``letter`` cannot be replayed, or None when it can."""
        message = letter.message
        if message is None:
            return f"it cannot be read ({letter.problem}); purge it"
        broker = self._config.broker
        if not is_handler_actor(broker, message.actor_name):
            return (
                f"its actor {shown(message.actor_name)} is not a handler of this configuration: "
                f"run the command with the configuration that dead-lettered it"
            )
        problem = self._authentication.problem(broker, _fresh(message))
        if problem is not None:
            return (
                f"{problem}. Only a message the bus's key signed is replayed (it is signed again on its way): "
                f"purge it if the bus did not send it"
            )
        return None

    def replay(self, letters: Iterable[DeadLetter], *, dry_run: bool = False) -> ReplayOutcome:
        """Send each dead letter back to its handler with its retries reset, then remove it from
        its dead-letter queue, once the broker took it.

        The message goes out under a new message id, signed again where the bus has a key,
        with the failure options (:data:`FAILURE_OPTIONS`) dropped and ``replayed_from``
        naming the dead letter's id. A partitioned event goes to the end of its lane, behind
        the events of its key published since. Two replays of the same dead letter at once
        both send it.

        Parameters:
          letters(Iterable[DeadLetter]): What :meth:`list` returned, or part of it.
          dry_run(bool): Check each, and send or remove nothing.

        Raises:
          ReplayFailed: The broker failed; it says which were replayed and what to do.
        """
        replayed: builtins.list[DeadLetter] = []
        refused: builtins.list[tuple[DeadLetter, str]] = []
        not_removed: builtins.list[DeadLetter] = []
        backend = self._backend()
        for letter in letters:
            problem = self.replay_problem(letter)
            if problem is not None:
                refused.append((letter, problem))
                continue
            if not dry_run and not self._send_again(backend, letter, tuple(replayed)):
                not_removed.append(letter)
            replayed.append(letter)
        return ReplayOutcome(tuple(replayed), tuple(refused), dry_run, tuple(not_removed))

    def purge(self, letters: Iterable[DeadLetter], *, dry_run: bool = False) -> tuple[DeadLetter, ...]:
        """Remove dead letters from their queues; return them (on a dry run, remove nothing).

        Parameters:
          letters(Iterable[DeadLetter]): What :meth:`list` returned, or part of it.
          dry_run(bool): Remove nothing.
        """
        chosen = tuple(letters)
        if not dry_run:
            by_queue: dict[str, set[str]] = {}
            for letter in chosen:
                by_queue.setdefault(letter.queue_name, set()).add(letter.location)
            for queue_name, locations in by_queue.items():
                self._queue.remove(queue_name, locations, scan=self.scan)
        return chosen

    # -- helpers -------------------------------------------------------------------------------

    def queue_names(self, queues: Sequence[str] | None) -> tuple[str, ...]:
        """``queues`` without repeats; the bus's two queues when None or empty."""
        if queues:
            return tuple(dict.fromkeys(queues))
        configured = self._config.queues
        return (configured.default, configured.partitioned)

    def _letter(self, queue_name: str, stored: StoredDeadLetter, now: float) -> DeadLetter:
        location, body, size, at = stored
        when = None if at is None else datetime.fromtimestamp(at, UTC)
        age = None if at is None else max(0.0, now - at)
        if size > self._max_bytes:
            read: Message[Any] | Refusal = Refusal(
                f"it is {size:,} bytes, more than max_message_bytes ({self._max_bytes:,}), and was not read"
            )
        else:
            read = inspect_body(body, self._config.broker.actors, queue_name, max_bytes=self._max_bytes)
        if isinstance(read, Refusal):
            return DeadLetter(
                read.message_id, queue_name, location, dead_lettered_at=when, age_seconds=age, problem=read.reason
            )
        options = read.options
        retries = options.get("retries") or 0
        return DeadLetter(
            str(read.message_id),
            queue_name,
            location,
            handler=read.actor_name,
            event_type=_text(options.get("event_type")),
            partition_key=_text(options.get("partition_key")),
            event_id=_text(options.get("event_id")),
            dead_lettered_at=when,
            age_seconds=age,
            attempts=int(retries) + (0 if self._queue.keeps_last_failure else 1),
            last_failure=self._failure(read),
            message=read,
        )

    def _failure(self, message: Message[Any]) -> str | None:
        refused = message.options.get(REFUSED)
        if refused:
            return f"refused: {escaped(str(refused), REASON_CHARACTERS)}"
        trace = message.options.get("traceback")
        if isinstance(trace, str) and trace.strip():
            return escaped(trace.rstrip().rsplit("\n", 1)[-1].strip(), REASON_CHARACTERS)
        # A consumer that refuses a message as it reads it dead-letters it as it came: the reason
        # is the bus's check's, which says the same again.
        problem = self._authentication.problem(self._config.broker, message)
        return None if problem is None else f"refused: {problem}"

    def _backend(self) -> DramatiqBackend:
        config = self._config
        if isinstance(config.backend, DramatiqBackend):
            return config.backend
        return DramatiqBackend(config.broker, lanes=config.lanes, signer=config.signer)

    def _send_again(self, backend: DramatiqBackend, letter: DeadLetter, before: tuple[DeadLetter, ...]) -> bool:
        """Send ``letter`` again, then remove it; return whether it was found to be removed."""
        assert letter.message is not None  # replay_problem said so
        named = f"dead letter {shown(letter.message_id)} (for {letter.handler}) of queue {letter.queue_name!r}"
        try:
            backend.send_again([_fresh(letter.message)], [{REPLAYED_FROM: letter.message_id}])
        except EventBusError as exc:
            raise ReplayFailed(f"could not replay {named}; it is still dead-lettered: {exc}", before) from exc
        try:
            return self._queue.remove(letter.queue_name, [letter.location], scan=self.scan) > 0
        except Exception as exc:
            raise ReplayFailed(
                f"replayed {named}, but could not remove it from the dead-letter queue ({type(exc).__name__}: "
                f"{escaped(str(exc), REASON_CHARACTERS)}): purge it (--message-id {letter.message_id}) before "
                f"replaying again, or it runs twice",
                (*before, letter),
            ) from exc


def _fresh(message: Message[Any]) -> Message[Any]:
    """``message`` as its handler first got it: no failure options, and a new timestamp, so that
    an actor's ``max_age`` counts from the replay. Its id and signature are kept, to be checked."""
    return Message(
        queue_name=message.queue_name,
        actor_name=message.actor_name,
        args=tuple(message.args),
        kwargs=dict(message.kwargs),
        options={key: value for key, value in message.options.items() if key not in FAILURE_OPTIONS},
        message_id=str(message.message_id),
        message_timestamp=current_millis(),
    )


def _named(value: str | None, wanted: str | None, separators: str) -> bool:
    """Whether ``value`` is ``wanted``, or ends with it after one of ``separators``."""
    if wanted is None:
        return True
    if value is None:
        return False
    return value == wanted or any(value.endswith(separator + wanted) for separator in separators)


def _text(value: object) -> str | None:
    """A str option as it is; anything else (only a forger writes one) as JSON, cut."""
    if value is None or isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=True)[:REASON_CHARACTERS]
    except (TypeError, ValueError, RecursionError):
        return repr(type(value))


# -- the command: eventbus dead-letters ----------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``eventbus dead-letters`` subcommands and their options."""
    actions = parser.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="list dead letters, oldest first (exit status 1 when any is found)")
    _add_selection(listing)
    show = actions.add_parser("show", help="print one dead letter and its decoded event")
    show.add_argument("message_id", help="its message id (or, for an unreadable one, its location)")
    show.add_argument("--queue", action="append", metavar="QUEUE", help="where to look (default: both bus queues)")
    for name, text in (
        ("replay", "send dead letters back to their handlers with their retries reset, then remove them"),
        ("purge", "remove dead letters"),
    ):
        action = actions.add_parser(name, help=text)
        _add_selection(action)
        action.add_argument("--dry-run", action="store_true", help="say what would be done, and do nothing")
        action.add_argument("--all", action="store_true", help="select every dead letter when no filter is given")


def _add_selection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--queue",
        action="append",
        metavar="QUEUE",
        help="a queue whose dead letters to read (default: both bus queues)",
    )
    parser.add_argument("--handler", help="only this handler's (its actor name, or its class's name)")
    parser.add_argument("--event-type", help="only events of this type (its type name, or its class's name)")
    parser.add_argument(
        "--older-than", type=float, metavar="SECONDS", help="only those dead-lettered more than SECONDS ago"
    )
    parser.add_argument("--message-id", action="append", metavar="ID", help="only this one (repeatable)")
    parser.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help=f"the most selected (default {DEFAULT_LIMIT})")


def run(args: argparse.Namespace) -> int:
    """Run ``eventbus dead-letters``, configured from the EVENTBUS_* variables; return its exit status.

    Raises:
      EventBusError: A configuration or selection that is wrong (the caller prints it, status 2).
    """
    bus = EventBus().configure(**arguments_from_env())
    try:
        letters = DeadLetters(bus)
        try:
            return _ACTIONS[args.action](letters, args)
        except BROKER_ERRORS as exc:
            print(
                f"eventbus: the broker failed: {type(exc).__name__}: {escaped(str(exc), REASON_CHARACTERS)}",
                file=sys.stderr,
            )
            return 2
    finally:
        bus.broker.close()


def _selected(letters: DeadLetters, args: argparse.Namespace) -> builtins.list[DeadLetter]:
    return letters.list(
        queues=args.queue,
        handler=args.handler,
        event_type=args.event_type,
        older_than=args.older_than,
        message_ids=args.message_id or (),
        limit=args.limit,
    )


def _filtered(args: argparse.Namespace) -> bool:
    return any(value is not None for value in (args.handler, args.event_type, args.older_than, args.message_id))


def _list(letters: DeadLetters, args: argparse.Namespace) -> int:
    found = _selected(letters, args)
    if not found:
        print("no dead letter found")
        return 0
    for letter in found:
        print(_line(letter))
    if len(found) >= args.limit:
        print(f"(the first {args.limit}; --limit shows more)")
    return 1


def _line(letter: DeadLetter) -> str:
    """One dead letter in a line or two, every value from the message escaped."""
    age = "?" if letter.age_seconds is None else f"{letter.age_seconds:.1f}s"
    where = f"{letter.queue_name} {shown(letter.message_id)}"
    if not letter.readable:
        return f"{age:>9}  unreadable  {where} at {shown(letter.location)}\n           {letter.problem}"
    failure = "unknown" if letter.last_failure is None else letter.last_failure
    return (
        f"{age:>9}  attempts {letter.attempts:<3} {where}  {letter.handler}  event {shown(letter.event_type)} "
        f"key {shown(letter.partition_key)} id {shown(letter.event_id)}\n           last failure: {failure}"
    )


def _show(letters: DeadLetters, args: argparse.Namespace) -> int:
    letter = letters.get(args.message_id, queues=args.queue)
    if letter is None:
        print(
            f"eventbus: no dead letter {shown(args.message_id)} in {', '.join(letters.queue_names(args.queue))}",
            file=sys.stderr,
        )
        return 2
    print(_line(letter))
    message = letter.message
    if message is None:
        return 0
    options = {key: value for key, value in message.options.items() if key != "traceback"}
    print("options: " + json.dumps(options, ensure_ascii=True, sort_keys=True, default=repr))
    trace = message.options.get("traceback")
    if isinstance(trace, str):
        print("traceback:")
        for line in trace.rstrip().splitlines()[-_TRACEBACK_LINES:]:
            print("  " + escaped(line, REASON_CHARACTERS))
    try:
        event = letters.event(letter)
    except Exception as exc:  # a codec may raise anything on a payload it was not given by the bus
        print(f"event: not decoded ({type(exc).__name__}: {escaped(str(exc), REASON_CHARACTERS)}); its payload:")
        print(
            json.dumps(
                message.args[0] if len(message.args) == 1 else list(message.args),
                ensure_ascii=True,
                indent=2,
                default=repr,
            )
        )
    else:
        print("event: " + escaped(repr(event), _EVENT_CHARACTERS))
    return 0


def _change(letters: DeadLetters, args: argparse.Namespace) -> int:
    """``replay`` and ``purge``: what they did (or would do), one line each, and a count."""
    if not (_filtered(args) or args.all):
        print(
            f"eventbus: {args.action} needs a filter (--handler, --event-type, --older-than, --message-id) or --all",
            file=sys.stderr,
        )
        return 2
    chosen = _selected(letters, args)
    refused: tuple[tuple[DeadLetter, str], ...] = ()
    not_removed: tuple[DeadLetter, ...] = ()
    if args.action == "replay":
        outcome = letters.replay(chosen, dry_run=args.dry_run)
        done, refused, not_removed = outcome.replayed, outcome.refused, outcome.not_removed
    else:
        done = letters.purge(chosen, dry_run=args.dry_run)
    verb = f"would {args.action}" if args.dry_run else {"replay": "replayed", "purge": "purged"}[args.action]
    for letter in done:
        print(f"{verb} {letter.queue_name} {shown(letter.message_id)} at {shown(letter.location)} ({letter.handler})")
    for letter, reason in refused:
        print(f"refused {letter.queue_name} {shown(letter.message_id)} at {shown(letter.location)}: {reason}")
    for letter in not_removed:
        print(
            f"replayed {letter.queue_name} {shown(letter.message_id)}, but found no dead letter to remove at "
            f"{shown(letter.location)} (removed meanwhile, or held by another reader): purge it before replaying again"
        )
    print(f"{len(done)} {verb}" + (f", {len(refused)} refused" if args.action == "replay" else ""))
    return 2 if refused else 0


_ACTIONS: dict[str, Callable[[DeadLetters, argparse.Namespace], int]] = {
    "list": _list,
    "show": _show,
    "replay": _change,
    "purge": _change,
}

#: How much of a traceback, and of an event's repr, ``show`` prints.
_TRACEBACK_LINES = 40
_EVENT_CHARACTERS = 20_000
