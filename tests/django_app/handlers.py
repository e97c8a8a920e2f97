"""The handlers of the app's tests: the test mailbox records their events; no worker runs them."""

from __future__ import annotations

from dataclasses import dataclass

from dramatiq_eventbus import Handler


@dataclass(frozen=True)
class Noted:
    n: int


class NoteTaker(Handler):
    def handle_event(self, event: Noted) -> None:
        pass


HANDLERS = {Noted: [NoteTaker]}
