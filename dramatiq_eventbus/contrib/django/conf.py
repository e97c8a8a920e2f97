"""The ``EVENTBUS`` setting, read in one place: what the app configures, and what ``manage.py check`` says.

The keys are ``configure()``'s arguments in upper case (``BROKER_URL`` for ``broker``), read
from its signature so that the two never drift apart, and three of the app's own::

    EVENTBUS = {
        "HANDLERS": "myproject.event_handlers:HANDLERS",  # required
        "SECRET_KEY": env("EVENTBUS_SECRET_KEY"),
        "ON_COMMIT": True,    # publish() inside transaction.atomic() waits for the commit
        "OUTBOX": False,      # write outbox rows in the transaction instead (the Django outbox)
        "DATABASE": "default",  # the connection whose transactions publish() follows
    }

Each value's type is checked here; everything else (a HANDLERS path that does not import, a
queue name, a key too short...) by ``configure()`` itself, whose ConfigurationError the app
keeps and ``manage.py check`` reports.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ...bus import EventBus
from ...errors import ConfigurationError
from ...registry import import_string

#: The setting's name in ``settings.py``.
SETTING = "EVENTBUS"

#: The upper-case key of each configure() argument; ``broker`` is ``BROKER_URL``, as its variable.
CONFIGURE_KEYS: dict[str, str] = {
    ("BROKER_URL" if name == "broker" else name.upper()): name
    for name in inspect.signature(EventBus.configure).parameters
    if name != "self"
}

#: The app's own keys and their defaults.
APP_DEFAULTS: dict[str, Any] = {"ON_COMMIT": True, "OUTBOX": False, "DATABASE": "default"}


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_text_list(value: object) -> bool:
    return isinstance(value, list | tuple) and all(isinstance(item, str | bytes) for item in value)


#: What each key takes, as a test and its description; configure() checks the rest.
_TYPES: dict[str, tuple[Callable[[object], bool], str]] = {
    "HANDLERS": (lambda v: isinstance(v, str | Mapping), "a 'pkg.module:ATTR' string or a dict"),
    "BROKER_URL": (lambda v: isinstance(v, str), "a redis://, amqp:// URL or 'stub'"),
    "QUEUE": (lambda v: isinstance(v, str), "a queue name"),
    "PARTITIONED_QUEUE": (lambda v: isinstance(v, str), "a queue name"),
    "DEFAULT_ACTOR_OPTIONS": (lambda v: isinstance(v, Mapping), "a dict of actor options"),
    "SECRET_KEY": (lambda v: isinstance(v, str | bytes), "a str or bytes"),
    "SECRET_KEYS": (_is_text_list, "a list of str or bytes"),
    "PICKLE_FALLBACK": (lambda v: isinstance(v, bool), "True or False"),
    "REDIS_URL": (lambda v: isinstance(v, str), "a redis:// URL"),
    "LANE_LEASE_SECONDS": (_is_number, "a number of seconds"),
    "LANE_STALL_SECONDS": (_is_number, "a number of seconds"),
    "REDIS_HEARTBEAT_SECONDS": (lambda v: v is None or _is_number(v), "a number of seconds"),
    "MAX_MESSAGE_BYTES": (lambda v: isinstance(v, int) and not isinstance(v, bool), "a whole number of bytes"),
    "HANDLER_FACTORY": (lambda v: isinstance(v, str) or callable(v), "a callable or a 'pkg.module:name' string"),
    "ON_COMMIT": (lambda v: isinstance(v, bool), "True or False"),
    "OUTBOX": (lambda v: isinstance(v, bool), "True or False"),
    "DATABASE": (lambda v: isinstance(v, str), "a key of settings.DATABASES"),
}


def _outbox_keys() -> tuple[str, ...] | None:
    """The outbox's keys (``OUTBOX_DATABASE``...), which the outbox reads and checks; None if it cannot load."""
    try:
        from .outbox import SETTINGS
    except ImportError:  # without SQLAlchemy: the outbox says so itself when OUTBOX is True
        return None
    return tuple(SETTINGS)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the setting, for a system check.

    Parameters:
      id(str): The check's id, e.g. ``dramatiq_eventbus.E002``.
      message(str): What is wrong.
      hint(str | None): What to do.
    """

    id: str
    message: str
    hint: str | None = None


@dataclass(frozen=True)
class EventBusSettings:
    """The ``EVENTBUS`` setting, checked.

    Parameters:
      arguments(dict[str, Any]): The configure() keywords it gives (``broker`` only with BROKER_URL).
      on_commit(bool): Whether publish() inside ``transaction.atomic()`` waits for the commit.
      outbox(bool): Whether the Django outbox takes publish() calls inside transactions.
      database(str): The database alias whose transactions publish() follows.
      raw(Mapping[str, Any]): The setting as written.
    """

    arguments: dict[str, Any]
    on_commit: bool = True
    outbox: bool = False
    database: str = "default"
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)  # it holds the secret key


def problems(raw: object, *, databases: Mapping[str, Any] | None = None) -> list[Problem]:
    """Everything wrong with the setting's keys and value types; empty when it can be parsed."""
    if raw is None:
        return [
            Problem(
                "dramatiq_eventbus.E001",
                f"settings.{SETTING} is not set, so the event bus is not configured.",
                f'Add {SETTING} = {{"HANDLERS": "myproject.event_handlers:HANDLERS"}} to your settings.',
            )
        ]
    if not isinstance(raw, Mapping):
        return [Problem("dramatiq_eventbus.E001", f"settings.{SETTING} must be a dict, not {type(raw).__name__}.")]
    found: list[Problem] = []
    outbox_keys = _outbox_keys()
    known = [*CONFIGURE_KEYS, *APP_DEFAULTS, *(outbox_keys or ())]
    for key in raw:
        if key in known or (outbox_keys is None and str(key).startswith("OUTBOX_")):
            continue
        close = difflib.get_close_matches(str(key).upper(), known, n=1)
        hint = f"Did you mean {close[0]!r}?" if close else f"The keys are: {', '.join(sorted(known))}."
        found.append(Problem("dramatiq_eventbus.E002", f"settings.{SETTING} has an unknown key {key!r}.", hint))
    if "HANDLERS" not in raw:
        found.append(
            Problem(
                "dramatiq_eventbus.E001",
                f"settings.{SETTING} has no 'HANDLERS'.",
                "Set it to 'pkg.module:ATTR' naming your dict of event class to handlers.",
            )
        )
    for key, value in raw.items():
        check = _TYPES.get(key)
        if check is not None and not check[0](value):
            # A secret's value is never shown: the check's output goes to logs and terminals.
            shown = "" if "SECRET" in key else f": {value!r:.60}"
            found.append(
                Problem(
                    "dramatiq_eventbus.E003",
                    f"settings.{SETTING}[{key!r}] must be {check[1]}, not {type(value).__name__}{shown}.",
                )
            )
    database = raw.get("DATABASE", APP_DEFAULTS["DATABASE"])
    if databases is not None and isinstance(database, str) and database not in databases:
        found.append(
            Problem(
                "dramatiq_eventbus.E003",
                f"settings.{SETTING}['DATABASE'] is {database!r}, which is not in settings.DATABASES.",
                f"Use one of: {', '.join(map(repr, databases))}.",
            )
        )
    return found


