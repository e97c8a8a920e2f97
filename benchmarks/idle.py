"""Redis calls of an idle worker: the bus's against raw Dramatiq's, on a redis-server of their own.

The shared Redis serves the other scenarios (and, on a shared machine, other people), so both
workers run against a private ``redis-server`` on a free loopback port, where nothing else
talks. Each is measured alone (the other paused) with ``MONITOR``: every command a client
sent counts, and the commands a Lua script runs inside (``[0 lua]``) do not, since they cost no
call of their own. The raw worker consumes as many queues as the bus's worker (the bus's
default queue and its partitioned queue: two), since each queue has consumers of its own.
"""

from __future__ import annotations

import shutil
import socket
import statistics
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import redis

from .deploy import Deployment
from .runner import Context, log
from .workers import Worker


@dataclass(frozen=True)
class IdleCalls:
    """Calls per second of one idle worker, in total and by command."""

    per_second: float
    by_command: dict[str, float]


class PrivateRedis:
    """A throwaway redis-server on a free loopback port, without persistence."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not on PATH: the idle-calls measurement needs one of its own")
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(
            command, cwd=self.directory, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.05)
        client.close()
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def monitor(port: int, seconds: float) -> Counter[str]:
    """The commands clients sent to the server on ``port`` for ``seconds``, by name (script internals left out)."""
    counts: Counter[str] = Counter()
    with socket.create_connection(("127.0.0.1", port)) as connection:
        connection.sendall(b"MONITOR\r\n")
        deadline = time.monotonic() + seconds
        buffered = b""
        started = False
        while (left := deadline - time.monotonic()) > 0:
            connection.settimeout(left)
            try:
                chunk = connection.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            buffered += chunk
            *lines, buffered = buffered.split(b"\r\n")
            for line in lines:
                if line == b"+OK" and not started:
                    started = True
                    continue
                head, _, rest = line.partition(b"] ")
                if b" lua" in head or not rest:
                    continue
                counts[rest.split(b'"')[1].decode().lower()] += 1
    return counts


def measure(ctx: Context, seconds: float, rounds: int) -> tuple[IdleCalls, IdleCalls]:
    """The idle calls per second of the bus's worker and of raw Dramatiq's, medians of ``rounds`` each."""
    server = PrivateRedis(ctx.workdir / "idle-redis").start()
    own = replace(ctx, redis_url=server.url, _shared=None)
    deployment = Deployment(own, "redis", tag="idle")
    workers: dict[str, Worker] = {}
    try:
        workers = {
            "bus": deployment.bus_worker(),
            "raw": deployment.raw_worker(extra_queues=[own.name("redisidle_raw2")]),
        }
        for worker in workers.values():
            worker.launch()
        for worker in workers.values():
            worker.wait_ready()
        figures: dict[str, list[Counter[str]]] = {"bus": [], "raw": []}
        for round_number in range(rounds):
            order = ["bus", "raw"] if round_number % 2 == 0 else ["raw", "bus"]
            for side in order:
                other = workers["raw" if side == "bus" else "bus"]
                other.pause()
                try:
                    time.sleep(1.0)  # past the start of the round: every consumer back to waiting
                    figures[side].append(monitor(server.port, seconds))
                finally:
                    other.resume()
        return _calls(figures["bus"], seconds), _calls(figures["raw"], seconds)
    finally:
        for worker in workers.values():
            worker.stop()
        deployment.clean()
        server.stop()


def _calls(rounds: list[Counter[str]], seconds: float) -> IdleCalls:
    totals = [sum(counts.values()) / seconds for counts in rounds]
    everything: Counter[str] = Counter()
    for counts in rounds:
        everything.update(counts)
    by_command = {name: count / seconds / len(rounds) for name, count in everything.most_common()}
    log(f"    idle calls/s per round: {', '.join(f'{total:.2f}' for total in totals)}")
    return IdleCalls(statistics.median(totals), by_command)
