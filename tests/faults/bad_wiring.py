"""Wirings that are wrong in each way issue 2 names, for a worker to refuse at start.

Each is a mapping a ``dramatiq dramatiq_eventbus.worker`` loads through
``EVENTBUS_HANDLERS=tests.faults.bad_wiring:<NAME>``.
"""

from __future__ import annotations

from typing import Any

from dramatiq_eventbus import Handler

from .handlers import Tick, TickA


class NoHandleEvent:
    """A handler that forgot handle_event."""

    def interested(self, event: Tick) -> bool:
        return True


class PriorityTen(Handler):
    actor_options = {"priority": 10}

    def handle_event(self, event: Tick) -> None:
        pass


class UnknownOption(Handler):
    actor_options = {"max_attempts": 5}  # the reference's name; Dramatiq's is max_retries

    def handle_event(self, event: Tick) -> None:
        pass


UNRESOLVED: dict[Any, Any] = {"tests.faults.handlers:Tock": ["tests.faults.handlers:TickA"]}
NO_HANDLE_EVENT: dict[Any, Any] = {Tick: [NoHandleEvent]}
BAD_PRIORITY: dict[Any, Any] = {Tick: [PriorityTen]}
UNKNOWN_OPTION: dict[Any, Any] = {Tick: [UnknownOption]}
NOT_A_CLASS: dict[Any, Any] = {"order.created": [TickA]}
