"""The Django app, each Django process in a subprocess so that no Django settings reach the rest of the suite.

- suite_app.py under pytest-django, on the real PostgreSQL (a schema of this run's own) and
  django_dramatiq's Redis broker: on-commit publishing, savepoints, the event_bus fixture in
  TestCase-style tests, the settings and their checks;
- ``manage.py check`` (``python -m django check``) with a wrong EVENTBUS (more cases in suite_app.py);
- importing the app without Django, and the core without the app.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from tests.support.broker_queues import RedisQueues
from tests.support.servers import require_postgres, require_redis
from tests.support.worker_process import REPO_ROOT

SETTINGS = "tests.django_app.settings"


def run(command: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    environ = {key: value for key, value in os.environ.items() if not key.startswith(("EVENTBUS_", "DJANGO_"))}
    environ.update(env)
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return subprocess.run(command, cwd=REPO_ROOT, env=environ, capture_output=True, text=True, timeout=timeout)


def libpq_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


@pytest.fixture(scope="module")
def django_env() -> Iterator[dict[str, str]]:
    """The variables of tests/django_app/settings.py: an empty schema and queue names of this run's own."""
    url = libpq_url(require_postgres())
    redis_url = require_redis()
    name = f"eventbus_django_app_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{name}"')
    try:
        yield {"DJANGO_APP_SCHEMA": name, "DJANGO_APP_PREFIX": name, "DJANGO_SETTINGS_MODULE": SETTINGS}
    finally:
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA "{name}" CASCADE')
        queues = RedisQueues(redis_url)
        queues.delete([f"{name}_q", f"{name}_pq"])
        queues.close()


def test_the_app_under_pytest_django(django_env: dict[str, str]) -> None:
    result = run(
        [
            sys.executable,
            "-m",
            "pytest",
            f"--ds={SETTINGS}",
            "-p",
            "no:cacheprovider",
            "-q",
            "tests/django_app/suite_app.py",
        ],
        django_env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout and "skipped" not in result.stdout, result.stdout


def test_manage_py_check_reports_a_wrong_setting(django_env: dict[str, str]) -> None:
    result = run([sys.executable, "-m", "django", "check"], {**django_env, "DJANGO_APP_BROKEN": "keys"})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "SystemCheckError" in result.stderr
    assert "(dramatiq_eventbus.E002) settings.EVENTBUS has an unknown key 'HANDLER'." in result.stderr
    assert "HINT: Did you mean 'HANDLERS'?" in result.stderr
    assert "settings.EVENTBUS['QUEUE'] must be a queue name, not int" in result.stderr
    assert "(dramatiq_eventbus.E005) settings.EVENTBUS['BROKER_URL'] is set while django_dramatiq" in result.stderr


def test_the_app_names_the_extra_without_django_and_the_core_never_imports_it() -> None:
    # One process: first the core (Django is installed, and must not be imported), then the app without Django.
    script = (
        "import sys, dramatiq_eventbus, dramatiq_eventbus.cli, dramatiq_eventbus.testing.plugin\n"
        "print(sorted(m for m in sys.modules if m == 'django' or m.startswith('dramatiq_eventbus.contrib')))\n"
        "sys.modules['django'] = None\n"
        "try:\n"
        "    import dramatiq_eventbus.contrib.django\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    result = run([sys.executable, "-c", script], {})
    assert result.stdout.splitlines() == [
        "[]",
        "dramatiq_eventbus.contrib.django needs Django: pip install 'dramatiq-eventbus[django]'",
    ], result.stdout + result.stderr
