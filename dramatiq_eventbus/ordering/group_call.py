"""One call for the requests of many threads: how worker threads share their lane round trips.

When the bus's Redis consumer cannot batch the lane calls itself (a RabbitMQ broker, or
lanes in a Redis of their own), each worker thread would make its own: a round trip to
enter the head, one to finish it, and, on RabbitMQ, a confirmed publish of the next
head. A :class:`GroupCall` lets the threads share them instead: the first thread to find
no call in flight makes one for every request waiting, again and again until none is
left, and the others only wait for their answer (or, with :meth:`GroupCall.submit`,
not even that). Under load, one round trip serves many messages; when idle, nobody waits.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

Request = TypeVar("Request")
Reply = TypeVar("Reply")


class _Slot(Generic[Request, Reply]):
    __slots__ = ("done", "error", "reply", "request", "waited")

    def __init__(self, request: Request, waited: bool) -> None:
        self.request = request
        self.waited = waited
        self.done = threading.Event()
        self.reply: Reply | None = None
        self.error: BaseException | None = None


class GroupCall(Generic[Request, Reply]):
    """Makes ``run`` calls on behalf of every thread with a request waiting.

    Parameters:
      run(Callable[[list[Request]], Sequence[Reply]]): Answers a batch of requests, one
        reply per request, in order.
      on_error(Callable[[BaseException], None]): What becomes of an error of a batch whose
        requests were all submitted without waiting (nobody else would see it).
    """

    def __init__(
        self, run: Callable[[list[Request]], Sequence[Reply]], on_error: Callable[[BaseException], None]
    ) -> None:
        self._run = run
        self._on_error = on_error
        self._lock = threading.Lock()
        self._waiting: list[_Slot[Request, Reply]] = []
        self._in_flight = False

    def __call__(self, request: Request) -> Reply:
        """The reply to ``request``, from a batch made by this thread or another.

        Raises:
          BaseException: Whatever the batch's call raised.
        """
        slot = self._enqueue(request, waited=True)
        slot.done.wait()
        if slot.error is not None:
            raise slot.error
        return slot.reply  # type: ignore[return-value]

    def submit(self, request: Request) -> None:
        """Have ``request`` made, without waiting for another thread's call to do it."""
        self._enqueue(request, waited=False)

    def _enqueue(self, request: Request, *, waited: bool) -> _Slot[Request, Reply]:
        slot: _Slot[Request, Reply] = _Slot(request, waited)
        with self._lock:
            self._waiting.append(slot)
            if self._in_flight:
                return slot
            self._in_flight = True
        self._lead()
        return slot

    def _lead(self) -> None:
        while True:
            with self._lock:
                batch, self._waiting = self._waiting, []
                if not batch:
                    self._in_flight = False
                    return
            try:
                replies = self._run([slot.request for slot in batch])
            except Exception as exc:
                self._fail(batch, exc)
                if not any(slot.waited for slot in batch):
                    self._on_error(exc)
                continue
            except BaseException as exc:
                # This thread is interrupted (e.g. a Dramatiq time limit): fail every waiting
                # request rather than leave it to wait for a call nobody will make.
                with self._lock:
                    batch, self._waiting, self._in_flight = batch + self._waiting, [], False
                self._fail(batch, exc)
                raise
            for slot, reply in zip(batch, replies, strict=True):
                slot.reply = reply
                slot.done.set()

    @staticmethod
    def _fail(batch: list[_Slot[Request, Reply]], exc: BaseException) -> None:
        for slot in batch:
            slot.error = exc
            slot.done.set()
