"""The worker entry: ``dramatiq dramatiq_eventbus.worker``.

Importing this module configures the default bus from the ``EVENTBUS_*`` environment
variables and makes its broker Dramatiq's global broker, which the ``dramatiq`` CLI then
consumes: both bus queues, their delay queues, and every other queue declared on it.
"""

from __future__ import annotations

from . import configure_from_env

bus = configure_from_env()
broker = bus.broker
