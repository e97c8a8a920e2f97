"""A real ``dramatiq`` CLI worker as a subprocess, and bounded waiting.

Tests that need handlers to run the way production runs them start
``dramatiq dramatiq_eventbus.worker`` here, configured only through environment
variables, and stop it in a fixture finalizer: SIGTERM, then SIGKILL of its whole
process group when it does not stop in time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence, Sized
from pathlib import Path
from typing import TypeVar

#: The repository root: the worker runs there, with it on PYTHONPATH, to import test modules.
REPO_ROOT = Path(__file__).resolve().parents[2]

#: The line each Dramatiq worker process logs once it consumes.
READY_LINE = "Worker process is ready for action."

T = TypeVar("T")


def wait_for(
    probe: Callable[[], T | None],
    *,
    timeout: float = 20.0,
    interval: float = 0.05,
    describe: Callable[[], str] = lambda: "",
) -> T:
    """Call ``probe`` until it returns something other than None, False or an empty collection
    (a probe that lists what it waits for returns ``[]`` until it is there); fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None and value is not False and not (isinstance(value, Sized) and len(value) == 0):
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"gave up waiting after {timeout:.0f} s. {describe()}".rstrip())
        time.sleep(interval)


def dramatiq_command() -> list[str]:
    """The ``dramatiq`` CLI of the running interpreter's environment."""
    script = Path(sys.executable).with_name("dramatiq")
    return [str(script)] if script.exists() else [sys.executable, "-m", "dramatiq"]


class WorkerProcess:
    """One ``dramatiq`` CLI process started in its own process group.

    Parameters:
      module(str): What the CLI imports, e.g. ``dramatiq_eventbus.worker``.
      queues(Sequence[str]): The queues it consumes (their delay queues come with them).
      env(Mapping[str, str]): Variables added to a copy of this process's environment,
        after every inherited ``EVENTBUS_*`` variable was dropped.
      log_path(Path): Where its stdout and stderr go.
      threads(int): Worker threads, per worker process.
      processes(int): Worker processes (the CLI's ``--processes``); it is ready when all are.
    """

    def __init__(
        self,
        module: str,
        *,
        queues: Sequence[str],
        env: Mapping[str, str],
        log_path: Path,
        threads: int = 1,
        processes: int = 1,
    ) -> None:
        self.module = module
        self.processes = processes
        self.queues = tuple(queues)
        self.threads = threads
        self.log_path = log_path
        self.env = {key: value for key, value in os.environ.items() if not key.startswith("EVENTBUS_")}
        self.env.update(env)
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None, "the worker was not started"
        return self.process.pid

    def start(self, *, ready_timeout: float = 20.0) -> WorkerProcess:
        """Start the worker and wait until its worker process says it is ready."""
        command = [
            *dramatiq_command(),
            self.module,
            "--processes",
            str(self.processes),
            "--threads",
            str(self.threads),
            "--queues",
            *self.queues,
        ]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_for(self._ready, timeout=ready_timeout, describe=lambda: f"The worker did not start.{self.log_tail()}")
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"the worker exited with {self.process.returncode} while starting.{self.log_tail()}")
        return self.log().count(READY_LINE) >= self.processes

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        tail = "\n".join(self.log().splitlines()[-lines:])
        return f"\n--- last lines of the worker log {self.log_path} ---\n{tail}" if tail else ""

    def stop(self, *, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL of the worker's process group if it is still there after ``timeout`` s."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=timeout)
