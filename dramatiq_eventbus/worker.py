"""The worker entry: ``dramatiq dramatiq_eventbus.worker``.

Importing this module configures the default bus from the ``EVENTBUS_*`` environment
variables and makes its broker Dramatiq's global broker, which the ``dramatiq`` CLI then
consumes: both bus queues, their delay queues, and every other queue declared on it.
With ``EVENTBUS_OUTBOX_URL`` set, each worker process also relays the transactional outbox;
with ``EVENTBUS_METRICS_PORT`` set, the worker group serves its Prometheus metrics there.
"""

from __future__ import annotations

import os

from . import configure_from_env
from .middleware.outbox_relay import install_from_env

bus = configure_from_env()
broker = bus.broker
install_from_env(bus)

if os.environ.get("EVENTBUS_METRICS_PORT", "").strip():
    # Imported only then: the core never imports prometheus_client otherwise.
    try:
        from .contrib.prometheus import serve_from_env
    except ImportError as exc:
        raise ImportError(
            f"EVENTBUS_METRICS_PORT is set, but the metrics need prometheus_client ({exc}): "
            "pip install 'dramatiq-eventbus[prometheus]'"
        ) from exc
    serve_from_env(bus)
