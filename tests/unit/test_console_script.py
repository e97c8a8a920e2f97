"""The ``eventbus`` console script finds the application in the current directory, as ``dramatiq`` does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

APP = """
from dataclasses import dataclass

@dataclass(frozen=True)
class Greeted:
    name: str

class GreetingHandler:
    def handle_event(self, event):
        pass

HANDLERS = {Greeted: [GreetingHandler]}
"""


@pytest.mark.parametrize("command", [["eventbus"], ["python", "-m", "dramatiq_eventbus"]])
def test_the_command_imports_the_application_from_the_current_directory(tmp_path: Path, command: list[str]) -> None:
    (tmp_path / "greetings_app.py").write_text(APP)
    bin_dir = Path(sys.executable).parent
    program = [str(bin_dir / command[0]) if command[0] == "eventbus" else sys.executable, *command[1:]]
    environ = {key: value for key, value in os.environ.items() if not key.startswith(("EVENTBUS_", "PYTHON"))}
    environ["EVENTBUS_HANDLERS"] = "greetings_app:HANDLERS"
    done = subprocess.run([*program, "routes"], cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "greetings_app.Greeted",
        "  -> greetings_app.GreetingHandler  priority=0  max_retries=4",
    ]
