"""The test mailbox: records what publish() would send, or runs it inline.

While a mailbox records, the bus hands it every publish() instead of the configured
backend (:meth:`EventBus.recording_to`), from any thread or asyncio task, whatever
configure() is called inside. Each event is decoded from the payload publish() encoded,
with the configured codec, so what a test sees is what a handler would receive, and an
event the broker could not carry fails the test.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from traceback import StackSummary
from typing import Any, Literal, get_args

from ..actors import delivery_context, handle_payload
from ..backends import DramatiqBackend
from ..brokers import support_for
from ..brokers.limits import DEFAULT_MAX_MESSAGE_BYTES, check_all_sendable
from ..bus import EventBus
from ..delivery import Delivery
from ..metadata import EventMetadata
from ._codec import codec_for
from ._stack import capture_stack, format_stack, location

Mode = Literal["default", "strict", "inline"]

#: The modes of :meth:`EventMailbox.set_mode`, the first being the one a mailbox starts in.
MODES: tuple[Mode, ...] = get_args(Mode)

#: How many events a failure message lists of each kind before it says "and N more".
SHOWN = 20

_MISSING = object()


@dataclass(frozen=True, eq=False)
class RecordedEvent:
    """One published event, as the mailbox recorded it.

    Parameters:
      event(object): The event after the codec's round trip: what a handler would receive.
      mode(str): ``"default"`` or ``"strict"``: the mode it was published in.
      handlers(tuple[str, ...]): The actor names of the handlers interested in it.
      published_at(traceback.StackSummary): The publisher's stack, outermost first, from
        the first frame of application code to the caller of publish().
      metadata(EventMetadata | None): Its ``event_id``, ``published_at`` time,
        ``correlation_id`` and ``causation_id``, as its messages would carry them.
    """

    event: object
    mode: Mode
    handlers: tuple[str, ...]
    published_at: StackSummary
    metadata: EventMetadata | None = None

    def describe(self) -> str:
        """The event's repr, its correlation and causation, and where it was published, on one line."""
        where = f"  (published at {location(self.published_at[-1])})" if self.published_at else ""
        meta = self.metadata
        ids = "" if meta is None else f"  [correlation_id={meta.correlation_id!r}, causation_id={meta.causation_id!r}]"
        return f"{self.event!r}{ids}{where}"


