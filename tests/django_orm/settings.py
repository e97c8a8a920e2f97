"""Django settings of the Django outbox and inbox tests: only the app, on PostgreSQL, in a schema of the run's own.

Variables: ``POSTGRES_URL`` (the tests' SQLAlchemy URL), ``DJANGO_ORM_SCHEMA`` (the schema, first
on the search path: the migrations create their tables there), ``DJANGO_ORM_RELAY_IN_WORKERS``.
The bus itself is configured from the ``EVENTBUS_*`` variables by :class:`.apps.EventBusTestConfig`.
"""

from __future__ import annotations

import os

from tests.support.django_settings import postgres_database

SECRET_KEY = "tests-only"
USE_TZ = True
INSTALLED_APPS = ["tests.django_orm.apps.EventBusTestConfig"]
DATABASES = {
    "default": postgres_database(
        os.environ.get("POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
        os.environ.get("DJANGO_ORM_SCHEMA", "public"),
    ),
    # Only for the relay URLs derived from them: never connected to.
    "files": {"ENGINE": "django.db.backends.sqlite3", "NAME": "/var/lib/shop/db.sqlite3"},
    "memory": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
}
EVENTBUS = {
    "OUTBOX": True,
    "OUTBOX_POLL_SECONDS": 0.1,
    "OUTBOX_RELAY_IN_WORKERS": os.environ.get("DJANGO_ORM_RELAY_IN_WORKERS") == "1",
}
LOGGING_CONFIG = None
