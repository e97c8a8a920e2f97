"""``eventbus outbox-relay`` (``python -m dramatiq_eventbus outbox-relay``): a relay as a process of its own."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import threading
from typing import Any

from ..bus import EventBus
from ..environment import OUTBOX_VARIABLES, arguments_from_env
from .relay import OutboxRelay
from .settings import RelaySettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The subcommand's options; each defaults to its ``EVENTBUS_OUTBOX_*`` variable."""
    parser.add_argument("--url", help="SQLAlchemy URL of the outbox's database (default: EVENTBUS_OUTBOX_URL)")
    parser.add_argument("--table", help="the outbox table, optionally schema.table (default: EVENTBUS_OUTBOX_TABLE)")
    parser.add_argument("--batch-size", type=int, help="rows per pass (default: EVENTBUS_OUTBOX_BATCH_SIZE, 500)")
    parser.add_argument(
        "--poll-seconds", type=float, help="longest wait between passes (default: EVENTBUS_OUTBOX_POLL_SECONDS, 1)"
    )
    parser.add_argument(
        "--prune-after-seconds",
        type=float,
        help="delete rows sent longer ago; 0 keeps them (default: EVENTBUS_OUTBOX_PRUNE_AFTER_SECONDS, 86400)",
    )
    parser.add_argument("--once", action="store_true", help="relay what is committed now, then exit")
    parser.epilog = "Variables:\n" + "\n".join(f"  {v.name}: {v.help}" for v in OUTBOX_VARIABLES)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter


def run(args: argparse.Namespace) -> int:
    """Relay until SIGTERM or SIGINT (or, with ``--once``, until nothing is left); 0 on a clean stop.

    The bus comes from the ``EVENTBUS_*`` variables, as in the workers: the relay sends
    through its broker and its Redis lanes.

    Raises:
      ConfigurationError: A setting is missing or wrong, or the table does not exist.
    """
    overrides: dict[str, Any] = {
        "url": args.url,
        "table": args.table,
        "batch_size": args.batch_size,
        "poll_seconds": args.poll_seconds,
    }
    settings = RelaySettings.from_env(**overrides)
    if args.prune_after_seconds is not None:
        settings = dataclasses.replace(settings, prune_after_seconds=args.prune_after_seconds or None)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    bus = EventBus().configure(**arguments_from_env())
    relay = OutboxRelay.from_settings(settings, bus=bus)
    try:
        return serve(relay, once=args.once)
    finally:
        relay.engine.dispose()
        bus.broker.close()


def serve(relay: OutboxRelay, *, once: bool = False) -> int:
    """Run ``relay`` until SIGTERM or SIGINT, or with ``once`` until nothing is left; 0 on a clean stop.

    Shared by ``eventbus outbox-relay`` and the Django app's ``manage.py eventbus_outbox_relay``.

    Raises:
      ConfigurationError: The table does not exist, or the bus cannot send.
    """
    if once:
        relay.check()
        sent = relay.relay_pending()
        relay.prune()
        print(f"relayed {sent} message(s) from {relay.outbox.qualified_name}")
        return 0
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    relay.run(stop)
    return 0
