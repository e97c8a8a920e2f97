"""A broker module for ``dramatiq``: the bus from ``EVENTBUS_*`` with Dramatiq's own Prometheus
middleware beside the bus's metrics, as an application's own worker module would set them up."""

from __future__ import annotations

from dramatiq.middleware.prometheus import Prometheus

import dramatiq_eventbus
from dramatiq_eventbus.contrib.prometheus import serve_from_env

bus = dramatiq_eventbus.configure_from_env()
broker = bus.broker
broker.add_middleware(Prometheus())
serve_from_env(bus)