class EventMailbox:
    """A backend that records published events for a test's assertions.

    Install it with :func:`recording` or the ``event_bus`` pytest fixture; both also make
    it the mailbox that the module-level helpers, such as ``assert_event_published``, act
    on. It starts in ``"default"`` mode.

    Parameters:
      bus(EventBus | None): The bus whose publish() it receives; the default bus if None.
    """

    def __init__(self, bus: EventBus | None = None) -> None:
        if bus is None:
            from .. import default_bus

            bus = default_bus
        self.bus = bus
        self._lock = threading.RLock()
        self._mode: Mode = "default"
        self._records: list[RecordedEvent] = []
        self._pending: list[RecordedEvent] = []
        # The deliveries of recorded events that no stub worker has had yet: one that starts
        # later delivers them (see take_undelivered()), as production would have sent them.
        self._undelivered: list[Delivery] = []

    def __repr__(self) -> str:
        with self._lock:
            return f"<EventMailbox mode={self._mode!r} recorded={len(self._records)} pending={len(self._pending)}>"

    # -- modes ---------------------------------------------------------------------------------

    @property
    def mode(self) -> Mode:
        return self._mode

    def set_mode(self, mode: str) -> None:
        """Switch to ``"default"``, ``"strict"`` or ``"inline"``.

        Leaving ``"strict"`` first checks that every strict event was asserted.

        Raises:
          ValueError: For any other mode.
          AssertionError: Leaving strict mode with unasserted strict events; the mode stays strict.
        """
        __tracebackhide__ = True  # a failure points at the test's line, not into the mailbox
        if mode not in MODES:
            raise ValueError(f"event bus mode must be one of {', '.join(map(repr, MODES))}, not {mode!r}")
        with self._lock:
            if self._mode == "strict" and mode != "strict":
                self.assert_no_pending_strict_events()
            self._mode = mode

    # -- the backend ---------------------------------------------------------------------------

    def published(
        self, events: Sequence[object], deliveries: Sequence[Delivery], metadata: Sequence[EventMetadata] = ()
    ) -> None:
        """Record every event of one publish() call, including those no handler is interested in.

        The bus calls it with each event of the call in order and the deliveries of those
        some handler wants (maybe none). An event without deliveries makes the same round
        trip through the configured codec. The deliveries are kept for a stub worker that
        starts later (:meth:`take_undelivered`).
        """
        mode = self._mode
        self._check_sendable(deliveries)
        if mode == "inline":
            self._run_inline(deliveries)
            return
        self._record(self._decoded(events, deliveries), mode, metadata, undelivered=deliveries)

    def published_and_sent(
        self,
        events: Sequence[object],
        deliveries: Sequence[Delivery],
        send: Callable[[Sequence[Delivery]], None],
        metadata: Sequence[EventMetadata] = (),
    ) -> None:
        """Record one publish() call, as :meth:`published` does, and have ``send`` deliver it too.

        A stub worker's recorder calls it, so that a test both asserts on what was published
        and sees its handlers run. Nothing stays recorded if decoding or sending fails.

        Raises:
          RuntimeError: The mailbox is in inline mode, which runs the handlers here, while
            the stub worker is there to run them.
        """
        mode = self._mode
        if mode == "inline":
            raise RuntimeError(
                "the event bus mailbox is in inline mode, but a stub worker is running: inline mode runs handlers "
                "in the publisher, the stub worker runs them in its worker, and a handler must not run twice. "
                "Call set_event_bus_mode('default') or set_event_bus_mode('strict') to record events for the "
                "worker, or leave stub_worker out to run handlers inline"
            )
        self._check_sendable(deliveries)
        records = self._record(self._decoded(events, deliveries), mode, metadata)
        # Recorded before it is sent: a worker thread may handle it at once, and what its handler
        # publishes must come after it in the mailbox, as it did in time.
        try:
            if deliveries:
                send(deliveries)
        except BaseException:
            with self._lock:
                self._records = [record for record in self._records if record not in records]
                self._pending = [record for record in self._pending if record not in records]
            raise

    def take_undelivered(self) -> list[Delivery]:
        """The deliveries of the events recorded since the last call, for a stub worker to send.

        Each is returned once; events recorded while a stub worker delivered them are not among them.
        """
        with self._lock:
            taken, self._undelivered = self._undelivered, []
        return taken

    def _check_sendable(self, deliveries: Sequence[Delivery]) -> None:
        """Refuse, as the configured backend would, a message too large for the workers to read.

        Without this, a test of an event that production's publish() refuses would pass.
        Only a bus that sends messages, to a broker whose consumers have the limit, refuses.
        """
        config = self.bus.config
        backend = config.backend
        if not deliveries or not isinstance(backend, DramatiqBackend):
            return
        if support_for(config.broker).set_max_message_bytes is None:
            return
        messages = [backend.message_for(delivery) for delivery in deliveries]
        limit = config.arguments.get("max_message_bytes", DEFAULT_MAX_MESSAGE_BYTES)
        check_all_sendable(messages, [message.encode() for message in messages], limit)

    def _decoded(
        self, events: Sequence[object], deliveries: Sequence[Delivery]
    ) -> list[tuple[object, Sequence[Delivery]]]:
        groups = iter(_group_by_event(deliveries))
        group = next(groups, None)
        decoded: list[tuple[object, Sequence[Delivery]]] = []
        for event in events:
            if group is not None and group[0].event is event:
                decoded.append((self.bus.config.codec.decode(group[0].payload), group))
                group = next(groups, None)
            else:
                codec = codec_for(self.bus, type(event))
                decoded.append((codec.decode(codec.encode(event)), ()))
        return decoded

    def _run_inline(self, deliveries: Sequence[Delivery]) -> None:
        codec = self.bus.config.codec
        for delivery in deliveries:
            handle_payload(delivery.handler, codec, delivery.payload, delivery_context(delivery))

    def _record(
        self,
        decoded: Sequence[tuple[object, Sequence[Delivery]]],
        mode: Mode,
        metadata: Sequence[EventMetadata],
        undelivered: Sequence[Delivery] = (),
    ) -> list[RecordedEvent]:
        # Every event is decoded before any is recorded: a call that fails records nothing, as
        # a call that fails to encode sends nothing.
        stack = capture_stack()
        # A recorder called without metadata (by hand) records events without it.
        metas: Sequence[EventMetadata | None] = metadata if len(metadata) == len(decoded) else [None] * len(decoded)
        records = [
            RecordedEvent(event, mode, tuple(d.handler.name for d in group), stack, meta)
            for (event, group), meta in zip(decoded, metas, strict=True)
        ]
        with self._lock:
            self._records.extend(records)
            self._undelivered.extend(undelivered)
            if mode == "strict":
                self._pending.extend(records)
        return records

    # -- what was recorded ---------------------------------------------------------------------

    @property
    def records(self) -> tuple[RecordedEvent, ...]:
        """Every recorded event with its mode, handlers and stack, in publishing order."""
        with self._lock:
            return tuple(self._records)

    def published_events(self) -> list[object]:
        """Every recorded event, strict or default, asserted or not, in publishing order."""
        with self._lock:
            return [record.event for record in self._records]

    def pending_strict_events(self) -> list[object]:
        """The strict events not asserted yet, oldest first."""
        with self._lock:
            return [record.event for record in self._pending]

    # -- assertions ----------------------------------------------------------------------------

    def assert_published(self, expected: object, /, **attributes: Any) -> Any:
        """Find, remove from the pending list and return the oldest unasserted strict event that matches.

        ``expected`` is an event class, whose exact instances match when each named
        attribute equals its value; an event, matched by ``==``; or a predicate taking
        the event. The keywords ``correlation_id`` and ``causation_id`` match the event's
        metadata, not its attributes, whatever ``expected`` is. Default-mode events never match.

        Raises:
          AssertionError: Nothing matches; the message lists what was published.
        """
        __tracebackhide__ = True
        matches, wanted = _matcher(expected, attributes)
        with self._lock:
            for index, record in enumerate(self._pending):
                if matches(record):
                    del self._pending[index]
                    return record.event
            raise AssertionError(self._no_match_message(wanted, expected))

    def refute_published(self, expected: object, /, **attributes: Any) -> None:
        """Fail if any recorded event, strict or default, asserted or not, matches.

        Takes the same arguments as :meth:`assert_published`.

        Raises:
          AssertionError: Naming each matching event and where it was published.
        """
        __tracebackhide__ = True
        matches, wanted = _matcher(expected, attributes)
        with self._lock:
            found = [record for record in self._records if matches(record)]
        if found:
            raise AssertionError(
                "\n".join(
                    [
                        f"Expected no event matching {wanted}, but {_count(found, 'was', 'were')} published:",
                        *_listing(found),
                    ]
                )
            )

    def assert_no_pending_strict_events(self) -> None:
        """Fail if events published in strict mode were not asserted, showing each with its stack.

        Raises:
          AssertionError: ``Unasserted events published in strict mode:`` and, for each,
            its repr and ``Published at:`` with the publisher's stack.
        """
        __tracebackhide__ = True
        with self._lock:
            pending = list(self._pending)
        if pending:
            raise AssertionError(unasserted_report(pending))

    def _no_match_message(self, wanted: str, expected: object) -> str:
        pending = list(self._pending)
        asserted = [r for r in self._records if r.mode == "strict" and r not in pending]
        default = [r for r in self._records if r.mode == "default"]
        lines = [f"No unasserted strict event matches {wanted}."]
        if not self._records:
            lines.append("Nothing was published while the mailbox was recording.")
        for records, title in (
            (pending, "Unasserted strict events"),
            (asserted, "Strict events already asserted"),
            (default, "Default-mode events, which are never asserted (call set_event_bus_mode('strict') first)"),
        ):
            if records:
                lines.append(f"{title} ({len(records)}):")
                lines.extend(_listing(records))
        if self._mode != "strict" and not pending:
            lines.append(f"The mode is {self._mode!r}: only events published in strict mode can be asserted.")
        return "\n".join(lines)


