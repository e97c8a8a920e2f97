"""``manage.py eventbus_outbox_relay``: the outbox relay of ``eventbus outbox-relay``, configured by Django's settings.

The bus is the one the app configured in ready() (``dramatiq_eventbus.default_bus``); the
database is ``EVENTBUS["OUTBOX_DATABASE"]``'s (or ``EVENTBUS["OUTBOX_URL"]``); the table is the
app's ``eventbus_outbox``. Each option defaults to its ``EVENTBUS["OUTBOX_*"]`` setting.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from dramatiq_eventbus.errors import ConfigurationError


class Command(BaseCommand):  # type: ignore[misc, unused-ignore]
    help = (
        "Send the committed rows of the Django outbox (eventbus_outbox) to the broker, in order, and mark "
        "them sent; several relays may run at once. Until SIGTERM or SIGINT, or with --once until none is left."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        # The options of `eventbus outbox-relay`, defaulting to EVENTBUS["OUTBOX_*"] instead of variables.
        parser.add_argument("--url", help="SQLAlchemy URL of the outbox's database (default: derived from DATABASES)")
        parser.add_argument("--table", help="the outbox table, optionally schema.table (default: eventbus_outbox)")
        parser.add_argument("--batch-size", type=int, help="rows per pass (default: OUTBOX_BATCH_SIZE, 500)")
        parser.add_argument("--poll-seconds", type=float, help="longest wait between passes (default: 1)")
        parser.add_argument(
            "--prune-after-seconds", type=float, help="delete rows sent longer ago; 0 keeps them (default: 86400)"
        )
        parser.add_argument("--once", action="store_true", help="relay what is committed now, then exit")

    def handle(self, *args: Any, **options: Any) -> None:
        import dramatiq_eventbus
        from dramatiq_eventbus.contrib.django.outbox import relay_settings
        from dramatiq_eventbus.transactions.command import serve
        from dramatiq_eventbus.transactions.relay import OutboxRelay

        bus = dramatiq_eventbus.default_bus
        if not bus.is_configured:
            raise CommandError(
                "the event bus is not configured: add 'dramatiq_eventbus.contrib.django' to INSTALLED_APPS "
                "and set EVENTBUS['HANDLERS']"
            )
        try:
            relay_options = relay_settings(
                getattr(settings, "EVENTBUS", {}),
                url=options["url"],
                table=options["table"],
                batch_size=options["batch_size"],
                poll_seconds=options["poll_seconds"],
            )
            if options["prune_after_seconds"] is not None:
                relay_options = dataclasses.replace(
                    relay_options, prune_after_seconds=options["prune_after_seconds"] or None
                )
            relay = OutboxRelay.from_settings(relay_options, bus=bus)
        except ConfigurationError as exc:
            raise CommandError(str(exc)) from exc
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        try:
            serve(relay, once=options["once"])
        except ConfigurationError as exc:
            raise CommandError(str(exc)) from exc
        finally:
            relay.engine.dispose()
