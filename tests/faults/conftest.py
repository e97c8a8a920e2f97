"""Fixtures of the fault tests, and the table of figures printed at the end of the run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import require_rabbitmq, require_redis

from ..support.redis_server import RedisServer
from .harness import FIGURES, Deployment

BROKERS = [
    pytest.param("redis", marks=pytest.mark.redis, id="redis"),
    pytest.param("rabbitmq", marks=pytest.mark.rabbitmq, id="rabbitmq"),
]


def broker_url(kind: str) -> str:
    """The shared broker's URL; skips loudly (fails under CI) when it, or the records' Redis, is down."""
    require_redis()
    return require_rabbitmq() if kind == "rabbitmq" else require_redis()


@pytest.fixture
def deploy(tmp_path: Path) -> Iterator[list[Deployment]]:
    """Deployments the test appends to; each is torn down after it: workers stopped, queues deleted."""
    made: list[Deployment] = []
    yield made
    for deployment in made:
        deployment.tear_down()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, which it may stop and start."""
    require_redis()  # the handlers' records stay in the shared one
    directory = tmp_path / "own-redis"
    directory.mkdir()
    server = RedisServer(directory).start()
    yield server
    server.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not FIGURES:
        return
    write = terminalreporter.write_line
    terminalreporter.section("fault figures (per handler message)")
    write(f"{'fault':<58} {'broker':<9} {'sent':>7} {'processed':>9} {'lost':>5} {'duplicated':>10}  note")
    for figure in FIGURES:
        tally = figure.tally
        write(
            f"{figure.fault:<58} {figure.broker:<9} {tally.sent:>7} {tally.processed:>9} {tally.lost:>5} "
            f"{tally.duplicated:>10}  {figure.note}"
        )
