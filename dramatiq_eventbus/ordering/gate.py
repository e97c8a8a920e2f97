"""Lane calls made once per batch by the bus's consumers, instead of once per message.

Asking a lane whether its head may run (enter) and finishing the head (finish) cost a
Redis round trip each. Made by the worker threads, one message at a time, they cost a
keyed event about four times the worker CPU of an unkeyed one (measured: 485 against
105 µs). The bus's consumers make them for a whole batch instead:

- right after a fetch (Redis) or a read of what RabbitMQ delivered, one round trip enters
  every laned message of it, and the verdicts wait here until a worker thread starts the
  message (the ordering's coordinator takes them). With a secret key, a message the keys
  refuse takes no lease: it is dead-lettered before it starts, and a lease taken at fetch
  would keep the lane's real head, carrying the same id, from running until the lease ran out;
- a handled head's FINISH waits here for its delivery's ack, and goes out with the other
  acks of the batch, in one round trip. With the lanes in the broker's own Redis
  (:class:`AckingLaneGate`), the same script acknowledges the delivery and puts the
  lane's next head on its queue. With RabbitMQ (:class:`DeliveryLaneGate`), the consumer
  finishes the heads in the lanes' Redis, then publishes the next heads and sends the acks
  in one write, without waiting for publisher confirms: the lane in Redis is the next
  head's durable copy, and the lanes' sweep sends a head again if it stalls.

A lease is taken at fetch, so its message may wait in the prefetch before it starts: the
worker's lane maintenance renews the leases of the messages that still wait in this
process, and forgets those whose messages are gone (a consumer dropped what it had
fetched), whose leases then expire; a lease older than a third of its term is also
renewed when its message starts.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from dramatiq.broker import MessageProxy
from dramatiq.message import Message

from ..metadata import uuid7
from ..signing import Signer
from .lanes import VERDICTS, AckingLaneStore, HandledHead, LaneStore, LeasedAtFetch, Verdict, warn_if_lost


class Entered(NamedTuple):
    """A fetched delivery's lane verdict, taken at fetch (a named tuple: one is made per laned
    delivery, in a third of the time a frozen dataclass takes: 240 against 740 ns).

    Parameters:
      lane(str): Its lane.
      message_id(str): Its message id.
      verdict(Verdict): RUN (it holds the lease), BUSY or STALE.
      token(str): The lease's owner token.
      at(float): When, on :func:`time.monotonic`.
      message(weakref.ref[Any]): The fetched message or delivery, alive while it waits here.
    """

    lane: str
    message_id: str
    verdict: Verdict
    token: str
    at: float
    message: weakref.ref[Any]


def new_token() -> str:
    """A lease owner token, unique to one delivery: a UUIDv7, whose random bits come from a
    pool refilled by one ``os.urandom`` per hundreds of ids, where a call of its own per token
    showed in profiles of the consumer thread, which feeds every worker thread."""
    return uuid7()


class LaneGate:
    """What a consumer and the ordering share about lanes, per delivery.

    The consumer enters the laned messages it received and finishes the handled heads with
    their acks (each subclass says how, for its broker); the coordinator takes the verdicts
    and hands over handled heads (:meth:`take_entered`, :meth:`finish_with_ack`). A
    subclass says by what key it knows a delivery (:meth:`key_of`).

    Parameters:
      lanes(LaneStore): The lanes.
      signer(Signer | None): The worker's keys; a message they refuse is not entered. The
        coordinator sets it (:meth:`.GatedCoordinator.authenticated_by`).
    """

    def __init__(self, lanes: LaneStore, signer: Signer | None = None) -> None:
        self.lanes = lanes
        self.signer = signer
        self._lock = threading.Lock()
        self._entered: dict[Hashable, Entered] = {}
        self._handled: dict[Hashable, HandledHead] = {}

    def key_of(self, message: Any) -> Hashable:
        """The key of a delivery: the same for what the consumer received and what the worker runs."""
        raise NotImplementedError

    def _may_lease(self, message: Any) -> bool:
        """Whether ``message`` may take a lease: the keys, if any, accept it."""
        signer = self.signer
        # A message the consumer's check passed (``checked``) is not verified a second time.
        return signer is None or getattr(message, "checked", False) or signer.problem(message) is None

    def _enter(self, messages: Sequence[Any]) -> None:
        """Enter every laned message of ``messages``, in one round trip; their verdicts wait here."""
        laned = [m for m in messages if "lane" in m.options and self._may_lease(m)]
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
                self._entered[self.key_of(message)] = entered

    def _give_back(self, keys: Iterable[Hashable], queue_name: str) -> None:
        """Deliveries that go back to their queue without running: give up the leases they took,
        so that whichever delivery of the head comes next may run it at once."""
        with self._lock:
            held = [entered for key in keys if (entered := self._entered.pop(key, None)) is not None]
        leased = [entered for entered in held if entered.verdict is Verdict.RUN]
        if leased:
            self.lanes.give_back([(e.lane, e.message_id, e.token) for e in leased], queue_name=queue_name)

    def _take_handled(self, keys: Iterable[Hashable]) -> list[tuple[Hashable, HandledHead]]:
        with self._lock:
            return [(key, head) for key in keys if (head := self._handled.pop(key, None)) is not None]

    def _restore_handled(self, handled: Iterable[tuple[Hashable, HandledHead]]) -> None:
        """Handled heads whose finish failed: the consumer sends their acks again, and must finish them then."""
        with self._lock:
            for key, head in handled:
                self._handled.setdefault(key, head)

    # -- the middleware's side -------------------------------------------------------------

    def take_entered(self, message: Any) -> Entered | None:
        """The verdict taken at fetch for this delivery, if any (asked once, when it starts)."""
        with self._lock:
            entered = self._entered.pop(self.key_of(message), None)
        # A verdict whose delivery is gone belongs to another one that had the same key.
        return entered if entered is not None and entered.message() is not None else None

    def finish_with_ack(self, message: Any, head: HandledHead) -> None:
        """Finish this handled head along with its delivery's ack, in the consumer's next batch."""
        with self._lock:
            self._handled[self.key_of(message)] = head

    def waiting_leases(self) -> list[tuple[str, str]]:
        """The ``(lane, token)`` leases of fetched messages that still wait to start in this
        process, to renew; the verdicts of messages that are gone are forgotten."""
        with self._lock:
            for key in [key for key, entered in self._entered.items() if entered.message() is None]:
                del self._entered[key]
            return [(e.lane, e.token) for e in self._entered.values() if e.verdict is Verdict.RUN]


class AckingLaneGate(LaneGate):
    """The hook of the bus's Redis consumer (its ``FetchHook``), for lanes in the broker's own
    Redis: deliveries are known by their Redis ids, and a head is finished by the script that
    acknowledges its delivery.

    Parameters:
      lanes(AckingLaneStore): Lanes that live in the broker's Redis.
      signer(Signer | None): See :class:`LaneGate`.
    """

    def __init__(self, lanes: AckingLaneStore, signer: Signer | None = None) -> None:
        super().__init__(lanes, signer)
        self.acking_lanes = lanes

    def key_of(self, message: Any) -> str:
        redis_id: str = message.options["redis_message_id"]
        return redis_id

    def lease_arguments(self) -> list[Any]:
        """What the consumer's fetch needs to lease the lane heads it takes (``fetch.lua``)."""
        return self.acking_lanes.lease_arguments(new_token())

    def fetched(self, messages: Sequence[Message[Any]], leased: Mapping[str, LeasedAtFetch], queue_name: str) -> None:
        """Keep the verdicts the fetch took, and enter the other laned messages of the fetch in
        one round trip; give back the leases of deliveries that will not run under them."""
        now = time.monotonic()
        rest, kept = [], set()
        with self._lock:
            for message in messages:
                redis_id = self.key_of(message)
                at_fetch = leased.get(redis_id)
                # The lease is this message's if it is the head the lane scripts put there:
                # same lane and id (a body written over it by hand may say otherwise).
                if (
                    at_fetch is not None
                    and message.options.get("lane") == at_fetch.lane
                    and message.message_id == redis_id
                    and self._may_lease(message)
                ):
                    self._entered[redis_id] = Entered(
                        at_fetch.lane,
                        message.message_id,
                        VERDICTS[at_fetch.verdict],
                        at_fetch.token,
                        now,
                        weakref.ref(message),
                    )
                    kept.add(redis_id)
                else:
                    rest.append(message)
        unused = [
            (at_fetch.lane, redis_id, at_fetch.token)
            for redis_id, at_fetch in leased.items()
            if at_fetch.verdict == Verdict.RUN.value and redis_id not in kept
        ]
        if unused:
            self.lanes.give_back(unused, queue_name=queue_name)
        self._enter(rest)

    def put_back(self, redis_ids: Iterable[str], queue_name: str) -> None:
        """Fetched deliveries put back without running: give up the leases they took."""
        self._give_back(redis_ids, queue_name)

    def ack(self, redis_ids: Sequence[str], *, queue_name: str, acks_key: str) -> bool:
        """Acknowledge deliveries, finishing the handled heads among them, in one round trip;
        False, having done nothing, when no handled head is among them."""
        handled = self._take_handled(redis_ids)
        if not handled:
            return False
        done = {rid for rid, _ in handled}
        heads = [(head, str(rid)) for rid, head in handled]
        others = [rid for rid in redis_ids if rid not in done]
        try:
            statuses = self.acking_lanes.finish_handled(
                heads, queue_name=queue_name, acks_key=acks_key, other_acks=others
            )
        except BaseException:
            self._restore_handled(handled)
            raise
        for (head, _), status in zip(heads, statuses, strict=True):
            warn_if_lost(head.lane, head.message_id, status)
        return True


