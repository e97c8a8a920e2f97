"""Django settings of the app's tests (tests/django_app/suite_app.py, run by test_app.py in a subprocess).

Variables: ``POSTGRES_URL``, ``REDIS_URL`` (tests.support.servers' defaults), ``DJANGO_APP_SCHEMA``
(an empty schema of the run's own, first on the search path), ``DJANGO_APP_PREFIX`` (the bus's
queue names), ``DJANGO_APP_BROKEN`` (``keys`` or ``handlers``: a wrong EVENTBUS, for manage.py check).
django_dramatiq is listed after the app on purpose: its broker is there before any ready().
"""

from __future__ import annotations

import os
from typing import Any

from tests.support.django_settings import postgres_database
from tests.support.servers import POSTGRES_URL, REDIS_URL

_prefix = os.environ.get("DJANGO_APP_PREFIX", "django_app")

SECRET_KEY = "tests-only"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = ["dramatiq_eventbus.contrib.django", "django_dramatiq"]
_database = postgres_database(POSTGRES_URL, os.environ.get("DJANGO_APP_SCHEMA", "public"))
# Two aliases of one database: EVENTBUS["DATABASE"] picks whose transactions publish() follows.
DATABASES = {"default": dict(_database), "other": dict(_database)}
DRAMATIQ_BROKER = {
    "BROKER": "dramatiq_eventbus.brokers.EventBusRedisBroker",
    "OPTIONS": {"url": REDIS_URL},
    "MIDDLEWARE": [
        "dramatiq.middleware.AgeLimit",
        "dramatiq.middleware.TimeLimit",
        "dramatiq.middleware.Retries",
        "django_dramatiq.middleware.DbConnectionsMiddleware",
    ],
}
EVENTBUS: dict[str, Any] = {
    "HANDLERS": "tests.django_app.handlers:HANDLERS",
    "QUEUE": f"{_prefix}_q",
    "PARTITIONED_QUEUE": f"{_prefix}_pq",
}
_broken = os.environ.get("DJANGO_APP_BROKEN")
if _broken == "keys":
    EVENTBUS = {"HANDLER": "tests.django_app.handlers:HANDLERS", "QUEUE": 5, "BROKER_URL": "redis://127.0.0.1"}
elif _broken == "handlers":
    EVENTBUS = {"HANDLERS": "tests.django_app.no_such_module:HANDLERS"}
LOGGING_CONFIG = None
