"""What ``manage.py rundramatiq`` imports from this app: the bus's handler actors.

rundramatiq runs ``dramatiq django_dramatiq.setup ... <app>.tasks``: ``django.setup()`` runs
this app's ready(), which configured the default bus on django_dramatiq's broker and so
declared one actor per handler there. This module checks that it did, so that a worker
whose ``EVENTBUS`` setting is wrong stops at start with the reason instead of consuming nothing.
"""

from __future__ import annotations

from typing import Any

import dramatiq
from django.core.exceptions import ImproperlyConfigured

from ... import default_bus
from .apps import app_config

_config = app_config()
if _config is not None and _config.error is not None:
    raise ImproperlyConfigured(f"the event bus is not configured: {_config.error}")
if not default_bus.is_configured:
    raise ImproperlyConfigured("the event bus is not configured: set settings.EVENTBUS (see manage.py check)")

#: Each handler's actor, by actor name, on the broker the worker consumes.
actors: dict[str, dramatiq.Actor[Any, Any]] = dict(default_bus.config.actors)
