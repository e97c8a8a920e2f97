"""The app's system check: ``manage.py check`` (and runserver, migrate...) report a wrong ``EVENTBUS``."""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.conf import settings
from django.core import checks

from . import conf
from .apps import DJANGO_DRAMATIQ, app_config


@checks.register("dramatiq_eventbus")  # type: ignore[untyped-decorator, unused-ignore]
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Errors for the ``EVENTBUS`` setting: unknown keys, wrong types, and what configure() refused."""
    raw = getattr(settings, conf.SETTING, None)
    found = conf.problems(raw, databases=settings.DATABASES)
    messages: list[checks.CheckMessage] = [
        checks.Error(problem.message, hint=problem.hint, id=problem.id) for problem in found
    ]
    if isinstance(raw, dict) and "BROKER_URL" in raw and apps.is_installed(DJANGO_DRAMATIQ):
        messages.append(
            checks.Error(
                f"settings.{conf.SETTING}['BROKER_URL'] is set while django_dramatiq is installed.",
                hint=(
                    "The bus uses django_dramatiq's broker (settings.DRAMATIQ_BROKER), which rundramatiq "
                    "consumes; remove BROKER_URL, and name dramatiq_eventbus.brokers.EventBusRedisBroker "
                    "or EventBusRabbitmqBroker in DRAMATIQ_BROKER['BROKER']."
                ),
                id="dramatiq_eventbus.E005",
            )
        )
    config = app_config()
    error = config.error if config is not None else None
    if error is not None and not found:
        messages.append(
            checks.Error(
                f"The event bus could not be configured from settings.{conf.SETTING}: {error}",
                id="dramatiq_eventbus.E004",
            )
        )
    return messages
