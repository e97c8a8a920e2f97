"""Bad configuration, one input at a time: each fails at start with a ConfigurationError naming it.

tests/unit/test_configure.py checks configure() itself for most inputs; here are the ones
it leaves out, and the core issue's five as a real ``dramatiq`` worker meets them: it must
exit at once, with the error's one line at the end of its output, instead of consuming.
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from dramatiq_eventbus import ConfigurationError, EventBus, EventBusError
from tests.support.worker_process import REPO_ROOT, dramatiq_command

from . import handlers

#: (the EVENTBUS_* variables a worker starts with, the line its ConfigurationError must say)
WORKER_STARTS = {
    "import path that does not resolve": (
        {"EVENTBUS_HANDLERS": "tests.faults.bad_wiring:UNRESOLVED"},
        "cannot import 'tests.faults.handlers:Tock': module 'tests.faults.handlers' has no attribute 'Tock'",
    ),
    "handler without handle_event": (
        {"EVENTBUS_HANDLERS": "tests.faults.bad_wiring:NO_HANDLE_EVENT"},
        "tests.faults.bad_wiring.NoHandleEvent has no handle_event(event) method",
    ),
    "priority outside 0-9": (
        {"EVENTBUS_HANDLERS": "tests.faults.bad_wiring:BAD_PRIORITY"},
        "tests.faults.bad_wiring.PriorityTen.actor_options: priority must be an int from 0 to 9",
    ),
    "unknown actor option": (
        {"EVENTBUS_HANDLERS": "tests.faults.bad_wiring:UNKNOWN_OPTION"},
        "tests.faults.bad_wiring.UnknownOption.actor_options: unknown actor option 'max_attempts'",
    ),
    "key that is not a class": (
        {"EVENTBUS_HANDLERS": "tests.faults.bad_wiring:NOT_A_CLASS"},
        "'order.created' is not an import path of the form 'pkg.module:Name'",
    ),
    "handlers mapping that does not exist": (
        {"EVENTBUS_HANDLERS": "tests.faults.handlers:NOPE"},
        "module 'tests.faults.handlers' has no attribute 'NOPE'",
    ),
    "heartbeat below a second": (
        {"EVENTBUS_HANDLERS": "tests.faults.handlers:HANDLERS", "EVENTBUS_REDIS_HEARTBEAT_SECONDS": "0.2"},
        "redis_heartbeat_seconds must be at least 1 second, not 0.2",
    ),
    "broker URL with a bad port": (
        {"EVENTBUS_HANDLERS": "tests.faults.handlers:HANDLERS", "EVENTBUS_BROKER_URL": "redis://u:hunter2@h:63x9/0"},
        "broker URL 'redis://u:***@h:63x9/0' is not valid: Port could not be cast to integer value",
    ),
}


def test_a_worker_refuses_each_bad_configuration_at_start() -> None:
    # All at once: each start costs a second or two of imports.
    started = {
        case: subprocess.Popen(
            [*dramatiq_command(), "dramatiq_eventbus.worker", "--processes", "1", "--threads", "1"],
            cwd=REPO_ROOT,
            env={"PATH": "", "PYTHONPATH": str(REPO_ROOT), "EVENTBUS_BROKER_URL": "stub", **variables},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for case, (variables, _) in WORKER_STARTS.items()
    }
    for case, process in started.items():
        try:
            output, _ = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            pytest.fail(f"{case}: the worker did not exit: it started despite a bad configuration")
        expected = WORKER_STARTS[case][1]
        assert process.returncode != 0, (case, output[-2000:])
        errors = [line for line in output.splitlines() if line.startswith("dramatiq_eventbus.errors.")]
        assert errors == [f"dramatiq_eventbus.errors.ConfigurationError: {errors[0].split(': ', 1)[-1]}"], case
        assert expected in errors[0], (case, errors[0])
        assert "hunter2" not in output, "a password was shown"


def configure_error(**arguments: Any) -> str:
    arguments.setdefault("handlers", handlers.HANDLERS)
    arguments.setdefault("broker", "stub")
    with pytest.raises(ConfigurationError) as raised:
        EventBus().configure(**arguments)
    assert isinstance(raised.value, EventBusError)
    return str(raised.value)


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (
            {"broker": "redis://127.0.0.1/0", "redis_heartbeat_seconds": True},
            "redis_heartbeat_seconds must be a positive number, not True",
        ),
        (
            {"broker": "redis://127.0.0.1/0", "redis_heartbeat_seconds": 0.5},
            "redis_heartbeat_seconds must be at least 1 second, not 0.5: a live worker silent for longer",
        ),
        (
            {"broker": "redis://127.0.0.1/0", "redis_heartbeat_seconds": "60"},
            "redis_heartbeat_seconds must be a positive number, not '60'",
        ),
        ({"broker": "redis://127.0.0.1:port/0"}, "broker URL 'redis://127.0.0.1:port/0' is not valid: Port"),
        (
            {"broker": "amqp://guest:secret@127.0.0.1:5672/%2F?heartbeat=often"},
            "broker URL 'amqp://guest:***@127.0.0.1:5672/%2F?heartbeat=often' is not valid: Invalid heartbeat value",
        ),
    ],
)
def test_bad_broker_settings_are_named(arguments: dict[str, Any], expected: str) -> None:
    message = configure_error(**arguments)
    assert expected in message
    assert "secret@" not in message


def test_default_actor_options_that_are_not_a_mapping_are_named() -> None:
    assert "default_actor_options" in configure_error(default_actor_options=[("max_retries", 1)])


def test_a_lanes_redis_url_of_the_wrong_scheme_is_named() -> None:
    assert "redis_url" in configure_error(redis_url="http://127.0.0.1:6379/0")


def test_throws_that_are_not_exception_classes_are_named() -> None:
    assert "throws" in configure_error(default_actor_options={"throws": "ValueError"})
