"""The backend interface: where publish() hands its deliveries."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from ..delivery import Delivery


@runtime_checkable
class Backend(Protocol):
    """Receives every delivery of one publish() call at once.

    A backend sees all messages of a call together so that it can send them in one
    round trip, or refuse them all.
    """

    def deliver(self, deliveries: Sequence[Delivery]) -> None: ...
