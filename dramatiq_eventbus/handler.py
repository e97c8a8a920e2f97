"""What a handler is: the base class, its options and the results it may return."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class Error:
    """A handler's way to say it failed without raising.

    Returning ``Error(reason)`` from ``handle_event`` is a failure: Dramatiq retries the
    message like after an exception, and dead-letters it after the last attempt, with
    the reason in the log and in the message's ``traceback`` option.

    Parameters:
      reason(object): Why it failed. Its ``str()`` goes into the log.
    """

    reason: object


class Handler:
    """Base class of event handlers.

    Subclasses implement ``handle_event(event)``, as a plain ``def`` or an ``async def``.
    Each handler class becomes one Dramatiq actor, so each is processed, retried and
    prioritized on its own. An async one runs on the event loop of Dramatiq's AsyncIO
    middleware in a worker (the bus installs it), and to completion in the caller inline,
    in the test mailbox's inline mode and in ``run_event``; its results, retries, time
    limits and ordering are those of a sync one.

    One instance per handler class is made at ``configure()`` (by ``handler_factory``, if
    given) and shared by every thread of the process: keep per-event state in local
    variables, not on ``self``.

    Class attributes:
      actor_options(dict[str, Any]): Options for the handler's actor: ``priority``
        (0-9, lower is more urgent, default 0), ``max_retries`` (default 4, i.e. five
        attempts) and any option of the broker's middleware, such as
        ``min_backoff``, ``max_backoff``, ``time_limit`` or ``throws``.
    """

    actor_options: ClassVar[dict[str, Any]] = {}

    def interested(self, event: Any) -> bool:
        """Say whether this handler wants ``event``; runs in the publisher, before any I/O.

        It must be pure: no database queries, no API calls, no side effects. It is always
        a plain ``def``, also in an async handler: publish() cannot await it, and an
        ``async def interested`` is a ConfigurationError at configure(). The default is True.
        """
        return True

    def handle_event(self, event: Any) -> Any:
        """Handle one event. Return anything for success, or ``Error(reason)`` for a failure.

        Override it as ``def handle_event`` or ``async def handle_event``; an async one's
        return value means the same.

        Raises:
          NotImplementedError: Always, here: subclasses implement it.
        """
        raise NotImplementedError(f"{type(self).__qualname__} must implement handle_event(event)")


def handler_name(handler_class: type) -> str:
    """The stable, readable name of a handler class: ``package.module.ClassName``.

    It is the handler's Dramatiq actor name, so publishers and workers must agree on it.
    """
    return f"{handler_class.__module__}.{handler_class.__qualname__}"
