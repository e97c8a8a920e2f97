"""The app's configuration: in ``ready()``, the default bus is configured from ``settings.EVENTBUS``."""

from __future__ import annotations

import logging
import sys
from typing import Any

from django.apps import AppConfig, apps

from ...bus import EventBus
from ...errors import ConfigurationError
from . import conf
from .on_commit import OnCommitBinding

logger = logging.getLogger("dramatiq_eventbus.django")

#: django_dramatiq's app, whose broker (built from ``DRAMATIQ_BROKER``) the bus uses when installed.
DJANGO_DRAMATIQ = "django_dramatiq"


class EventBusConfig(AppConfig):  # type: ignore[misc, unused-ignore]
    """``dramatiq_eventbus.contrib.django``, labelled ``eventbus``.

    Attributes:
      settings(EventBusSettings | None): The parsed setting, once ready() read it.
      error(ConfigurationError | None): Why ready() could not configure the bus, for
        ``manage.py check`` to report (the app does not stop Django from starting).
      binding(OnCommitBinding | None): The on-commit binding, when ``ON_COMMIT`` is on.
    """

    name = "dramatiq_eventbus.contrib.django"
    label = "eventbus"
    verbose_name = "Event bus"
    default_auto_field = "django.db.models.BigAutoField"

    settings: conf.EventBusSettings | None = None
    error: ConfigurationError | None = None
    binding: OnCommitBinding | None = None

    def ready(self) -> None:
        from ... import default_bus
        from . import checks  # noqa: F401 - registers the system check

        self.error = None
        try:
            self.settings = conf.from_django()
            self.binding = configure(default_bus, self.settings, previous=self.binding)
        except ConfigurationError as exc:
            self.error = exc
            logger.error("The event bus is not configured: %s (manage.py check says more)", exc)


def configure(
    bus: EventBus, settings: conf.EventBusSettings, *, previous: OnCommitBinding | None = None
) -> OnCommitBinding | None:
    """Configure ``bus`` from the parsed setting and bind it to the database's transactions.

    Returns the binding (None with ``ON_COMMIT: False``); ``previous`` is unbound once the bus is configured.

    Raises:
      ConfigurationError: From configure(), or an ``OUTBOX: True`` without the outbox module.
    """
    wants_outbox = settings.outbox or bool(settings.raw.get("OUTBOX_RELAY_IN_WORKERS"))
    if wants_outbox:
        try:
            from .outbox import install_outbox, install_relay_in_workers
        except ImportError as exc:
            raise ConfigurationError(
                f"settings.{conf.SETTING} asks for the Django outbox, which cannot be loaded: {exc}"
            ) from exc
    bus.configure(**{"broker": shared_broker(), **settings.arguments})
    if previous is not None:
        previous.unbind()
    binding = OnCommitBinding(bus, using=settings.database).bind() if settings.on_commit else None
    if settings.outbox:
        # Added after the on-commit binding, so that its interceptor is asked first.
        install_outbox(bus, settings.raw)
    elif (loaded := sys.modules.get(f"{__package__}.outbox")) is not None:
        loaded.uninstall_outbox(bus)  # installed by an earlier configuration
    if settings.raw.get("OUTBOX_RELAY_IN_WORKERS"):
        install_relay_in_workers(bus, settings.raw)
    return binding


def shared_broker() -> Any:
    """django_dramatiq's broker when it is installed (it built it from ``DRAMATIQ_BROKER``), else None.

    django_dramatiq makes its broker Dramatiq's global broker as its app is created, before
    any app's ready(), so it is there whatever the order of ``INSTALLED_APPS``.
    """
    if not apps.is_installed(DJANGO_DRAMATIQ):
        return None
    import dramatiq

    return dramatiq.get_broker()


def app_config() -> EventBusConfig | None:
    """This app's configuration, found by name (a project may subclass it under another label).

    None when the app is not installed, or installed with an AppConfig that is not this one's subclass.
    """
    found = next((c for c in apps.get_app_configs() if c.name == EventBusConfig.name), None)
    return found if isinstance(found, EventBusConfig) else None
