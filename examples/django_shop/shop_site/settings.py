"""Settings of the Django shop: PostgreSQL (a schema of its own), Redis or RabbitMQ, the event bus.

Variables:
  DJANGO_SHOP_BROKER: ``redis`` (default) or ``rabbitmq``.
  REDIS_URL, RABBITMQ_URL: The brokers (default: the local ports).
  POSTGRES_URL: The database, as a URL (default: postgresql://postgres@127.0.0.1:5432/test).
  DJANGO_SHOP_SCHEMA: The PostgreSQL schema the tables go in (default ``django_shop``).
  DJANGO_SHOP_QUEUE_PREFIX: Put before the bus's queue names (default ``shop_``).
  DJANGO_SHOP_SECRET_KEY: Signs the bus's messages (a development default otherwise).
"""

from __future__ import annotations

import os
from urllib.parse import unquote, urlsplit

DEBUG = os.environ.get("DJANGO_SHOP_DEBUG", "1") == "1"
SECRET_KEY = "django-shop-example-not-for-production"
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "shop_site.urls"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    # django_dramatiq first or not: it builds its broker before any app's ready().
    "django_dramatiq",
    "dramatiq_eventbus.contrib.django",
    "orders",
    "finances",
]

_postgres = urlsplit(os.environ.get("POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"))
SCHEMA = os.environ.get("DJANGO_SHOP_SCHEMA", "django_shop")
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _postgres.path.lstrip("/"),
        "USER": unquote(_postgres.username or ""),
        "PASSWORD": unquote(_postgres.password or ""),
        "HOST": _postgres.hostname or "",
        "PORT": str(_postgres.port or ""),
        # The shop's tables, and django_migrations, in a schema of their own.
        "OPTIONS": {"options": f"-c search_path={SCHEMA}"},
    }
}

# One broker configuration for django_dramatiq and the bus: the bus's own broker classes.
BROKER = os.environ.get("DJANGO_SHOP_BROKER", "redis")
_MIDDLEWARE = [
    "dramatiq.middleware.AgeLimit",
    "dramatiq.middleware.TimeLimit",
    "dramatiq.middleware.Callbacks",
    "dramatiq.middleware.Retries",
    "django_dramatiq.middleware.DbConnectionsMiddleware",
]
if BROKER == "rabbitmq":
    DRAMATIQ_BROKER = {
        "BROKER": "dramatiq_eventbus.brokers.EventBusRabbitmqBroker",
        "OPTIONS": {
            "url": os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"),
            "confirm_delivery": True,
            "max_priority": 10,
        },
        "MIDDLEWARE": _MIDDLEWARE,
    }
elif BROKER == "redis":
    DRAMATIQ_BROKER = {
        "BROKER": "dramatiq_eventbus.brokers.EventBusRedisBroker",
        "OPTIONS": {"url": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")},
        "MIDDLEWARE": _MIDDLEWARE,
    }
else:
    raise ValueError(f"DJANGO_SHOP_BROKER must be redis or rabbitmq, not {BROKER!r}")

_prefix = os.environ.get("DJANGO_SHOP_QUEUE_PREFIX", "shop_")
EVENTBUS = {
    "HANDLERS": "shop_site.event_handlers:HANDLERS",
    "QUEUE": f"{_prefix}events",
    "PARTITIONED_QUEUE": f"{_prefix}events_partitioned",
    "SECRET_KEY": os.environ.get("DJANGO_SHOP_SECRET_KEY", "django-shop-development-key"),
    "DEFAULT_ACTOR_OPTIONS": {"min_backoff": 100, "max_backoff": 2000},
    # The defaults, written out: publish() inside transaction.atomic() waits for the commit.
    "ON_COMMIT": True,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "INFO"},
}
