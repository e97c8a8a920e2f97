"""``dramatiq tests.django_orm.worker``: a worker of a Django project (as django_dramatiq's setup module does).

Django is set up with :mod:`.settings`; the app's ready() configures the default bus from the
``EVENTBUS_*`` variables and, with ``DJANGO_ORM_RELAY_IN_WORKERS=1``, adds the outbox relay thread.
"""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.django_orm.settings")
django.setup()

from dramatiq_eventbus import default_bus as bus  # noqa: E402

broker = bus.broker

__all__ = ["broker", "bus"]
