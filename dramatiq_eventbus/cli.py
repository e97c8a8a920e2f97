"""The ``eventbus`` command (also ``python -m dramatiq_eventbus``): look at a bus and its lanes.

Workers are run with Dramatiq's own CLI, ``dramatiq dramatiq_eventbus.worker``; this
command is for the operator's questions around it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .bus import EventBus
from .dead_letters import add_arguments as add_dead_letters_arguments
from .dead_letters import run as run_dead_letters
from .environment import VARIABLES, arguments_from_env
from .errors import EventBusError
from .routes import FORMATS, FlowMap
from .untrusted import shown


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; return its exit status.

    Parameters:
      argv: The arguments after the program's name. None, as the ``eventbus`` script and
        ``python -m dramatiq_eventbus`` call it, reads them from ``sys.argv`` and puts the
        current directory first on ``sys.path``, as ``dramatiq`` does, so that the
        application that ``EVENTBUS_HANDLERS`` names imports from where the command runs.
    """
    if argv is None:
        # A console script's sys.path holds the script's own directory, not the current one
        # (``python -m`` adds it, the ``eventbus`` script does not).
        _put_current_directory_on_path()
    parser = argparse.ArgumentParser(
        prog="eventbus",
        description="Inspect a dramatiq-eventbus configuration. It is read from the EVENTBUS_* variables.",
        epilog="Variables:\n" + "\n".join(f"  {v.name}: {v.help}" for v in VARIABLES),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    routes = commands.add_parser("routes", help="list each event class with its handlers, actors and options")
    routes.add_argument("--handlers", help="'pkg.module:ATTR' naming the handlers dict (default: EVENTBUS_HANDLERS)")
    routes.add_argument(
        "--format",
        choices=FORMATS,
        default="text",
        help="text (default): for people; json: for tools; mermaid: a diagram of the contexts and their flows",
    )
    lanes = commands.add_parser("lanes", help="list lanes whose head event has waited, oldest first")
    lanes.add_argument("--older-than", type=float, default=0.0, metavar="SECONDS", help="only heads older than this")
    dead_letters = commands.add_parser("dead-letters", help="list, show, replay or purge dead-lettered events")
    add_dead_letters_arguments(dead_letters)
    relay = commands.add_parser("outbox-relay", help="move committed outbox rows to the broker, in order")
    _add_outbox_relay_arguments(relay)
    args = parser.parse_args(argv)
    try:
        if args.command == "routes":
            return _routes(args.handlers, args.format)
        if args.command == "lanes":
            return _lanes(args.older_than)
        if args.command == "dead-letters":
            return run_dead_letters(args)
        if args.command == "outbox-relay":
            return _outbox_relay(args)
    except EventBusError as exc:
        print(f"eventbus: {exc}", file=sys.stderr)
        return 2
    return 0  # pragma: no cover - argparse rejects unknown commands


def _put_current_directory_on_path() -> None:
    here = os.getcwd()
    if here not in sys.path:
        sys.path.insert(0, here)


def _add_outbox_relay_arguments(parser: argparse.ArgumentParser) -> None:
    try:
        from .transactions.command import add_arguments
    except ImportError:  # without SQLAlchemy, the subcommand still shows, and says what it needs when run
        return
    add_arguments(parser)


def _outbox_relay(args: argparse.Namespace) -> int:
    # Imported here: SQLAlchemy is an optional extra, needed by this subcommand only.
    from .transactions.command import run

    return run(args)


def _lanes(older_than: float) -> int:
    bus = EventBus().configure(**arguments_from_env())
    try:
        found = bus.lanes(older_than_seconds=older_than)
    finally:
        bus.broker.close()
    if not found:
        print(f"no lane has a head older than {older_than:g} s")
        return 0
    print(f"{'age':>8}  {'attempts':>8}  {'pending':>7}  {'state':<10}  handler / key / head event")
    for lane in found:
        # Read back from Redis: a partition key is often a value a user typed, and the event type
        # and the head's id come from the stored message. Escaped, so that none drives the terminal.
        print(
            f"{lane.age_seconds:7.1f}s  {lane.attempts:>8}  {lane.pending:>7}  {lane.state:<10}  "
            f"{shown(lane.handler)} / {shown(lane.partition_key)} / {shown(lane.event_type)} "
            f"{shown(lane.head_message_id)} event {shown(lane.event_id)}"
        )
    return 1


def _routes(handlers: str | None, format: str = "text") -> int:
    environ = {**os.environ, **({"EVENTBUS_HANDLERS": handlers} if handlers else {})}
    arguments = arguments_from_env(environ)
    # Only the registry is needed: a stub broker checks every option without connecting anywhere.
    arguments.update(broker="stub", backend="dramatiq")
    bus = EventBus().configure(**arguments)
    sys.stdout.write(FlowMap.from_bus(bus).render(format))
    return 0
