"""The Django app: ``INSTALLED_APPS += ["dramatiq_eventbus.contrib.django"]`` and an ``EVENTBUS`` setting.

Needs the extra: ``pip install 'dramatiq-eventbus[django]'``. The app configures the default
bus (``dramatiq_eventbus.default_bus``) in ``AppConfig.ready()`` from ``settings.EVENTBUS``
(the keys of ``configure()`` in upper case; see :mod:`.conf`), on django_dramatiq's broker
when django_dramatiq is installed. A publish() inside ``transaction.atomic()`` is sent when
the transaction commits, through ``transaction.on_commit`` (see :mod:`.on_commit`), and
dropped when it rolls back. ``manage.py check`` reports a wrong setting; ``manage.py
eventbus routes|lanes|dead-letters`` runs the ``eventbus`` command with this configuration.
"""

from __future__ import annotations

try:
    import django  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError("dramatiq_eventbus.contrib.django needs Django: pip install 'dramatiq-eventbus[django]'") from exc
