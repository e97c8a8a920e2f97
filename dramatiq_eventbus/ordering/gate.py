"""Lane calls made once per batch by the bus's Redis consumer, instead of once per message.

Asking a lane whether its head may run (enter) and finishing the head (finish) cost a
Redis round trip each. Made by the worker threads, one message at a time, they cost a
keyed event about four times the worker CPU of an unkeyed one (measured: 485 against
105 µs). When the lanes live in the
broker's own Redis, the bus's Redis consumer makes them for a whole batch instead:

- right after a fetch, one round trip enters every laned message of it, and the verdicts
  wait here until a worker thread starts the message
  (the ordering's coordinator takes them). With a secret key, a message the keys refuse
  takes no lease: it is dead-lettered before it starts, and a lease taken at fetch would
  keep the lane's real head, carrying the same id, from running until the lease ran out;
- a handled head's FINISH waits here for its delivery's ack, and goes out with the other
  acks of the batch, in one round trip, acknowledging the delivery in the same script.

A lease is taken at fetch, so its message may wait in the prefetch before it starts: the
worker's lane maintenance renews the leases of the messages that still wait in this
process, and forgets those whose messages are gone (a consumer dropped what it had
fetched), whose leases then expire; a lease older than a third of its term is also
renewed when its message starts.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from dramatiq.message import Message

from ..signing import Signer
from .lanes import AckingLaneStore, HandledHead, Verdict, warn_if_lost


@dataclass(frozen=True)
class Entered:
    """A fetched delivery's lane verdict, taken at fetch.

    Parameters:
      lane(str): Its lane.
      message_id(str): Its message id.
      verdict(Verdict): RUN (it holds the lease), BUSY or STALE.
      token(str): The lease's owner token.
      at(float): When, on :func:`time.monotonic`.
      message(weakref.ref[Message]): The fetched message, alive while it waits here.
    """

    lane: str
    message_id: str
    verdict: Verdict
    token: str
    at: float
    message: weakref.ref[Message[Any]]


def new_token() -> str:
    """A lease owner token, unique to one delivery."""
    return os.urandom(12).hex()


class LaneGate:
    """What the bus's Redis consumer and the ordering share about lanes, by Redis id.

    The consumer calls it as its ``FetchHook`` (:meth:`fetched`, :meth:`put_back`,
    :meth:`ack`); the coordinator takes the verdicts and hands over handled heads.

    Parameters:
      lanes(AckingLaneStore): Lanes that live in the broker's Redis.
      signer(Signer | None): The worker's keys; a message they refuse is not entered. The
        coordinator sets it (:meth:`.GatedCoordinator.authenticated_by`).
    """

    def __init__(self, lanes: AckingLaneStore, signer: Signer | None = None) -> None:
        self.lanes = lanes
        self.signer = signer
        self._lock = threading.Lock()
        self._entered: dict[str, Entered] = {}
        self._handled: dict[str, HandledHead] = {}

    # -- the consumer's side ---------------------------------------------------------------

    def fetched(self, messages: Sequence[Message[Any]]) -> None:
        """Enter every laned message of a fetch, in one round trip; their verdicts wait here."""
        signer = self.signer
        # A message the consumer's check passed (``checked``) is not verified a second time.
        laned = [
            m
            for m in messages
            if "lane" in m.options and (signer is None or getattr(m, "checked", False) or signer.problem(m) is None)
        ]
        if not laned:
            return
        tokens = [new_token() for _ in laned]
        verdicts = self.lanes.enter_many(
            [(m.options["lane"], m.message_id, token) for m, token in zip(laned, tokens, strict=True)]
        )
        now = time.monotonic()
        with self._lock:
            for message, token, verdict in zip(laned, tokens, verdicts, strict=True):
                entered = Entered(
                    message.options["lane"], message.message_id, verdict, token, now, weakref.ref(message)
                )
                self._entered[message.options["redis_message_id"]] = entered

    def put_back(self, redis_ids: Iterable[str], queue_name: str) -> None:
        """Fetched deliveries put back without running: give up the leases they took, so that
        whichever delivery of the head comes next may run it at once."""
        with self._lock:
            held = [entered for rid in redis_ids if (entered := self._entered.pop(rid, None)) is not None]
        leased = [entered for entered in held if entered.verdict is Verdict.RUN]
        if leased:
            self.lanes.give_back([(e.lane, e.message_id, e.token) for e in leased], queue_name=queue_name)

    def ack(self, redis_ids: Sequence[str], *, queue_name: str, acks_key: str) -> bool:
        """Acknowledge deliveries, finishing the handled heads among them, in one round trip;
        False, having done nothing, when no handled head is among them."""
        with self._lock:
            handled = [(rid, head) for rid in redis_ids if (head := self._handled.pop(rid, None)) is not None]
        if not handled:
            return False
        done = {rid for rid, _ in handled}
        heads = [(head, rid) for rid, head in handled]
        others = [rid for rid in redis_ids if rid not in done]
        try:
            statuses = self.lanes.finish_handled(heads, queue_name=queue_name, acks_key=acks_key, other_acks=others)
        except BaseException:
            with self._lock:  # the consumer sends these acks again: they must finish their heads then too
                for redis_id, head in handled:
                    self._handled.setdefault(redis_id, head)
            raise
        for (head, _), status in zip(heads, statuses, strict=True):
            warn_if_lost(head.lane, head.message_id, status)
        return True

    # -- the middleware's side -------------------------------------------------------------

    def take_entered(self, redis_id: str) -> Entered | None:
        """The verdict taken at fetch for this delivery, if any (asked once, when it starts)."""
        with self._lock:
            return self._entered.pop(redis_id, None)

    def finish_with_ack(self, redis_id: str, head: HandledHead) -> None:
        """Finish this handled head along with its delivery's ack, in the consumer's next batch."""
        with self._lock:
            self._handled[redis_id] = head

    def waiting_leases(self) -> list[tuple[str, str]]:
        """The ``(lane, token)`` leases of fetched messages that still wait to start in this
        process, to renew; the verdicts of messages that are gone are forgotten."""
        with self._lock:
            for redis_id in [rid for rid, entered in self._entered.items() if entered.message() is None]:
                del self._entered[redis_id]
            return [(e.lane, e.token) for e in self._entered.values() if e.verdict is Verdict.RUN]
