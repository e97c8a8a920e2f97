"""Async handlers (``async def handle_event``) that the integration tests' ``dramatiq`` worker runs.

The worker imports this module through ``EVENTBUS_HANDLERS=tests.integration.async_handlers:HANDLERS``
(see tests/integration/test_async_handlers.py). As in handlers.py, each handler records what
it saw as one JSON line in the test Redis, where the test reads it, with the kind of thread it
ran on: Dramatiq runs a coroutine actor on its AsyncIO middleware's ``EventLoopThread``.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from dataclasses import dataclass

from dramatiq_eventbus import Error, Handler
from tests.integration.handlers import (
    RECORD_PREFIX_VAR,
    RECORD_URL_VAR,
    Flush,
    FlushHandler,
    _client,
    record,
    record_key,
    refusal,
)


def _thread_kind() -> str:
    return type(threading.current_thread()).__name__


def attempts(tag: str) -> int:
    """How many records ``tag`` has: a handler that records first knows which attempt it is in."""
    return int(_client(os.environ[RECORD_URL_VAR]).llen(record_key(os.environ[RECORD_PREFIX_VAR], tag)))


# -- runs, next to a sync handler --------------------------------------------------------------


@dataclass(frozen=True)
class Awaited:
    tag: str


class AsyncRecorder(Handler):
    async def handle_event(self, event: Awaited) -> str:
        await asyncio.sleep(0.01)  # a real await: an async handler that is not driven records nothing
        record(self, event.tag, thread=_thread_kind(), loop=id(asyncio.get_running_loop()))
        return "a value is a success too"


class SyncBeside(Handler):
    def handle_event(self, event: Awaited) -> None:
        record(self, event.tag, thread=_thread_kind())


# -- failures and retries ----------------------------------------------------------------------


@dataclass(frozen=True)
class AsyncDoomed:
    tag: str


class AsyncReturnsError(Handler):
    actor_options = {"max_retries": 2}

    async def handle_event(self, event: AsyncDoomed) -> Error:
        await asyncio.sleep(0)
        record(self, event.tag)
        return Error(refusal(event.tag))


@dataclass(frozen=True)
class AsyncRetried:
    tag: str


class AsyncFailsOnce(Handler):
    actor_options = {"max_retries": 3}

    async def handle_event(self, event: AsyncRetried) -> None:
        await asyncio.sleep(0)
        record(self, event.tag)
        if attempts(event.tag) == 1:
            raise RuntimeError(f"the first attempt of {event.tag} fails")


# -- time limits -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stalled:
    tag: str


class AsyncOverTime(Handler):
    actor_options = {"time_limit": 300, "max_retries": 0}

    async def handle_event(self, event: Stalled) -> None:
        record(self, event.tag, phase="started")
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            record(self, event.tag, phase="cancelled")
            raise
        record(self, event.tag, phase="finished")


# -- ordering ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stepped:
    tag: str
    key: str
    seq: int
    keyed: bool = True

    def partition_key(self) -> str | None:
        return self.key if self.keyed else None


class AsyncStepper(Handler):
    """Earlier steps take longer, and each key's first step fails its first attempt: run
    concurrently, or with retries to the back of the queue, a key's steps would come out of order."""

    actor_options = {"max_retries": 2}

    async def handle_event(self, event: Stepped) -> None:
        started = time.time()
        await asyncio.sleep(0.06 * (4 - event.seq))
        if event.keyed and event.seq == 0:
            first_tag = f"{event.tag}-first-{event.key}"
            record(self, first_tag)
            if attempts(first_tag) == 1:
                raise RuntimeError(f"the first attempt of {event.key}'s first step fails")
        record(self, event.tag, key=event.key, seq=event.seq, started=started, ended=time.time())


HANDLERS = {
    Awaited: [AsyncRecorder, SyncBeside],
    AsyncDoomed: [AsyncReturnsError],
    AsyncRetried: [AsyncFailsOnce],
    Stalled: [AsyncOverTime],
    Stepped: [AsyncStepper],
    Flush: [FlushHandler],
}
