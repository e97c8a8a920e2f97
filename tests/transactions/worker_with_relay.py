"""``dramatiq tests.transactions.worker_with_relay``: the bus's worker, with an outbox relay thread.

This is the two lines an application adds to its own worker module.
"""

from dramatiq_eventbus.middleware.outbox_relay import install_from_env
from dramatiq_eventbus.worker import broker, bus

install_from_env(bus)

__all__ = ["broker", "bus"]