def parse(raw: object, *, databases: Mapping[str, Any] | None = None) -> EventBusSettings:
    """The setting as configure() arguments and the app's options.

    Raises:
      ConfigurationError: Naming every problem :func:`problems` finds, or a HANDLER_FACTORY
        string that does not import.
    """
    found = problems(raw, databases=databases)
    if found:
        raise ConfigurationError(" ".join(problem.message for problem in found))
    assert isinstance(raw, Mapping)  # problems() said so
    arguments = {CONFIGURE_KEYS[key]: value for key, value in raw.items() if key in CONFIGURE_KEYS}
    factory = arguments.get("handler_factory")
    if isinstance(factory, str):
        arguments["handler_factory"] = import_string(factory)
    options = {**APP_DEFAULTS, **{key: raw[key] for key in APP_DEFAULTS if key in raw}}
    return EventBusSettings(
        arguments=arguments,
        on_commit=options["ON_COMMIT"],
        outbox=options["OUTBOX"],
        database=options["DATABASE"],
        raw=raw,
    )


def from_django() -> EventBusSettings:
    """The parsed ``settings.EVENTBUS`` of the running Django project.

    Raises:
      ConfigurationError: See :func:`parse`.
    """
    from django.conf import settings

    return parse(getattr(settings, SETTING, None), databases=settings.DATABASES)
