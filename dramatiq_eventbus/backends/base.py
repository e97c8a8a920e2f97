"""The backend interfaces: where publish() hands its deliveries, and what turns them into messages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from dramatiq.message import Message

from ..delivery import Delivery


@runtime_checkable
class Backend(Protocol):
    """Receives every delivery of one publish() call at once.

    A backend sees all messages of a call together so that it can send them in one
    round trip, or refuse them all.
    """

    def deliver(self, deliveries: Sequence[Delivery]) -> None: ...


@runtime_checkable
class MessageBackend(Backend, Protocol):
    """A backend that sends each delivery as a Dramatiq message.

    The seam that publishing later goes through: an outbox stores what
    :meth:`message_for` builds, in the publishing transaction, and a relay hands the
    stored messages to :meth:`send_again` once they are committed.
    """

    def message_for(self, delivery: Delivery) -> Message[Any]:
        """The message that :meth:`deliver` would send for ``delivery``."""
        ...

    def send_again(self, stored: Sequence[Message[Any]], options: Sequence[Mapping[str, Any]]) -> None:
        """Send messages that :meth:`message_for` built earlier (maybe in another process),
        as this backend would send them now, each with ``options`` added.

        Raises:
          PublishError: The broker failed; it names what was sent and what was not.
        """
        ...
