"""The ``eventbus`` command (also ``python -m dramatiq_eventbus``): look at a bus's configuration.

Workers are run with Dramatiq's own CLI, ``dramatiq dramatiq_eventbus.worker``; this
command is for the operator's questions around it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .bus import EventBus
from .environment import VARIABLES, arguments_from_env
from .errors import EventBusError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="eventbus",
        description="Inspect a dramatiq-eventbus configuration. It is read from the EVENTBUS_* variables.",
        epilog="Variables:\n" + "\n".join(f"  {v.name}: {v.help}" for v in VARIABLES),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    routes = commands.add_parser("routes", help="list each event class with its handlers, actors and options")
    routes.add_argument("--handlers", help="'pkg.module:ATTR' naming the handlers dict (default: EVENTBUS_HANDLERS)")
    args = parser.parse_args(argv)
    try:
        if args.command == "routes":
            return _routes(args.handlers)
    except EventBusError as exc:
        print(f"eventbus: {exc}", file=sys.stderr)
        return 2
    return 0  # pragma: no cover - argparse rejects unknown commands


def _routes(handlers: str | None) -> int:
    environ = {**os.environ, **({"EVENTBUS_HANDLERS": handlers} if handlers else {})}
    arguments = arguments_from_env(environ)
    # Only the registry is needed: a stub broker checks every option without connecting anywhere.
    arguments.update(broker="stub", backend="dramatiq")
    config = EventBus().configure(**arguments).config
    for event_class in config.registry.event_classes:
        print(f"{event_class.__module__}.{event_class.__qualname__}")
        for spec in config.registry.handlers_for(event_class):
            options = ", ".join(f"{k}={v!r}" for k, v in sorted(spec.actor_options.items()))
            print(f"  -> {spec.name}  priority={spec.priority}  {options}")
    return 0
