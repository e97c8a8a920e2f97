"""Django settings of the real app (``dramatiq_eventbus.contrib.django``'s own ready()) with the outbox and
django_dramatiq: its ready() installs the outbox and the relay thread from ``EVENTBUS``, on django_dramatiq's broker.

Variables: those of :mod:`.settings`, plus ``DJANGO_ORM_BROKER_URL`` (``DRAMATIQ_BROKER``'s Redis),
``EVENTBUS_QUEUE`` and ``EVENTBUS_PARTITIONED_QUEUE`` (read here into ``EVENTBUS``, not by the app).
"""

from __future__ import annotations

import os
from typing import Any

from .settings import DATABASES, LOGGING_CONFIG, SECRET_KEY, USE_TZ

INSTALLED_APPS = ["dramatiq_eventbus.contrib.django", "django_dramatiq"]
DRAMATIQ_BROKER = {
    "BROKER": "dramatiq_eventbus.brokers.EventBusRedisBroker",
    "OPTIONS": {"url": os.environ.get("DJANGO_ORM_BROKER_URL", "redis://127.0.0.1:6379/3")},
    "MIDDLEWARE": ["dramatiq.middleware.Retries", "django_dramatiq.middleware.DbConnectionsMiddleware"],
}
EVENTBUS: dict[str, Any] = {
    "HANDLERS": "tests.django_orm.handlers:HANDLERS",
    "QUEUE": os.environ.get("EVENTBUS_QUEUE", "django_orm_q"),
    "PARTITIONED_QUEUE": os.environ.get("EVENTBUS_PARTITIONED_QUEUE", "django_orm_pq"),
    "OUTBOX": True,
    "OUTBOX_POLL_SECONDS": 0.1,
    "OUTBOX_RELAY_IN_WORKERS": True,
}

__all__ = [
    "DATABASES",
    "DRAMATIQ_BROKER",
    "EVENTBUS",
    "INSTALLED_APPS",
    "LOGGING_CONFIG",
    "SECRET_KEY",
    "USE_TZ",
]
