"""The real servers the tests talk to, and what to do when one is not answering.

``REDIS_URL``, ``RABBITMQ_URL`` and ``POSTGRES_URL`` name them (default: the local
ports). A test that needs a server that does not answer is skipped with one loud line;
under ``CI=true`` it fails instead, so a CI run can never pass by skipping.
"""

from __future__ import annotations

import os
import socket
import sys
from functools import cache
from urllib.parse import urlsplit

import pytest

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
RABBITMQ_URL = os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
#: A SQLAlchemy URL; the local server trusts the postgres user.
POSTGRES_URL = os.environ.get("POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@cache
def answers(url: str) -> bool:
    parts = urlsplit(url)
    # "postgresql+psycopg" names a driver too; the port is the database's.
    scheme = parts.scheme.split("+", 1)[0]
    default_port = {"redis": 6379, "rediss": 6379, "amqp": 5672, "amqps": 5671, "postgresql": 5432}[scheme]
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=2):
            return True
    except OSError:
        return False


def require(url: str, what: str) -> None:
    """Skip the calling test loudly, or fail it under CI, when ``url`` does not answer."""
    if answers(url):
        return
    message = f"{what} is not answering at {url}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}, and CI=true requires it", pytrace=False)
    print(f"\n!!! SKIPPING: {message} !!!", file=sys.stderr)
    pytest.skip(message)


def require_redis() -> str:
    require(REDIS_URL, "Redis")
    return REDIS_URL


def require_rabbitmq() -> str:
    require(RABBITMQ_URL, "RabbitMQ")
    return RABBITMQ_URL


def require_postgres() -> str:
    require(POSTGRES_URL, "PostgreSQL")
    return POSTGRES_URL
