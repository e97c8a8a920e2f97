"""Message authentication on the worker: with a secret key, no unsigned or wrongly signed bus message runs."""

from __future__ import annotations

from dramatiq.broker import Broker, MessageProxy
from dramatiq.middleware import Middleware, SkipMessage

from ..actors import is_handler_actor
from ..signing import Signer

#: The option in which a refused message keeps why, in its dead letter and its log line.
REFUSED = "refused"


class MessageAuthentication(Middleware):
    """Dead-letter every message for the bus's handlers that the bus's keys did not sign.

    Installed first, so that it runs before anything acts on the message: the ordering
    would otherwise let a forged lane take over a real one. A refused message is failed
    and skipped, so Dramatiq dead-letters it without running it or retrying it; the
    dead-letter middleware logs it with the reason kept in its ``refused`` option.

    Parameters:
      signer(Signer | None): The bus's keys; None lets every message through (no key).
    """

    def __init__(self, signer: Signer | None) -> None:
        self.signer = signer

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        signer = self.signer
        if signer is None or not is_handler_actor(broker, message.actor_name):
            return
        problem = signer.problem(message)
        if problem is not None:
            message.options[REFUSED] = problem
            message.fail()
            raise SkipMessage(problem)
