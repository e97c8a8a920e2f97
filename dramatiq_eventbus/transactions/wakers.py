"""What an outbox relay waits on between passes: PostgreSQL's LISTEN/NOTIFY, or polling."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any, Protocol

from sqlalchemy.engine import Engine

logger = logging.getLogger("dramatiq_eventbus.outbox")

#: How often a waiting relay looks at its stop flag, at the most.
_STOP_CHECK_SECONDS = 0.2


class Waker(Protocol):
    """Waits until new rows may be committed, a timeout, or a stop."""

    def wait(self, seconds: float, stop: threading.Event) -> None:
        """Return when woken, after ``seconds``, or soon after ``stop`` is set."""
        ...

    def close(self) -> None: ...

    def describe(self, poll_seconds: float) -> str:
        """How the relay waits, for its start-up log line."""
        ...


class Poll:
    """Sleeps: the wake-up of every database but PostgreSQL with psycopg 3."""

    def wait(self, seconds: float, stop: threading.Event) -> None:
        stop.wait(seconds)

    def close(self) -> None:
        pass

    def describe(self, poll_seconds: float) -> str:
        return f"polling every {poll_seconds:g} s"


class Listen:
    """LISTENs on the outbox's channel on a connection of its own, outside the engine's pool.

    Parameters:
      engine(Engine): A PostgreSQL engine with the psycopg 3 driver.
      channel(str): The outbox's NOTIFY channel.
    """

    def __init__(self, engine: Engine, channel: str) -> None:
        self.engine = engine
        self.channel = channel
        self._connection: Any = None

    def describe(self, poll_seconds: float) -> str:
        return f"woken by NOTIFY on {self.channel!r}, or every {poll_seconds:g} s"

    def _connect(self) -> Any:
        from psycopg import sql

        pooled = self.engine.raw_connection()
        connection: Any = pooled.driver_connection  # a psycopg.Connection: waker_for() checked the driver
        pooled.detach()  # closing it closes the socket, instead of returning a LISTENing connection to the pool
        connection.rollback()
        connection.autocommit = True
        connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
        self._connection = connection
        return connection

    def wait(self, seconds: float, stop: threading.Event) -> None:
        deadline = time.monotonic() + seconds
        while not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                connection = self._connection or self._connect()
                woken = False
                for _ in connection.notifies(timeout=min(remaining, _STOP_CHECK_SECONDS), stop_after=1):
                    woken = True
                if woken:
                    # Later notifications are for rows the coming pass will take as well.
                    for _ in connection.notifies(timeout=0):
                        pass
                    return
            except Exception as exc:
                logger.warning(
                    "Outbox relay lost its LISTEN connection (%s: %s); polling until it is back.",
                    type(exc).__name__,
                    exc,
                )
                self.close()
                stop.wait(min(max(remaining, 0.0), 1.0))
                return

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):  # a broken connection may fail to close; it is gone either way
                connection.close()


def waker_for(engine: Engine, channel: str) -> Waker:
    """A :class:`Listen` on PostgreSQL with psycopg 3, a :class:`Poll` elsewhere."""
    if engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg":
        return Listen(engine, channel)
    if engine.dialect.name == "postgresql":
        logger.info("LISTEN needs the psycopg 3 driver (postgresql+psycopg://); the relay polls instead.")
    return Poll()
