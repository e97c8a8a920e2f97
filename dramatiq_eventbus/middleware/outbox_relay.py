"""An outbox relay inside the ``dramatiq`` worker: one relay thread per worker process."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from dramatiq.broker import Broker
from dramatiq.middleware import Middleware
from dramatiq.worker import Worker

if TYPE_CHECKING:
    from ..bus import EventBus
    from ..transactions import OutboxRelay

logger = logging.getLogger("dramatiq_eventbus.outbox")


class OutboxRelayMiddleware(Middleware):
    """Runs an :class:`~dramatiq_eventbus.transactions.OutboxRelay` in a thread of each worker process.

    The relay is made when the worker boots, in the worker process itself, so that its
    database engine is never shared across a fork. Several processes relay at once
    safely: the relay locks the rows it sends.

    Parameters:
      make_relay(Callable[[], OutboxRelay]): Makes the process's relay.
    """

    def __init__(self, make_relay: Callable[[], OutboxRelay]) -> None:
        self.make_relay = make_relay
        self.relay: OutboxRelay | None = None

    def after_worker_boot(self, broker: Broker, worker: Worker) -> None:
        # A missing table or a wrong setting fails the boot, loudly, rather than leaving rows unsent.
        relay = self.make_relay()
        relay.start()
        self.relay = relay

    def before_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        relay, self.relay = self.relay, None
        if relay is not None:
            relay.stop()
            relay.engine.dispose()


def install_from_env(bus: EventBus, environ: Mapping[str, str] | None = None) -> OutboxRelayMiddleware | None:
    """Add a relay thread to ``bus``'s broker when ``EVENTBUS_OUTBOX_URL`` is set; return it, or None.

    The other ``EVENTBUS_OUTBOX_*`` variables tune it. Installing twice keeps the first.

    Raises:
      ConfigurationError: A variable that does not parse.
    """
    environ = os.environ if environ is None else environ
    if not environ.get("EVENTBUS_OUTBOX_URL", "").strip():
        return None
    broker = bus.broker
    existing = next((m for m in broker.middleware if isinstance(m, OutboxRelayMiddleware)), None)
    if existing is not None:
        return existing
    from ..transactions import OutboxRelay, RelaySettings

    settings = RelaySettings.from_env(environ)
    middleware = OutboxRelayMiddleware(lambda: OutboxRelay.from_settings(settings, bus=bus))
    broker.add_middleware(middleware)
    return middleware
