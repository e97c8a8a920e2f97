"""Connections a fault test may break: its own RabbitMQ connections, closed from the server.

The shared RabbitMQ serves other tests at the same time, so a test closes from the server
only the connections that carry its own client-provided name. (A Redis a test may stop
is its own: tests/support/redis_server.py.)
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from urllib.parse import quote, urlsplit, urlunsplit

import pytest


def named_amqp_url(url: str, name: str) -> str:
    """``url`` with a client-provided connection name, which ``rabbitmqctl`` shows."""
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}client_properties={quote(repr({'connection_name': name}))}"


def unique_connection_name() -> str:
    return f"eventbus-faults-{uuid.uuid4().hex[:10]}"


def close_rabbitmq_connections(name: str, reason: str = "eventbus fault test") -> int:
    """Close, from the server, every RabbitMQ connection named ``name``; return how many.

    Skips the test when ``rabbitmqctl`` is not there or cannot reach the node (it needs to
    run as the server's user, or root, on the server's machine).
    """
    listed = _rabbitmqctl("list_connections", "-q", "--no-table-headers", "pid", "client_properties")
    pids = [line.split("\t", 1)[0] for line in listed.splitlines() if f'"connection_name","{name}"' in line]
    # One rabbitmqctl per connection, all at once: each spends half a second starting up.
    closing = [_rabbitmqctl_start("close_connection", pid, reason) for pid in pids]
    for process in closing:
        _, stderr = process.communicate(timeout=60)
        if process.returncode != 0:
            pytest.fail(f"rabbitmqctl close_connection failed ({process.returncode}): {stderr.strip()[:200]}")
    return len(pids)


def set_rabbitmq_policy(name: str, pattern: str, definition: dict[str, object]) -> None:
    """A policy on the queues matching ``pattern`` (a test's own queue); RabbitMQ applies it at once."""
    _rabbitmqctl("set_policy", "--apply-to", "queues", name, pattern, json.dumps(definition))


def clear_rabbitmq_policy(name: str) -> None:
    _rabbitmqctl("clear_policy", name)


def _rabbitmqctl_executable() -> str:
    executable = shutil.which("rabbitmqctl")
    if executable is None:
        pytest.skip("rabbitmqctl is not installed here: cannot close connections from the server")
    return executable


def _rabbitmqctl_start(*arguments: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [_rabbitmqctl_executable(), *arguments], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _rabbitmqctl(*arguments: str) -> str:
    done = subprocess.run([_rabbitmqctl_executable(), *arguments], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        pytest.skip(f"rabbitmqctl {arguments[0]} failed ({done.returncode}): {done.stderr.strip()[:200]}")
    return done.stdout


def port_of(url: str) -> int:
    parts = urlsplit(url)
    return parts.port or {"redis": 6379, "amqp": 5672}[parts.scheme]


def proxied(url: str, port: int) -> str:
    """``url`` pointing at 127.0.0.1:``port`` instead of its own host and port."""
    parts = urlsplit(url)
    credentials = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit(parts._replace(netloc=f"{credentials}127.0.0.1:{port}"))


def host_port(url: str) -> tuple[str, int]:
    return urlsplit(url).hostname or "127.0.0.1", port_of(url)
