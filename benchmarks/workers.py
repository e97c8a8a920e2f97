"""Real worker processes for the throughput, latency and memory scenarios, and their stats.

A worker is a ``dramatiq`` (or ``celery``) CLI process started in its own process
group. To measure how fast it drains a queue, the benchmark pauses it (SIGSTOP to the
group), fills its queue, resumes it (SIGCONT), and reads from Redis when the first and
the last message of that round were handled (see :mod:`benchmarks.workload`): the
filling never competes with the worker for the CPU, and worker start-up is paid once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from .runner import Context

REPO_ROOT = Path(__file__).resolve().parents[1]
#: What each Dramatiq worker process logs once it consumes.
DRAMATIQ_READY = "Worker process is ready for action."


def cli_command(name: str) -> list[str]:
    script = Path(sys.executable).with_name(name)
    return [str(script)] if script.exists() else [sys.executable, "-m", name]


class Worker:
    """One CLI worker in its own process group.

    Parameters:
      command(Sequence[str]): What to run.
      env(Mapping[str, str]): Added to this process's environment, less its ``EVENTBUS_*``.
      log_path(Path): Where its output goes.
      ready(Callable[[Worker], bool]): Whether it consumes yet.
    """

    def __init__(
        self, command: Sequence[str], env: Mapping[str, str], log_path: Path, ready: Callable[[Worker], bool]
    ) -> None:
        self.command = list(command)
        self.env = {key: value for key, value in os.environ.items() if not key.startswith("EVENTBUS_")}
        self.env.update(env)
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
        self.log_path = log_path
        self.ready = ready
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> Worker:
        self.launch()
        return self.wait_ready(timeout)

    def launch(self) -> None:
        """Start the process; :meth:`wait_ready` waits for it to consume."""
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command,
                cwd=REPO_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 60.0) -> Worker:
        assert self.process is not None, "launch() first"
        deadline = time.monotonic() + timeout
        while not self.ready(self):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the worker did not start: {' '.join(self.command)}\n{self.log_tail()}")
            time.sleep(0.05)
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def _signal(self, signum: int) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signum)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGCONT and SIGTERM to the group; SIGKILL if it is still there after ``timeout`` s."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        try:
            self.resume()
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=timeout)
        except ProcessLookupError:
            pass


def worker_pids(worker: Worker) -> set[int]:
    """The pids of the worker's process group: the CLI's main process and its worker processes."""
    assert worker.process is not None
    group = worker.process.pid
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == group:
                    pids.add(int(entry.name))
            except ProcessLookupError:
                continue
    return pids


def dramatiq_worker(
    ctx: Context, module: str, env: Mapping[str, str], name: str, *, processes: int = 1, threads: int = 8
) -> Worker:
    """``dramatiq <module>`` with the stats variables; ready once every process logged so."""
    command = [*cli_command("dramatiq"), module, "--processes", str(processes), "--threads", str(threads)]
    return Worker(
        command,
        {**stats_env(ctx), **env},
        ctx.workdir / f"{name}.log",
        lambda worker: worker.log().count(DRAMATIQ_READY) >= processes,
    )


def stats_env(ctx: Context) -> dict[str, str]:
    return {"BENCH_REDIS_URL": ctx.redis_url, "BENCH_STATS_KEY": stats_key(ctx)}


def stats_key(ctx: Context) -> str:
    return f"bench:{ctx.run}:stats"


@contextmanager
def running(*workers: Worker) -> Iterator[tuple[Worker, ...]]:
    """Start the workers together, wait until each consumes, and stop them all at the end."""
    try:
        for worker in workers:
            worker.launch()
        for worker in workers:
            worker.wait_ready()
        yield workers
    finally:
        for worker in workers:
            worker.stop()


# -- what the workers report ----------------------------------------------------------------


@dataclass(frozen=True)
class Handled:
    """One batch's messages, as the workers handled them."""

    count: int
    first: float
    last: float

    @property
    def rate(self) -> float:
        """Messages per second from the first handled to the last."""
        return (self.count - 1) / (self.last - self.first) if self.count > 1 and self.last > self.first else 0.0


class Stats:
    """Reads what :mod:`benchmarks.workload` wrote to Redis from every worker process.

    Parameters:
      ctx(Context): The run, whose key the workers write under.
    """

    def __init__(self, ctx: Context) -> None:
        self.client: Any = redis.Redis.from_url(ctx.redis_url)
        self.key = stats_key(ctx)
        self._batch = 0

    def new_batch(self) -> int:
        """A batch number no message of this run has used yet (0 is kept for warm-up)."""
        self._batch += 1
        return self._batch

    def handled(self, batch: int) -> Handled:
        entries = [
            json.loads(value)
            for field_name, value in self.client.hgetall(f"{self.key}:counts").items()
            if field_name.decode().endswith(f":{batch}")
        ]
        if not entries:
            return Handled(0, 0.0, 0.0)
        return Handled(sum(e[0] for e in entries), min(e[1] for e in entries), max(e[2] for e in entries))

    def wait(self, batch: int, count: int, *, timeout: float, workers: Sequence[Worker] = ()) -> Handled:
        """Wait until ``count`` messages of ``batch`` were handled."""
        deadline = time.monotonic() + timeout
        while True:
            handled = self.handled(batch)
            if handled.count >= count:
                return handled
            if time.monotonic() > deadline:
                tails = "".join(f"\n--- {w.log_path} ---\n{w.log_tail()}" for w in workers)
                raise RuntimeError(f"only {handled.count} of {count} messages of batch {batch} were handled{tails}")
            time.sleep(0.05)

    def latencies(self, batch: int) -> list[float]:
        return [float(value) for value in self.client.lrange(f"{self.key}:latency:{batch}", 0, -1)]

    def resident_kib(self, pids: set[int]) -> dict[int, int]:
        """The last resident size each of ``pids`` reported, by pid."""
        reported = {int(pid): int(kib) for pid, kib in self.client.hgetall(f"{self.key}:rss").items()}
        return {pid: kib for pid, kib in reported.items() if pid in pids}

    def clean(self) -> None:
        keys = list(self.client.scan_iter(match=f"{self.key}:*", count=1000))
        if keys:
            self.client.delete(*keys)
        self.client.close()


def cpu_seconds(pids: set[int]) -> float:
    """User plus system CPU time the processes used so far, from /proc (those gone count 0)."""
    ticks = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def drain_rate(
    worker: Worker,
    stats: Stats,
    fill: Callable[[int], int],
    *,
    others: Sequence[Worker] = (),
    timeout: float = 120.0,
    cpu: list[float] | None = None,
) -> float:
    """Messages/s of ``worker`` draining a full queue.

    Pause it, ``fill(batch)`` its queue (which returns how many messages it sent), and
    resume it; the ``others`` stay paused meanwhile, so they take no CPU from it. The
    worker's CPU time per message (µs) is appended to ``cpu``: on a shared, noisy machine
    it tells more steadily than the rate where the worker's time goes.
    """
    batch = stats.new_batch()
    for paused in (worker, *others):
        paused.pause()
    try:
        count = fill(batch)
        pids = worker_pids(worker)
        used_before = cpu_seconds(pids)
        worker.resume()
        handled = stats.wait(batch, count, timeout=timeout, workers=[worker])
        if cpu is not None:
            cpu.append((cpu_seconds(pids) - used_before) / count * 1e6)
        return handled.rate
    finally:
        for paused in (worker, *others):
            paused.resume()
