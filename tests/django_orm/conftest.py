"""Fixtures of the Django tests: a PostgreSQL schema migrated by ``manage.py migrate``, Redis, subprocesses.

Django never runs in the pytest process: each scenario, command and worker is a subprocess
configured by :mod:`.settings` through variables, so no Django setting leaks into other tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text

from tests.support.servers import require_postgres
from tests.support.worker_process import REPO_ROOT, WorkerProcess

# The fixtures of the transaction tests: Redis database 3, a tag, queues, the broker's view, the records.
from tests.transactions.conftest import queues, records, redis_url, tag, view
from tests.transactions.support import ACTOR_OPTIONS, Records, unique

__all__ = ["queues", "records", "redis_url", "tag", "view"]

HANDLERS = "tests.django_orm.handlers:HANDLERS"


class Django:
    """Runs Django subprocesses on the run's schema, with a bus on this test's queues.

    Parameters:
      env(dict[str, str]): The variables every subprocess gets.
    """

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def environ(self, **extra: str) -> dict[str, str]:
        inherited = {key: value for key, value in os.environ.items() if not key.startswith("EVENTBUS_")}
        pythonpath = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
        return {**inherited, **self.env, **extra, "PYTHONPATH": pythonpath}

    def run(self, *command: str, timeout: float = 60, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *command],
            cwd=REPO_ROOT,
            env=self.environ(**extra),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def manage(self, *arguments: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return self.run("-m", "django", *arguments, **extra)

    def worker(self, queues: tuple[str, str], log_path: Path, *, threads: int = 2, **extra: str) -> WorkerProcess:
        """A started ``dramatiq tests.django_orm.worker``: a worker of the Django project, on ``queues``."""
        return WorkerProcess(
            "tests.django_orm.worker", queues=queues, env=self.environ(**extra), log_path=log_path, threads=threads
        ).start()

    def scenario(
        self, name: str, broker_url: str | None = None, env: dict[str, str] | None = None, **arguments: Any
    ) -> dict[str, Any]:
        """Run one scenario of :mod:`.scenarios` with ``arguments``; ``env`` adds variables."""
        extra = {"EVENTBUS_BROKER_URL": broker_url} if broker_url else {}
        extra.update(env or {})
        done = self.run("-m", "tests.django_orm.scenarios", name, json.dumps(arguments), **extra)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        assert done.returncode == 0 and lines, f"scenario {name} failed:\n{done.stdout}\n{done.stderr}"
        result: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
        return result


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    made = create_engine(require_postgres(), pool_size=4)
    yield made
    made.dispose()


@pytest.fixture(scope="session")
def schema(engine: Engine) -> Iterator[str]:
    """A schema of this run's own, migrated by the app's migrations; dropped with everything in it at the end."""
    name = unique("eventbus_django")
    with engine.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{name}"'))
    try:
        migrated = Django(base_env(name)).manage("migrate", "--no-input")
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        yield name
    finally:
        with engine.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{name}" CASCADE'))


def base_env(schema: str) -> dict[str, str]:
    return {
        "DJANGO_SETTINGS_MODULE": "tests.django_orm.settings",
        "DJANGO_ORM_SCHEMA": schema,
        "POSTGRES_URL": require_postgres(),
    }


@pytest.fixture
def clean(engine: Engine, schema: str) -> str:
    """The run's schema, its outbox and inbox emptied: each test relays only its own rows."""
    with engine.begin() as connection:
        connection.execute(text(f'TRUNCATE "{schema}".eventbus_outbox, "{schema}".eventbus_inbox'))
    return schema


@pytest.fixture
def django_env(clean: str, queues: tuple[str, str], redis_url: str, records: Records) -> Django:
    """Subprocesses whose bus is on this test's queues and Redis (a scenario may give another broker)."""
    return Django(
        {
            **base_env(clean),
            "EVENTBUS_HANDLERS": HANDLERS,
            "EVENTBUS_BROKER_URL": redis_url,
            "EVENTBUS_QUEUE": queues[0],
            "EVENTBUS_PARTITIONED_QUEUE": queues[1],
            "EVENTBUS_DEFAULT_ACTOR_OPTIONS": json.dumps(ACTOR_OPTIONS),
            **records.env(),
        }
    )
