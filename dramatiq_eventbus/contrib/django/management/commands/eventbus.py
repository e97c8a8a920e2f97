"""``manage.py eventbus routes|lanes|dead-letters ...``: the ``eventbus`` command with this project's bus.

The arguments after ``eventbus`` are the ``eventbus`` command's own (``manage.py eventbus
dead-letters list``, ``manage.py eventbus lanes --older-than 60``...). That command reads
its configuration from the ``EVENTBUS_*`` variables: they are set from ``settings.EVENTBUS``
for the call (and those the setting does not give are unset). With django_dramatiq installed,
no broker URL is set, and the command finds django_dramatiq's broker as Dramatiq's global one.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from django.apps import apps
from django.core.management.base import BaseCommand, CommandError, CommandParser

from dramatiq_eventbus import cli
from dramatiq_eventbus.contrib.django import conf
from dramatiq_eventbus.contrib.django.apps import DJANGO_DRAMATIQ
from dramatiq_eventbus.environment import VARIABLES


class Command(BaseCommand):  # type: ignore[misc, unused-ignore]
    help = "Run the eventbus command (routes, lanes, dead-letters) with the bus that settings.EVENTBUS configures."
    # The command is for looking at a bus; a check of some other app must not stop an operator.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "arguments", nargs=argparse.REMAINDER, help="the eventbus command's arguments, e.g. dead-letters list"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        arguments = list(options["arguments"])
        try:
            settings = conf.from_django()
        except Exception as exc:
            raise CommandError(f"settings.{conf.SETTING}: {exc}") from exc
        with environment(variables(settings.arguments, shared_broker=apps.is_installed(DJANGO_DRAMATIQ))):
            status = cli.main(arguments or ["--help"])
        if status:
            raise SystemExit(status)


def variables(arguments: Mapping[str, Any], *, shared_broker: bool) -> dict[str, str | None]:
    """The ``EVENTBUS_*`` variables that give the command ``arguments``; None unsets one.

    Raises:
      CommandError: An argument no variable can carry (a dict of handlers, a handler factory,
        a Backend or Codec object).
    """
    by_argument = {variable.argument: variable.name for variable in VARIABLES}
    values: dict[str, str | None] = {name: None for name in by_argument.values()}
    for argument, value in arguments.items():
        name = by_argument.get(argument)
        if name is not None and value is None:
            continue  # None is configure()'s default: the variable stays unset
        text = None if name is None else _text(argument, value)
        if name is None or text is None:
            raise CommandError(
                f"manage.py eventbus cannot pass settings.{conf.SETTING}['{argument.upper()}'], a "
                f"{type(value).__name__}, to the eventbus command, which reads EVENTBUS_* variables: give "
                "HANDLERS as a 'pkg.module:ATTR' string, and leave HANDLER_FACTORY, BACKEND and CODEC objects out."
            )
        values[name] = text
    if shared_broker and "broker" not in arguments:
        # Left unset, the command's bus takes Dramatiq's global broker: django_dramatiq's.
        values["EVENTBUS_BROKER_URL"] = None
    elif "broker" not in arguments:
        values.pop("EVENTBUS_BROKER_URL")  # as for configure(): the variable, if the environment has it
    return values


def _text(argument: str, value: object) -> str | None:
    """``value`` as its variable's text, or None if the variable cannot hold it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, str | int | float):
        return str(value)
    if argument == "secret_keys" and isinstance(value, list | tuple):
        keys = [_text(argument, key) for key in value if isinstance(key, str | bytes)]
        return ",".join(key for key in keys if key is not None) if len(keys) == len(value) else None
    if argument == "default_actor_options" and isinstance(value, Mapping):
        return json.dumps(dict(value))
    return None


@contextmanager
def environment(values: Mapping[str, str | None]) -> Iterator[None]:
    """Set (or, for None, unset) ``values`` in ``os.environ`` for the block."""
    saved = {name: os.environ.get(name) for name in values}
    _apply(values)
    try:
        yield
    finally:
        _apply(saved)


def _apply(values: Mapping[str, str | None]) -> None:
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
