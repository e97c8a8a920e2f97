"""The one exception raised inside encoding and decoding, and how its path is told."""

from __future__ import annotations

#: Past this many steps, a path keeps its two ends: a hostile payload nested a thousand
#: levels deep must not make a log line of a thousand segments.
_MAX_SHOWN_STEPS = 16


class CodecFailure(Exception):
    """A value that cannot be encoded, or a payload that cannot be decoded.

    It is raised where the problem is found; each container on the way back up adds its
    step to ``path``, so the happy path pays nothing for knowing where a failure was.

    Parameters:
      problem(str): What is wrong, without the path.
    """

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.path: list[str] = []

    def at(self, step: str) -> CodecFailure:
        """Add one step (``.field``, ``[2]``, ``['key']``) in front of the path; return self."""
        self.path.append(step)
        return self

    def where(self, root: str) -> str:
        """The path from ``root``, e.g. ``OrderCreated.lines[2].sku``."""
        steps = self.path[::-1]
        if len(steps) > _MAX_SHOWN_STEPS:
            half = _MAX_SHOWN_STEPS // 2
            steps = [*steps[:half], "...", *steps[-half:]]
        return root + "".join(steps)

    def render(self, root: str) -> str:
        """``root.path: problem``, or just the problem when it concerns the root itself."""
        if not self.path:
            return self.problem
        return f"{self.where(root)}: {self.problem}"
