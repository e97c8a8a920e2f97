"""The app under test, with a ready() of its own: what the Django app's ready() does for the outbox.

It configures the default bus from the ``EVENTBUS_*`` variables (unless configured already, as
in ``dramatiq dramatiq_eventbus.worker``), binds it to the transactions for on-commit publishing,
then calls the two entry points of :mod:`dramatiq_eventbus.contrib.django.outbox` as ``EVENTBUS``
says, in the app's order. The tests do not depend on the app's reading of ``EVENTBUS``.
"""

from __future__ import annotations

import os

from django.apps import AppConfig
from django.conf import settings


class EventBusTestConfig(AppConfig):
    name = "dramatiq_eventbus.contrib.django"
    label = "eventbus"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        import dramatiq_eventbus
        from dramatiq_eventbus.contrib.django.on_commit import OnCommitBinding
        from dramatiq_eventbus.contrib.django.outbox import install_outbox, install_relay_in_workers

        if "EVENTBUS_HANDLERS" not in os.environ:
            return  # manage.py migrate and the like
        bus = dramatiq_eventbus.default_bus
        if not bus.is_configured:
            dramatiq_eventbus.configure_from_env()
        OnCommitBinding(bus).bind()
        if settings.EVENTBUS.get("OUTBOX"):
            install_outbox(bus, settings.EVENTBUS)
        if settings.EVENTBUS.get("OUTBOX_RELAY_IN_WORKERS"):
            install_relay_in_workers(bus, settings.EVENTBUS)
