"""The event context on a worker: what current_context() returns while a handler's actor runs.

Not a middleware of its own: :class:`~.authentication.MessageAuthentication` calls these, once
a message passed it. Every middleware on the broker costs every publish() a call of each of
its enqueue hooks, and this needs none.
"""

from __future__ import annotations

from dramatiq.broker import MessageProxy

from ..actors import expect_message, forget_message
from ..metadata import context_for, from_options


def note_context(message: MessageProxy) -> None:
    """Give the message for a bus handler that is about to run its :class:`~.metadata.EventContext`.

    Read from the message's options (which a forger may have written: the consumers and the
    authentication refused those of the wrong type or length, or unsigned, before this runs)
    and its retry count: ``attempt`` is Dramatiq's ``retries`` option plus one.

    Parameters:
      message(MessageProxy): A message for one of the bus's handler actors.
    """
    if not message.args:
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


def forget_context(message: MessageProxy) -> None:
    """Forget what :func:`note_context` noted, once the message is done or skipped.

    Parameters:
      message(MessageProxy): The message.
    """
    if message.args:
        forget_message(message.args[0])
