"""The helpers a test calls: modes and assertions on the mailbox that is recording.

Each acts on the innermost recording mailbox, the one the ``event_bus`` fixture or
:func:`~dramatiq_eventbus.testing.recording` installed, and raises RuntimeError when
there is none.
"""

from __future__ import annotations

from typing import Any

from .mailbox import Mode, current_mailbox


def set_event_bus_mode(mode: str) -> None:
    """Switch the mailbox to ``"default"``, ``"strict"`` or ``"inline"``.

    ``"default"`` records events without checking them; ``"strict"`` records events that
    must each be asserted; ``"inline"`` runs the interested handlers in the publisher and
    records nothing. Leaving strict mode first checks that every strict event was asserted.

    Raises:
      ValueError: For any other mode.
      AssertionError: Leaving strict mode with unasserted strict events.
    """
    __tracebackhide__ = True  # pytest shows the test's line, not this helper's
    current_mailbox().set_mode(mode)


def get_event_bus_mode() -> Mode:
    """The mailbox's mode; a test starts in ``"default"``."""
    return current_mailbox().mode


def assert_event_published(expected: object, /, **attributes: Any) -> Any:
    """Return the oldest unasserted strict event that matches, and count it as asserted.

    ``assert_event_published(OrderCreated, order_id="123")`` matches an event of exactly
    that class whose named attributes equal the values; ``expected`` may also be an event,
    matched by ``==``, or a predicate taking the event. Default-mode events never match.

    Raises:
      AssertionError: Nothing matches; the message lists what was published.
    """
    __tracebackhide__ = True
    return current_mailbox().assert_published(expected, **attributes)


def refute_event_published(expected: object, /, **attributes: Any) -> None:
    """Fail if any recorded event, strict or default, matches; same arguments as assert_event_published."""
    __tracebackhide__ = True
    current_mailbox().refute_published(expected, **attributes)


def assert_no_pending_strict_events() -> None:
    """Fail, as the end of a strict test would, if strict events were not asserted."""
    __tracebackhide__ = True
    current_mailbox().assert_no_pending_strict_events()


def published_events() -> list[object]:
    """Every recorded event, strict or default, in publishing order."""
    return current_mailbox().published_events()
