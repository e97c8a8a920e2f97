"""The tutorial, followed literally in a fresh virtualenv, gives a working app and passing tests.

docs/tutorial.md is run block by block (see tests/docs/markdown.py for the convention) in an
empty directory: its first commands make a virtualenv there and ``pip install`` the package
from a copy of this repository's working tree, from PyPI's dependencies; its files are
written; its worker is a real ``dramatiq`` process on Redis; the order it places must show
in that worker's log as the tutorial says; and its own pytest suite must pass. The README's
tutorial must hold the same blocks, so running one runs both.

Three things differ from a reader's terminal, none of them in the blocks: ``pip install
dramatiq-eventbus`` installs the copy of this repository instead; the virtualenv the first
block activates stays active in the later blocks, as it would in the reader's shell; and the
bus's queues get names of their own (``EVENTBUS_QUEUE``...), so that no other test's worker
on the same Redis takes the tutorial's messages.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docs.markdown import README, REPO_ROOT, TUTORIAL, Block, code_blocks, problems, readme_tutorial
from tests.support import servers
from tests.support.broker_queues import RedisQueues
from tests.support.worker_process import READY_LINE

#: The Redis URL the tutorial names; replaced by REDIS_URL when the tests use another.
TUTORIAL_REDIS_URL = "redis://127.0.0.1:6379/0"
#: What the tutorial's first block installs, replaced by the copy of this repository.
PACKAGE = "dramatiq-eventbus"
_INSTALL = re.compile(rf"^pip install\b.*?(?<![\w/.-]){re.escape(PACKAGE)}(?![\w/.\[-])", re.MULTILINE)
#: Seconds a command may take: a pip install from PyPI on a busy machine, a pytest run.
COMMAND_TIMEOUT = 600
#: Seconds to wait for a worker to start, and for a line the tutorial promises to show.
WAIT = 60


def test_the_tutorial_follows_the_convention() -> None:
    blocks = code_blocks(TUTORIAL.read_text())
    assert not problems(blocks), "\n".join(problems(blocks))
    langs = {block.lang for block in blocks}
    assert langs == {"python", "sh", "text"}, langs


def test_the_readme_tutorial_is_the_tutorial() -> None:
    """The README's 5-minute tutorial and docs/tutorial.md hold the same blocks, in the same order."""
    in_readme = [(block.lang, block.body) for block in code_blocks(readme_tutorial(README.read_text()))]
    in_docs = [(block.lang, block.body) for block in code_blocks(TUTORIAL.read_text())]
    for index, (readme_block, docs_block) in enumerate(zip(in_readme, in_docs, strict=False)):
        assert readme_block == docs_block, f"block {index + 1} differs between README.md and docs/tutorial.md"
    assert len(in_readme) == len(in_docs), "README.md and docs/tutorial.md have a different number of blocks"


@pytest.fixture
def redis_url() -> Iterator[str]:
    yield servers.require_redis()


def test_the_tutorial_runs(tmp_path: Path, redis_url: str) -> None:
    tutorial = Tutorial(tmp_path, redis_url)
    try:
        for block in code_blocks(TUTORIAL.read_text()):
            tutorial.follow(block)
    finally:
        tutorial.close()
    assert tutorial.worker_log_path.exists(), "the tutorial started no worker"
    assert tutorial.ran_pytest, "the tutorial ran no pytest"
    assert tutorial.checked_lines, "the tutorial shows no output to check"


