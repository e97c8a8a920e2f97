"""Running an outbox relay: pass after pass until stopped, in the caller or a thread, backing off on failures."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from ..errors import ConfigurationError
from ..untrusted import described
from .wakers import waker_for

if TYPE_CHECKING:
    from .relay import OutboxRelay

logger = logging.getLogger("dramatiq_eventbus.outbox")

#: The wait before looking again at rows held back because another relay had earlier rows of their lane.
HELD_BACK_PAUSE_SECONDS = 0.02
#: The first wait after a failed pass; each failure after it doubles the wait, up to the relay's maximum.
_FIRST_BACKOFF_SECONDS = 0.1


class RelayRunner:
    """Runs one relay's passes, with its timings, until it is stopped; see :meth:`OutboxRelay.run`.

    Parameters:
      relay(OutboxRelay): The relay whose passes to run.
    """

    def __init__(self, relay: OutboxRelay) -> None:
        self.relay = relay
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run(self, stop: threading.Event | None = None) -> None:
        """Relay until ``stop`` (or :meth:`stop`) is set.

        Raises:
          ConfigurationError: From the relay's check, before anything starts, or from a pass.
        """
        relay = self.relay
        stop = stop or self._stop
        relay.check()
        waker = waker_for(relay.engine, relay.outbox.channel)
        logger.info("Outbox relay started on %s (%s).", relay.outbox.qualified_name, waker.describe(relay.poll_seconds))
        failures = 0
        next_prune = time.monotonic()
        try:
            while not stop.is_set():
                if time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + relay.prune_every_seconds
                    self._prune()
                try:
                    batch = relay.relay_once()
                except ConfigurationError:
                    raise
                except Exception as exc:
                    failures += 1
                    stop.wait(self._backoff(failures, exc))
                    continue
                if failures:
                    logger.info("Outbox relay recovered after %d failed pass(es).", failures)
                    failures = 0
                if batch.sent + batch.held_back + batch.set_aside >= relay.batch_size:
                    continue
                if batch.held_back:
                    stop.wait(HELD_BACK_PAUSE_SECONDS)
                    continue
                waker.wait(relay.poll_seconds, stop)
        finally:
            waker.close()
            logger.info("Outbox relay stopped on %s.", relay.outbox.qualified_name)

    def _prune(self) -> None:
        try:
            self.relay.prune()
        except Exception as exc:
            logger.warning("Pruning the outbox failed (%s); trying again later.", described(exc))

    def _backoff(self, failures: int, exc: Exception) -> float:
        """Log the ``failures``-th failed pass in a row; return how long to wait before the next."""
        delay = min(self.relay.max_backoff_seconds, _FIRST_BACKOFF_SECONDS * 2.0 ** min(failures - 1, 16))
        logger.warning(
            "Outbox relay pass failed (%s); its rows stay unsent. Trying again in %.1f s.",
            described(exc),  # it may quote a row, which whoever can write to the table controls
            delay,
            exc_info=failures == 1,
        )
        return delay

    def start(self) -> threading.Thread:
        """Run the relay in a daemon thread; :meth:`stop` ends it.

        Raises:
          ConfigurationError: From the relay's check, in the caller.
          RuntimeError: The thread is already running.
        """
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError(f"{self.relay!r} is already running")
        self.relay.check()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run_in_thread, name="eventbus-outbox-relay", daemon=True)
        self._thread.start()
        return self._thread

    def _run_in_thread(self) -> None:
        try:
            self.run()
        except Exception:
            logger.exception("The outbox relay thread stopped on an error.")

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the thread to stop, and wait up to ``timeout`` seconds for it."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
