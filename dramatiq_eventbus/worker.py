"""The worker entry: ``dramatiq dramatiq_eventbus.worker``.

Importing this module configures the default bus from the ``EVENTBUS_*`` environment
variables and makes its broker Dramatiq's global broker, which the ``dramatiq`` CLI then
consumes: both bus queues, their delay queues, and every other queue declared on it.
With ``EVENTBUS_OUTBOX_URL`` set, each worker process also relays the transactional outbox.
"""

from __future__ import annotations

from . import configure_from_env
from .middleware.outbox_relay import install_from_env

bus = configure_from_env()
broker = bus.broker
install_from_env(bus)
