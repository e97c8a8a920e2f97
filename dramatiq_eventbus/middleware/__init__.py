"""Dramatiq middleware the bus installs on its broker, one concern each."""

from __future__ import annotations

from dramatiq.broker import Broker

from .dead_letters import DeadLetterReasons


def install(broker: Broker) -> None:
    """Add the bus's middleware to ``broker`` once; configuring again adds nothing."""
    for middleware in (DeadLetterReasons,):
        if not any(isinstance(m, middleware) for m in broker.middleware):
            broker.add_middleware(middleware())


__all__ = ["DeadLetterReasons", "install"]