class Tutorial:
    """A reader following the tutorial in an empty directory, with one terminal for the worker.

    Parameters:
      root(Path): A scratch directory: the project goes in ``root/project``.
      redis_url(str): The Redis the worker and the publisher use.
    """

    def __init__(self, root: Path, redis_url: str) -> None:
        self.project = root / "project"
        self.project.mkdir()
        self.package = _copy_of_the_package(root / "package")
        self.redis_url = redis_url
        suffix = uuid.uuid4().hex[:12]
        self.queues = (f"tutorial_{suffix}", f"tutorial_partitioned_{suffix}")
        self.env = _clean_environment()
        self.env.update({"EVENTBUS_QUEUE": self.queues[0], "EVENTBUS_PARTITIONED_QUEUE": self.queues[1]})
        # The interpreter a reader calls `python` before the virtualenv exists.
        bootstrap = root / "bootstrap"
        bootstrap.mkdir()
        (bootstrap / "python").symlink_to(sys.executable)
        self.env["PATH"] = os.pathsep.join([str(bootstrap), self.env.get("PATH", "")])
        self.worker: subprocess.Popen[bytes] | None = None
        self.worker_log_path = root / "worker.log"
        self.output = ""
        self.ran_pytest = False
        self.checked_lines = 0

    def follow(self, block: Block) -> None:
        if block.lang == "python":
            assert block.path is not None, f"line {block.line}: a python block names no file"
            path = self.project / block.path
            assert path.parent.is_dir(), f"line {block.line}: {block.path}'s directory was not made before"
            path.write_text(block.body)
        elif block.lang == "sh":
            script = block.body.replace(TUTORIAL_REDIS_URL, self.redis_url)
            script = _INSTALL.sub(lambda m: m[0].replace(PACKAGE, str(self.package)), script)
            if any(line.startswith("dramatiq ") for line in script.splitlines()):
                self.start_worker(script)
            else:
                self.run(script, block)
            self.keep_the_virtualenv_active()
        elif block.lang == "text":
            self.expect(block)
        else:
            raise AssertionError(f"line {block.line}: a {block.lang!r} block, which the tutorial test cannot run")

    def run(self, script: str, block: Block) -> None:
        result = subprocess.run(
            ["bash", "-e", "-c", script],
            cwd=self.project,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
        )
        self.output = result.stdout + result.stderr
        assert result.returncode == 0, (
            f"the commands at line {block.line} of docs/tutorial.md exited with {result.returncode}:\n"
            f"{script}\n--- output ---\n{self.output}"
        )
        self.ran_pytest = self.ran_pytest or any(line.strip() == "pytest" for line in script.splitlines())

    def start_worker(self, script: str) -> None:
        assert self.worker is None, "the tutorial starts a second worker"
        with self.worker_log_path.open("wb") as log:
            self.worker = subprocess.Popen(
                ["bash", "-e", "-c", script],
                cwd=self.project,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.output = ""
        self.wait(lambda: READY_LINE in self.worker_log(), "the worker to start")

    def keep_the_virtualenv_active(self) -> None:
        venv = self.project / ".venv"
        if venv.is_dir() and self.env.get("VIRTUAL_ENV") != str(venv):
            self.env["VIRTUAL_ENV"] = str(venv)
            self.env["PATH"] = os.pathsep.join([str(venv / "bin"), self.env["PATH"]])

    def expect(self, block: Block) -> None:
        """Each line of a text block shows in the last command's output or in the worker's log."""
        for line, pattern in block.expected_lines():
            self.wait(
                lambda pattern=pattern: pattern.search(self.output) or pattern.search(self.worker_log()),
                f"the line {line!r} (docs/tutorial.md line {block.line})",
            )
            self.checked_lines += 1

    def wait(self, probe: object, what: str) -> None:
        assert callable(probe)
        deadline = time.monotonic() + WAIT
        while not probe():
            if self.worker is not None and self.worker.poll() is not None:
                raise AssertionError(f"the worker exited with {self.worker.returncode}{self.tails()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"waited {WAIT} s for {what}{self.tails()}")
            time.sleep(0.1)

    def worker_log(self) -> str:
        try:
            return self.worker_log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tails(self) -> str:
        worker = "\n".join(self.worker_log().splitlines()[-30:])
        output = "\n".join(self.output.splitlines()[-30:])
        return f"\n--- the last command's output ---\n{output}\n--- the worker's log ---\n{worker}"

    def close(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            os.killpg(self.worker.pid, signal.SIGTERM)
            try:
                self.worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.worker.pid, signal.SIGKILL)
                self.worker.wait(timeout=15)
        queues = RedisQueues(self.redis_url)
        try:
            queues.delete(self.queues)
        finally:
            queues.close()


def _copy_of_the_package(target: Path) -> Path:
    """What ``pip install`` needs of the working tree, copied, so that a build leaves nothing in the repository."""
    target.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, target / name)
    shutil.copytree(
        REPO_ROOT / "dramatiq_eventbus",
        target / "dramatiq_eventbus",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    return target


def _clean_environment() -> dict[str, str]:
    """This process's environment without what would reach into the repository's virtualenv or tests."""
    dropped = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTEST_CURRENT_TEST")
    env = {key: value for key, value in os.environ.items() if key not in dropped and not key.startswith("EVENTBUS_")}
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p and p != venv_bin)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env
