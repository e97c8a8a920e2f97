"""What the broker packages do when the upstream they mirror is not the one they were tested with."""

from __future__ import annotations

import importlib.metadata
import logging


def warn_if_broken(logger_name: str, distributions: tuple[str, ...], problems: list[str], advice: str) -> None:
    """Log one WARNING naming the installed versions of ``distributions`` and each problem.

    Parameters:
      logger_name(str): The fence module's logger.
      distributions(tuple[str, ...]): The packages whose private parts the fence relies on.
      problems(list[str]): What of the contract does not hold; nothing is logged when empty.
      advice(str): What to install instead.
    """
    if not problems:
        return
    versions = ", ".join(f"{name} {importlib.metadata.version(name)}" for name in distributions)
    logging.getLogger(logger_name).warning(
        "The installed %s are not what dramatiq-eventbus was tested with, and its consumer may misbehave: %s. "
        "Run `make test-upstream` to judge them, or install %s.",
        versions,
        "; ".join(problems),
        advice,
    )
