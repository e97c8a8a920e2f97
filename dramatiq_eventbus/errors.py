"""The exceptions the bus raises.

Every error the library raises on purpose derives from :class:`EventBusError`,
so an application can catch the bus's failures without catching its own.
"""

from __future__ import annotations

from dramatiq.errors import Retry


class EventBusError(Exception):
    """Base class of every error raised by dramatiq-eventbus."""


class ConfigurationError(EventBusError):
    """The bus was configured with something it cannot use, or not configured at all."""


class PublishError(EventBusError):
    """The broker refused or dropped messages while publishing.

    Parameters:
      message(str): What went wrong.
      sent(tuple[str, ...]): Actor names of the messages the broker is known to have
        accepted before the failure. They will be processed.
      unsent(tuple[str, ...]): Actor names of the messages not confirmed: most often not
        written, but a lost reply can hide a write, so sending them again may duplicate.
    """

    def __init__(self, message: str, *, sent: tuple[str, ...] = (), unsent: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.sent = sent
        self.unsent = unsent


class InterestedFailed(EventBusError):
    """A handler's ``interested(event)`` raised, in publish(): nothing of that publish() was sent.

    The exception ``interested`` raised is this one's ``__cause__``.

    Parameters:
      handler(str): The handler's name, ``package.module.ClassName``.
      event(object): The event it was asked about.
      error(Exception): What ``interested`` raised.
    """

    def __init__(self, handler: str, event: object, error: Exception) -> None:
        shown_event = repr(event)
        if len(shown_event) > 200:  # an event of any size: the error stays a line
            shown_event = shown_event[:199] + "…"
        reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        super().__init__(
            f"{handler}.interested() raised {reason}, for the event "
            f"{type(event).__module__}.{type(event).__qualname__} {shown_event}; "
            f"nothing of this publish() was sent"
        )
        self.handler = handler
        self.event = event
        self.error = error


class AlreadyHandled(BaseException):
    """Raised into a handler whose event it already handled (an inbox holds its row): the bus
    ends the run there, as a success, and the message is acknowledged.

    Not an error, and a ``BaseException`` like ``asyncio.CancelledError``, so that a handler's
    ``except Exception`` does not swallow it and go on writing what the first run wrote (a
    second insert of the same key would fail the handler on every redelivery).

    Parameters:
      handler(str): The handler's name.
      event_id(str): The event's id.
    """

    def __init__(self, handler: str, event_id: str) -> None:
        super().__init__(f"{handler} already handled event {event_id}")
        self.handler = handler
        self.event_id = event_id


class EventDecodeError(EventBusError):
    """A payload could not be turned back into an event.

    A worker dead-letters such a message at once: retrying cannot fix it.
    """


class EventEncodeError(EventBusError, TypeError):
    """An event holds a value the codec cannot represent.

    It is a ``TypeError`` too, since the caller handed publish() a value of the wrong type.
    """


class HandlerFailed(EventBusError, Retry):
    """A handler returned ``Error(reason)``.

    In a worker this makes Dramatiq retry the message, and dead-letter it after the
    last attempt. The inline backend raises it to the publisher. It is a Dramatiq
    ``Retry``, so the worker logs the reason in one line instead of a traceback that
    would only point into the bus.

    Parameters:
      handler(str): The handler's qualified name.
      reason(object): What the handler gave as the reason.
    """

    def __init__(self, handler: str, reason: object) -> None:
        super().__init__(f"{handler}.handle_event failed: {reason}")
        self.handler = handler
        self.reason = reason
