"""Message authentication on the worker: with a secret key, no unsigned or wrongly signed bus message runs,
and, key or not, no message that sets an option the bus never writes for its handlers."""

from __future__ import annotations

from typing import Any

from dramatiq.broker import Broker, MessageProxy
from dramatiq.message import Message
from dramatiq.middleware import Middleware, SkipMessage

from ..actors import is_handler_actor
from ..signing import Signer
from .contexts import forget_context, note_context

#: The option in which a refused message keeps why, in its dead letter and its log line.
REFUSED = "refused"

#: Options Dramatiq's middleware acts on that override a handler's actor options (its age and
#: time limits, its retry policy) or send messages on their say (callbacks, pipelines, group
#: completions). The bus never writes them on a handler's message, and the signature does not
#: cover options: on a forged message they made a worker send a message to any actor, or fail
#: with a CRITICAL traceback after the handler ran. ``min_backoff`` and ``max_backoff`` are
#: left alone: ``stub_worker`` shortens retries with them, and a backoff longer than the
#: handler's own makes an ``eta`` that the consumers refuse anyway.
NEVER_WRITTEN = frozenset(
    (
        "max_age",
        "time_limit",
        "max_retries",
        "retry_when",
        "throws",
        "on_success",
        "on_failure",
        "on_retry_exhausted",
        "pipe_target",
        "pipe_ignore",
        "group_completion_uuid",
        "group_completion_callbacks",
        "notify_shutdown",
    )
)


class MessageAuthentication(Middleware):
    """Dead-letter every message for the bus's handlers that the bus's keys did not sign, or
    that sets an option of :data:`NEVER_WRITTEN`.

    The bus's own brokers' consumers run :meth:`problem` as they read each message, and
    dead-letter what it refuses with one line, before Dramatiq's worker sees it; this
    middleware does the same for any other broker. Installed first, so that it runs before
    anything acts on the message: the ordering would otherwise let a forged lane take over a
    real one. A refused message is failed and skipped, so Dramatiq dead-letters it without
    running it or retrying it; the dead-letter middleware logs it with the reason kept in
    its ``refused`` option (and Dramatiq adds a line that it was skipped).

    Parameters:
      signer(Signer | None): The bus's keys; None lets every message through (no key).
    """

    def __init__(self, signer: Signer | None) -> None:
        self.signer = signer

    def problem(self, broker: Broker, message: Message[Any] | MessageProxy) -> str | None:
        """Why ``message``, read from ``broker``, must not run; None for a message it may run.

        Parameters:
          broker(Broker): Where it was read; only messages for the bus's handlers are checked.
          message(Message | MessageProxy): The message.
        """
        if not is_handler_actor(broker, message.actor_name):
            return None
        overriding = NEVER_WRITTEN.intersection(message.options)
        if overriding:
            names = ", ".join(sorted(overriding))  # names of NEVER_WRITTEN: nothing the message chose
            return f"it sets {names}, which the bus never writes on a handler's message"
        return None if self.signer is None else self.signer.problem(message)

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        # A message the bus's consumer checked as it read it (a ReceivedMessage's ``checked``,
        # read through the proxy) is not verified again: that would hash its payload twice.
        problem = None if getattr(message, "checked", False) else self.problem(broker, message)
        if problem is not None:
            message.options[REFUSED] = problem
            message.fail()
            raise SkipMessage(problem)
        if is_handler_actor(broker, message.actor_name):
            # Here rather than in a middleware of its own, which would cost every publish() its
            # enqueue hooks: only a message that passed gets a context.
            note_context(message)

    def after_process_message(
        self, broker: Broker, message: MessageProxy, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        forget_context(message)

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        forget_context(message)
