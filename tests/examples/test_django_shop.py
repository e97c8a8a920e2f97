"""examples/django_shop against the real PostgreSQL and Redis, with its handlers run by ``manage.py rundramatiq``.

The project runs as its README says (migrate, rundramatiq), on Redis and on RabbitMQ, in a
schema and with queue names of this run's own; its views are called with Django's test client
in a subprocess, so that no Django settings reach the rest of the suite. A view whose transaction commits delivers its
OrderPlaced (the finances handler writes the Invoice), one that rolls back delivers none, and a
rolled-back savepoint drops only its own order's event.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.support.broker_queues import RabbitmqQueues, RedisQueues
from tests.support.servers import RABBITMQ_URL, require_postgres, require_rabbitmq, require_redis
from tests.support.worker_process import READY_LINE, REPO_ROOT, wait_for

PROJECT = REPO_ROOT / "examples" / "django_shop"


@dataclass
class Shop:
    """The example project, migrated into a schema of its own, and its worker."""

    env: dict[str, str]
    schema: str
    postgres_url: str
    worker_log: Path

    def manage(self, *arguments: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", *arguments],
            cwd=PROJECT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def invoices(self) -> list[int]:
        with psycopg.connect(self.postgres_url) as connection:
            rows = connection.execute(f'SELECT order_id FROM "{self.schema}".finances_invoice ORDER BY order_id')
            return [row[0] for row in rows]

    def orders(self) -> list[int]:
        with psycopg.connect(self.postgres_url) as connection:
            return [row[0] for row in connection.execute(f'SELECT id FROM "{self.schema}".orders_order ORDER BY id')]

    def log_tail(self) -> str:
        return "\n--- rundramatiq ---\n" + "\n".join(self.worker_log.read_text(errors="replace").splitlines()[-30:])


# On RabbitMQ, a slow variant: the project runs the same on either broker; make test runs it on Redis.
@pytest.fixture(scope="module", params=["redis", pytest.param("rabbitmq", marks=pytest.mark.slow)])
def shop(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    """The project on one broker, chosen as its README says: DJANGO_SHOP_BROKER."""
    broker: str = request.param
    postgres_url = require_postgres().replace("postgresql+psycopg://", "postgresql://", 1)
    redis_url = require_redis()
    rabbitmq_url = require_rabbitmq() if broker == "rabbitmq" else RABBITMQ_URL
    name = f"django_shop_{uuid.uuid4().hex[:12]}"
    prefix = f"{name}_"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("EVENTBUS_", "DJANGO_"))}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "shop_site.settings",
            "DJANGO_SHOP_BROKER": broker,
            "DJANGO_SHOP_SCHEMA": name,
            "DJANGO_SHOP_QUEUE_PREFIX": prefix,
            "POSTGRES_URL": postgres_url,
            "REDIS_URL": redis_url,
            "RABBITMQ_URL": rabbitmq_url,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        }
    )
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{name}"')
    shop = Shop(env, name, postgres_url, tmp_path_factory.mktemp("django_shop") / "rundramatiq.log")
    worker: subprocess.Popen[bytes] | None = None
    try:
        migrated = shop.manage("migrate", "--no-input")
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        with shop.worker_log.open("wb") as log:
            worker = subprocess.Popen(
                [
                    *(sys.executable, "manage.py", "rundramatiq", "--processes", "1", "--threads", "1"),
                    *("--queues", f"{prefix}events", f"{prefix}events_partitioned"),
                ],
                cwd=PROJECT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(
            lambda: READY_LINE in shop.worker_log.read_text(errors="replace") or worker.poll() is not None,
            timeout=30,
            describe=shop.log_tail,
        )
        assert worker.poll() is None, f"rundramatiq exited with {worker.returncode}{shop.log_tail()}"
        # django_dramatiq built the bus's own broker class: configure() has nothing to warn of.
        assert "made elsewhere" not in shop.worker_log.read_text(errors="replace"), shop.log_tail()
        yield shop
    finally:
        if worker is not None and worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(timeout=10)
        with psycopg.connect(postgres_url, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA "{name}" CASCADE')
        queues = RabbitmqQueues(rabbitmq_url) if broker == "rabbitmq" else RedisQueues(redis_url)
        queues.delete([f"{prefix}events", f"{prefix}events_partitioned"])
        queues.close()


def test_committed_views_deliver_and_rolled_back_ones_do_not(shop: Shop) -> None:
    driven = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tests" / "examples" / "django_shop_driver.py")],
        cwd=PROJECT,
        env={**shop.env, "PYTHONPATH": os.pathsep.join([str(PROJECT), shop.env["PYTHONPATH"]])},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert driven.returncode == 0, driven.stdout + driven.stderr
    ids = json.loads(driven.stdout.strip().splitlines()[-1])
    placed = ids["batch"]["placed"]
    assert ids["batch"]["refused"] == [1]
    expected = sorted([ids["committed"], *placed, ids["last"]])
    # The last order's invoice comes after every event before it: one worker thread, one queue.
    wait_for(lambda: ids["last"] in shop.invoices(), timeout=30, describe=shop.log_tail)
    assert shop.orders() == expected
    # No invoice of the order refused whole (its id lies between the first and the batch's),
    # nor of the one whose savepoint rolled back (between the batch's two).
    assert shop.invoices() == expected
    assert len(range(ids["committed"], ids["last"] + 1)) == len(expected) + 2


@pytest.mark.parametrize("shop", ["redis"], indirect=True)
def test_manage_py_eventbus_shows_the_projects_routes_dead_letters_and_lanes(shop: Shop) -> None:
    routes = shop.manage("eventbus", "routes")
    assert routes.returncode == 0, routes.stdout + routes.stderr
    expected = "orders.events.OrderPlaced\n  -> finances.handlers.CreateInvoice  priority=0"
    assert routes.stdout.startswith(expected), routes.stdout
    dead = shop.manage("eventbus", "dead-letters", "list")
    assert dead.returncode == 0, dead.stdout + dead.stderr
    assert dead.stdout == "no dead letter found\n", dead.stdout
    lanes = shop.manage("eventbus", "lanes")
    assert lanes.returncode == 0, lanes.stdout + lanes.stderr
    assert lanes.stdout == "no lane has a head older than 0 s\n", lanes.stdout
