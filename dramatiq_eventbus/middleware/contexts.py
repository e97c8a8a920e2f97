"""The event context on a worker: what current_context() returns while a handler's actor runs."""

from __future__ import annotations

from typing import Any

from dramatiq.broker import Broker, MessageProxy
from dramatiq.middleware import Middleware

from ..actors import expect_message, forget_message, is_handler_actor
from ..metadata import context_for, from_options


class EventContexts(Middleware):
    """Give each message for the bus's handlers its :class:`~.metadata.EventContext`.

    Read from the message's options (which a forger may have written: the consumers and
    :class:`~.authentication.MessageAuthentication` refused those of the wrong type or
    length, or unsigned, before this runs) and its retry count: ``attempt`` is Dramatiq's
    ``retries`` option plus one.
    """

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        if not message.args or not is_handler_actor(broker, message.actor_name):
            return
        options = message.options
        retries = options.get("retries")
        key = options.get("partition_key")
        metadata = from_options(options, message_id=message.message_id, message_timestamp=message.message_timestamp)
        context = context_for(
            metadata,
            handler=message.actor_name,
            partition_key=key if isinstance(key, str) else None,
            attempt=(retries if type(retries) is int and retries >= 0 else 0) + 1,
            message_id=message.message_id,
        )
        expect_message(message.args[0], context)

    def after_process_message(
        self, broker: Broker, message: MessageProxy, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        if message.args:
            forget_message(message.args[0])

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        if message.args:
            forget_message(message.args[0])