def unasserted_report(records: Sequence[RecordedEvent]) -> str:
    """The strict-mode failure: each unasserted event's repr and the stack that published it."""
    lines = ["Unasserted events published in strict mode:"]
    for record in records:
        lines.append("")
        lines.append(f"  {record.event!r}")
        lines.append("    Published at:")
        lines.extend(format_stack(record.published_at, "      "))
    return "\n".join(lines)


#: The keywords of the assertions that match an event's metadata rather than its attributes.
METADATA_KEYWORDS = ("correlation_id", "causation_id")


def _matcher(expected: object, attributes: dict[str, Any]) -> tuple[Callable[[RecordedEvent], bool], str]:
    """What a record must be to match, and how the failure names it."""
    attributes = dict(attributes)
    wanted_metadata = {name: attributes.pop(name) for name in METADATA_KEYWORDS if name in attributes}
    matches_event, wanted = _event_matcher(expected, attributes)
    if not wanted_metadata:
        return (lambda record: matches_event(record.event)), wanted

    def matches(record: RecordedEvent) -> bool:
        metadata = record.metadata
        return (
            metadata is not None
            and all(getattr(metadata, name) == value for name, value in wanted_metadata.items())
            and matches_event(record.event)
        )

    shown = ", ".join(f"{name}={value!r}" for name, value in wanted_metadata.items())
    return matches, f"{wanted} (metadata {shown})"