class DeliveryLaneGate(LaneGate):
    """The hook of the bus's RabbitMQ consumer (its ``DeliveryHook``), for lanes in a Redis
    beside the broker: deliveries are known by the objects the consumer hands the worker,
    and the consumer publishes the next heads that finishing returns.

    Parameters:
      lanes(LaneStore): The lanes.
      signer(Signer | None): See :class:`LaneGate`.
    """

    def key_of(self, message: Any) -> Hashable:
        # The consumer's delivery object itself reaches the worker and comes back with the ack;
        # a delivery tag would not do: two consumers of a process, or one restarted, reuse tags.
        return id(message)

    def received(self, deliveries: Sequence[MessageProxy]) -> None:
        """Enter every laned delivery of what the consumer read at once, in one round trip."""
        self._enter(deliveries)

    def dropped(self, deliveries: Iterable[MessageProxy], queue_name: str) -> None:
        """Received deliveries that will not run here (RabbitMQ delivers them again): give up their leases."""
        self._give_back([self.key_of(delivery) for delivery in deliveries], queue_name)

    def finish_handled(self, deliveries: Sequence[MessageProxy]) -> list[bytes]:
        """Finish the handled heads among ``deliveries``, about to be acknowledged, in one round
        trip; return the encoded next heads of their lanes, for the consumer to publish.

        Raises:
          Exception: The lanes' Redis failed; the heads stay handed over, to be finished when
            the consumer tries these acks again.
        """
        handled = self._take_handled(self.key_of(delivery) for delivery in deliveries)
        if not handled:
            return []
        queues = {self.key_of(delivery): delivery.queue_name for delivery in deliveries}
        try:
            finished = self.lanes.finish_many([(head, queues[key]) for key, head in handled])
        except BaseException:
            self._restore_handled(handled)
            raise
        next_heads = []
        for (_, head), outcome in zip(handled, finished, strict=True):
            warn_if_lost(head.lane, head.message_id, outcome.status)
            if outcome.next_message is not None:
                next_heads.append(outcome.next_message)
        return next_heads
