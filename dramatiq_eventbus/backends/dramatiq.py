"""The Dramatiq backend: one message per delivery, enqueued on the bus's broker."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from dramatiq.broker import Broker
from dramatiq.message import Message

from ..brokers import BatchFailed, BrokerSupport, support_for
from ..brokers.limits import check_all_sendable
from ..brokers.sending import emit_enqueue_hooks, encoded_all
from ..codecs import type_name
from ..delivery import Delivery
from ..errors import EventEncodeError, PublishError
from ..metadata import uuid7
from ..ordering import LaneStore, lane_name
from ..signing import OPTION, Signer
from ..untrusted import REASON_CHARACTERS, described, escaped

logger = logging.getLogger("dramatiq_eventbus.publish")


class DramatiqBackend:
    """Enqueues each delivery as a Dramatiq message for its handler's actor.

    The event travels as the message's only argument, already encoded by the codec, so
    the envelope stays plain JSON. Each message's options carry the event's type name,
    partition key and metadata (``event_id``, ``published_at`` in Unix milliseconds,
    ``correlation_id``, ``causation_id``), and on a broker with queue priorities, the handler's priority.

    With lanes, a message with a partition key is first added to its lane in Redis, and
    sent only when it is its lane's head; the worker that handles a head sends the next.

    Parameters:
      broker(Broker): Where to enqueue.
      lanes(LaneStore | None): The lanes that order partitioned events across the cluster.
      support(BrokerSupport | None): What the bus can do with ``broker``; asked of it if None.
      signer(Signer | None): Signs every message, when the bus has a secret key.
      max_message_bytes(int | None): The workers' limit, checked here for the messages that
        wait in lanes (the broker's own sending checks the others); None checks nothing.
    """

    def __init__(
        self,
        broker: Broker,
        *,
        lanes: LaneStore | None = None,
        support: BrokerSupport | None = None,
        signer: Signer | None = None,
        max_message_bytes: int | None = None,
    ) -> None:
        self.broker = broker
        self.lanes = lanes
        self._max_bytes = max_message_bytes
        support = support_for(broker) if support is None else support
        self._send = support.send
        self._priorities = support.priorities
        self._signer = signer

    def message_for(self, delivery: Delivery) -> Message[Any]:
        options: dict[str, Any] = {
            "event_type": type_name(type(delivery.event)),
            "partition_key": delivery.partition_key,
        }
        if delivery.metadata is not None:
            options.update(delivery.metadata.options())
        if self.lanes is not None and delivery.partition_key is not None:
            options["lane"] = lane_name(delivery.handler.name, delivery.partition_key)
        if self._priorities:
            # The bus's priority is 0-9 with 0 most urgent; RabbitMQ serves the highest number first.
            options["broker_priority"] = 9 - delivery.handler.priority
        message: Message[Any] = Message(
            # A UUIDv7 rather than Dramatiq's uuid4: as unguessable, and made in half the time.
            message_id=uuid7(),
            queue_name=delivery.queue_name,
            actor_name=delivery.handler.name,
            args=(delivery.payload,),
            kwargs={},
            options=options,
        )
        return message if self._signer is None else self._signer.signed(message)

    def deliver(self, deliveries: Sequence[Delivery]) -> None:
        self.send([self.message_for(delivery) for delivery in deliveries])

    def send_again(self, stored: Sequence[Message[Any]], options: Sequence[Mapping[str, Any]]) -> None:
        """Send messages that :meth:`message_for` built earlier, perhaps in another process (an
        outbox relay), each under a new message id and with ``options`` added.

        The lane comes from this backend's configuration, not the publisher's: a lane option
        without lanes here would leave the message waiting for a lane that never moves.

        Raises:
          PublishError: The broker failed; it names what was sent and what was not.
        """
        again = []
        for message, extra in zip(stored, options, strict=True):
            renewed = {key: value for key, value in message.options.items() if key != "lane"}
            renewed.update(extra)
            key = renewed.get("partition_key")
            if self.lanes is not None and isinstance(key, str):
                renewed["lane"] = lane_name(message.actor_name, key)
            renewed.pop(OPTION, None)  # signed again below, with this configuration's lane and key
            message = dataclasses.replace(message, message_id=uuid7(), options=renewed)
            again.append(message if self._signer is None else self._signer.signed(message))
        self.send(again)

    def send(self, messages: Sequence[Message[Any]]) -> None:
        """Send messages built by :meth:`message_for` together.

        Raises:
          PublishError: The broker failed; it names what was sent and what was not.
        """
        held = self._add_to_lanes(messages)
        to_send = [m for m in messages if m.message_id not in held]
        try:
            self._send(to_send)
        except BatchFailed as failure:
            failed = [m for position, m in enumerate(to_send) if position not in failure.accepted]
            # A lane head is safe in its lane: the workers' sweep sends it within lane_stall_seconds.
            unsent = [m for m in failed if "lane" not in m.options]
            if len(unsent) < len(failed):
                logger.warning(
                    "Could not send %d lane head(s) now (%s); their lanes will.", len(failed) - len(unsent), failure
                )
            if unsent:
                sent = [m for m in messages if m not in unsent]
                raise _publish_error(sent, unsent, failure.cause) from failure.cause

    def _add_to_lanes(self, messages: Sequence[Message[Any]]) -> set[str]:
        """Add partitioned messages to their lanes; return the ids of those not to be sent here:
        those that wait their turn, and, when the lanes put heads on the broker, every one."""
        lanes = self.lanes
        laned = [m for m in messages if "lane" in m.options]
        if not laned or lanes is None:
            return set()
        try:
            if lanes.sends_heads:
                # The lanes put each head on its queue themselves, so the enqueue hooks run here,
                # once per message, when it is published.
                laned = [lanes.as_enqueued(m) for m in laned]
                emit_enqueue_hooks(self.broker, "before", laned)
            bodies = encoded_all(laned)
            if self._max_bytes is not None:
                check_all_sendable(laned, bodies, self._max_bytes)  # before anything is written
            heads = lanes.append(
                [(m.options["lane"], m.message_id, body, m.queue_name) for m, body in zip(laned, bodies, strict=True)]
            )
        except EventEncodeError:
            raise
        except Exception as exc:
            raise _publish_error([], messages, exc) from exc
        if lanes.sends_heads:
            emit_enqueue_hooks(self.broker, "after", laned)
            return {m.message_id for m in laned}
        return {m.message_id for m, is_head in zip(laned, heads, strict=True) if not is_head}


def _publish_error(
    sent_messages: Sequence[Message[Any]], unsent_messages: Sequence[Message[Any]], exc: BaseException
) -> PublishError:
    sent = tuple(m.actor_name for m in sent_messages)
    unsent = tuple(m.actor_name for m in unsent_messages)
    messages = (*sent, *unsent)
    # The relay sends what outbox rows hold: their actor and queue names are read from a database.
    return PublishError(
        f"the broker failed while publishing ({described(exc)}); "
        f"{len(sent)} of {len(messages)} messages are known to be sent"
        + (f" (to {escaped(', '.join(sent), REASON_CHARACTERS)})" if sent else "")
        + "; the others were not confirmed and may or may not have been written, so publishing them again can "
        "duplicate them",
        sent=sent,
        unsent=unsent,
    )
