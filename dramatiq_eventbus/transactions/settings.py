"""The relay's settings, from the ``EVENTBUS_OUTBOX_*`` variables (see ``environment.OUTBOX_VARIABLES``) or the CLI."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..brokers.urls import redact
from ..environment import OUTBOX_VARIABLES
from ..errors import ConfigurationError
from .outbox import DEFAULT_TABLE
from .relay import DEFAULT_BATCH_SIZE, DEFAULT_POLL_SECONDS, DEFAULT_PRUNE_AFTER_SECONDS


@dataclass(frozen=True)
class RelaySettings:
    """Where the outbox is and how to relay it: from the ``EVENTBUS_OUTBOX_*`` variables or the CLI.

    Parameters:
      url(str): The SQLAlchemy database URL.
      table(str): The table, optionally ``"schema.table"``.
      batch_size(int): Rows per pass.
      poll_seconds(float): The longest wait between passes.
      prune_after_seconds(float | None): How long sent rows are kept; None keeps them.
    """

    url: str = field(repr=False)  # shown redacted by __repr__
    table: str = DEFAULT_TABLE
    batch_size: int = DEFAULT_BATCH_SIZE
    poll_seconds: float = DEFAULT_POLL_SECONDS
    prune_after_seconds: float | None = DEFAULT_PRUNE_AFTER_SECONDS

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{name}={getattr(self, name)!r}" for name in ("table", "batch_size", "poll_seconds", "prune_after_seconds")
        )
        return f"RelaySettings(url={redact(self.url)!r}, {fields})"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> RelaySettings:
        """Read the variables; keyword ``overrides`` that are not None win.

        Raises:
          ConfigurationError: No URL, or a value that does not parse.
        """
        environ = os.environ if environ is None else environ
        # A blank variable counts as unset, as it does for install_from_env().
        values: dict[str, Any] = {
            v.argument: v.parse(v.name, environ[v.name]) for v in OUTBOX_VARIABLES if environ.get(v.name, "").strip()
        }
        values.update({key: value for key, value in overrides.items() if value is not None})
        if "url" not in values:
            raise ConfigurationError(
                "the outbox relay needs the database: set EVENTBUS_OUTBOX_URL (or --url) to its SQLAlchemy URL"
            )
        return cls(**values)
