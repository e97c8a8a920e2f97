"""Routing: which queue an event's messages go to."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import ConfigurationError

# Dramatiq's own rule for queue names.
_QUEUE_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9._-]*")


@dataclass(frozen=True)
class Queues:
    """The bus's two queues.

    Parameters:
      default(str): For events without a partition key, handled in parallel.
      partitioned(str): For events with a partition key.
    """

    default: str = "events"
    partitioned: str = "events_partitioned"

    def __post_init__(self) -> None:
        for role, name in (("queue", self.default), ("partitioned_queue", self.partitioned)):
            if not isinstance(name, str) or not _QUEUE_NAME.fullmatch(name):
                raise ConfigurationError(
                    f"{role} {name!r} is not a valid queue name: it must start with a letter or an "
                    f"underscore, followed by letters, digits, dots, dashes or underscores"
                )
        if self.default == self.partitioned:
            raise ConfigurationError(f"queue and partitioned_queue must differ, both are {self.default!r}")

    def for_key(self, partition_key: str | None) -> str:
        return self.default if partition_key is None else self.partitioned
