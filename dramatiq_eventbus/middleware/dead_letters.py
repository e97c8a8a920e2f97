"""Dead letters that say why: one log line, and the last failure kept in the message."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from dramatiq.broker import Broker, MessageProxy
from dramatiq.middleware import Middleware

from ..actors import is_handler_actor
from ..untrusted import REASON_CHARACTERS, described, escaped, shown
from .authentication import REFUSED


class DeadLetterReasons(Middleware):
    """Log each dead-lettered bus message once, and keep its last failure in it where the broker allows.

    Dramatiq's Retries writes the failure's traceback into the message's options, but on
    Redis the dead-letter queue keeps the body as it was last enqueued, so the final
    attempt's reason would be lost (and with ``max_retries=0``, every reason). After the
    nack, ``keep_dead_letter`` writes the failed message, options included, over the
    stored dead letter. RabbitMQ dead-letters the delivered body as it is, so there the
    dead letter carries the reasons of the attempts before the last one, and the log line
    carries the last.

    Only messages for the bus's handler actors are touched.

    Parameters:
      keep_dead_letter(Callable[[Message], None] | None): Writes a failed message over its
        stored dead letter; None where the broker keeps none to rewrite.
    """

    def __init__(self, keep_dead_letter: Callable[[MessageProxy], None] | None) -> None:
        self.logger = logging.getLogger(f"{__name__}.{type(self).__name__}")
        self.keep_dead_letter = keep_dead_letter

    def after_process_message(
        self, broker: Broker, message: MessageProxy, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        # Installed before Retries, so this runs after Retries has failed the message or not.
        if message.failed and is_handler_actor(broker, message.actor_name):
            # The exception's text may quote the payload, which a forged message controls.
            self._log(message, described(exception) if exception is not None else "no exception recorded")

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        if message.failed and is_handler_actor(broker, message.actor_name):
            # Written by MessageAuthentication, but a message may arrive carrying one of its own.
            refused = message.options.get(REFUSED)
            self._log(
                message,
                f"refused: {escaped(str(refused), REASON_CHARACTERS)}"
                if refused
                else "failed before it started (e.g. past its max_age)",
            )

    def after_nack(self, broker: Broker, message: MessageProxy) -> None:
        if self.keep_dead_letter is not None and is_handler_actor(broker, message.actor_name):
            self.keep_dead_letter(message)

    def _log(self, message: MessageProxy, reason: str) -> None:
        event_type = message.options.get("event_type")
        self.logger.error(
            "Dead-lettered message %s: %s for %s (partition key %s, event %s) after %d attempt(s): %s",
            shown(message.message_id),
            message.actor_name,  # one of the bus's handlers: its name is the configuration's
            "an unknown event" if event_type is None else shown(event_type),
            shown(message.options.get("partition_key")),
            shown(message.options.get("event_id")),
            message.options.get("retries", 0) or 1,
            reason,
        )