def _event_matcher(expected: object, attributes: dict[str, Any]) -> tuple[Callable[[object], bool], str]:
    if isinstance(expected, type):
        event_class = expected

        def matches_class(event: object) -> bool:
            return type(event) is event_class and all(
                getattr(event, name, _MISSING) == value for name, value in attributes.items()
            )

        shown = ", ".join(f"{name}={value!r}" for name, value in attributes.items())
        return matches_class, event_class.__qualname__ + (f" with {shown}" if shown else "")
    if attributes:
        raise TypeError(f"attribute keywords ({', '.join(attributes)}) go with an event class, not with {expected!r}")
    if callable(expected):
        predicate = expected

        def matches_predicate(event: object) -> bool:
            # A predicate written for one event class reads attributes that another lacks:
            # that event does not match, as a pattern would not.
            try:
                return bool(predicate(event))
            except AttributeError:
                return False

        return matches_predicate, f"the predicate {getattr(predicate, '__qualname__', repr(predicate))}"
    return (lambda event: bool(event == expected)), repr(expected)


def _group_by_event(deliveries: Sequence[Delivery]) -> list[Sequence[Delivery]]:
    """One group per published event: publish() lists an event's deliveries together.

    An event object published twice in one call has two runs of deliveries back to back;
    a handler showing up again within a run is where the second begins.
    """
    groups: list[list[Delivery]] = []
    for delivery in deliveries:
        current = groups[-1] if groups else None
        if (
            current is not None
            and current[0].event is delivery.event
            and all(d.handler.name != delivery.handler.name for d in current)
        ):
            current.append(delivery)
        else:
            groups.append([delivery])
    return list(groups)


def _listing(records: Sequence[RecordedEvent]) -> list[str]:
    lines = [f"  {record.describe()}" for record in records[:SHOWN]]
    if len(records) > SHOWN:
        lines.append(f"  ... and {len(records) - SHOWN} more")
    return lines


def _count(records: Sequence[object], one: str, many: str) -> str:
    return f"1 {one}" if len(records) == 1 else f"{len(records)} {many}"


# -- the active mailbox ------------------------------------------------------------------------

_active: list[EventMailbox] = []
_active_lock = threading.Lock()


def current_mailbox() -> EventMailbox:
    """The innermost recording mailbox; the module-level helpers act on it.

    Raises:
      RuntimeError: No mailbox is recording.
    """
    mailbox = active_mailbox()
    if mailbox is None:
        raise RuntimeError(
            "no event bus mailbox is recording: use the event_bus pytest fixture, "
            "or wrap the code in `with dramatiq_eventbus.testing.recording():`"
        )
    return mailbox


def active_mailbox(bus: EventBus | None = None) -> EventMailbox | None:
    """The innermost recording mailbox (of ``bus``, if given), or None."""
    with _active_lock:
        return next((mailbox for mailbox in reversed(_active) if bus is None or mailbox.bus is bus), None)


@contextmanager
def recording(bus: EventBus | None = None, *, check: bool = True) -> Iterator[EventMailbox]:
    """Record what publish() sends, for the duration, in a fresh mailbox in ``"default"`` mode.

    For unittest and scripts; pytest tests use the ``event_bus`` fixture, which uses this.
    Every publish() on the bus, from any thread or asyncio task, reaches the mailbox, even
    after configure() is called again inside.

    Parameters:
      bus(EventBus | None): The bus to record; the default bus if None.
      check(bool): On a normal exit, fail if strict events were not asserted.

    Raises:
      AssertionError: At exit, with ``check``, if strict events were not asserted.
    """
    mailbox = EventMailbox(bus)
    with mailbox.bus.recording_to(mailbox):
        with _active_lock:
            _active.append(mailbox)
        try:
            yield mailbox
        finally:
            with _active_lock:
                _active.remove(mailbox)
    if check:
        mailbox.assert_no_pending_strict_events()
