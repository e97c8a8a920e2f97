"""Where an event was published: the publisher's stack, without the frames that only say how it ran."""

from __future__ import annotations

import os
import threading
import traceback
from traceback import FrameSummary, StackSummary

import dramatiq

import dramatiq_eventbus

#: The innermost frames kept; the caller of publish() and a few of its callers are what a reader needs.
STACK_LIMIT = 8

_LIBRARY = os.path.dirname(os.path.abspath(dramatiq_eventbus.__file__)) + os.sep
_STDLIB = os.path.dirname(os.path.abspath(threading.__file__)) + os.sep
# Code that runs other code: the test runner, a thread, an event loop, an executor. Frames up
# to the innermost of these say how the publisher was started, not who published.
_RUNNER_FILES = tuple(_STDLIB + name for name in ("threading.py", "runpy.py"))
_RUNNER_DIRS = (
    *(_STDLIB + name + os.sep for name in ("asyncio", "concurrent", "unittest")),
    # A Dramatiq worker, a stub worker's: the handler that published is where the story starts.
    os.path.dirname(os.path.abspath(dramatiq.__file__)) + os.sep,
    f"{os.sep}_pytest{os.sep}",
    f"{os.sep}pluggy{os.sep}",
)


def capture_stack() -> StackSummary:
    """The current stack from its first frame of application code to the caller of publish().

    Lines are read lazily, only if the stack is ever shown.
    """
    frames = list(StackSummary.extract(traceback.walk_stack(None), lookup_lines=False))
    frames.reverse()
    start = 0
    for index, frame in enumerate(frames):
        if _is_runner(frame.filename):
            start = index + 1
    kept = [frame for frame in frames[start:] if not frame.filename.startswith(_LIBRARY)]
    # Published from inside the runner or this library alone (a fixture of ours, say): show something.
    return StackSummary.from_list(kept[-STACK_LIMIT:] or frames[-1:])


def format_stack(stack: StackSummary, indent: str) -> list[str]:
    """``path:line in function`` and the source line of each frame, outermost first."""
    lines: list[str] = []
    for frame in stack:
        lines.append(f"{indent}{location(frame)} in {frame.name}")
        if frame.line:
            lines.append(f"{indent}  {frame.line.strip()}")
    return lines


def location(frame: FrameSummary) -> str:
    """``path:line``, the path relative to the working directory when it is below it."""
    path = frame.filename
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive on Windows
        relative = path
    if not relative.startswith(os.pardir):
        path = relative
    return f"{path}:{frame.lineno}"


def _is_runner(filename: str) -> bool:
    return filename.startswith("<frozen ") or filename in _RUNNER_FILES or any(d in filename for d in _RUNNER_DIRS)
