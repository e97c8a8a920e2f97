"""Dead letters that say why: one log line, and the last failure kept in the message."""

from __future__ import annotations

import logging

from dramatiq.broker import Broker, MessageProxy
from dramatiq.middleware import Middleware

from ..actors import is_handler_actor

logger = logging.getLogger("dramatiq_eventbus.dead_letters")


class DeadLetterReasons(Middleware):
    """Log each dead-lettered bus message once, and keep its last failure in it on Redis.

    Dramatiq's Retries middleware writes the failure's traceback into the message's
    options, but on Redis the dead-letter queue keeps the body as it was last enqueued,
    so the final attempt's reason would be lost (and with ``max_retries=0``, every
    reason). After the nack, this writes the failed message, options included, over the
    dead letter's stored body. RabbitMQ dead-letters the delivered body as it is, so
    there the dead letter carries the reasons of the attempts before the last one, and
    the log line carries the last.

    Only messages for the bus's handler actors are touched.
    """

    def after_nack(self, broker: Broker, message: MessageProxy) -> None:
        if not is_handler_actor(broker, message.actor_name):
            return
        event_type = message.options.get("event_type", "an unknown event")
        exception = message._exception
        reason = f"{type(exception).__name__}: {exception}" if exception is not None else "no exception recorded"
        logger.error(
            "Dead-lettered message %s: %s for %s (partition key %r) after %d attempt(s): %s",
            message.message_id,
            message.actor_name,
            event_type,
            message.options.get("partition_key"),
            message.options.get("retries", 0) or 1,
            reason,
        )
        _keep_reason_on_redis(broker, message)


def _keep_reason_on_redis(broker: Broker, message: MessageProxy) -> None:
    client = getattr(broker, "client", None)
    redis_message_id = message.options.get("redis_message_id")
    if client is None or redis_message_id is None:
        return
    stored = f"{broker.namespace}:{message.queue_name}.XQ.msgs"  # type: ignore[attr-defined]
    if client.hexists(stored, redis_message_id):
        client.hset(stored, redis_message_id, message.encode())
