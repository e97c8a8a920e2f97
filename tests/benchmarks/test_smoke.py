"""The benchmarks still run: every scenario at a tiny size, against the real servers.

Nothing is asserted about speed (``make bench`` measures that); only that each scenario
of issue 6 ran to the end and reported its rows.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.servers import require_rabbitmq, require_redis

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.redis
@pytest.mark.rabbitmq
def test_every_scenario_runs_at_a_tiny_size(tmp_path: Path) -> None:
    require_redis()
    require_rabbitmq()
    output = tmp_path / "smoke.json"
    finished = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", "--output", str(output)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert finished.returncode == 0, f"{finished.stdout}\n{finished.stderr}"
    document = json.loads(output.read_text())
    assert {row["scenario"] for row in document["results"]} == {str(n) for n in range(1, 16)}
    assert {"nproc", "python", "dramatiq", "redis_server", "rabbitmq_server"} <= document["machine"].keys()
    latency = [row["title"] for row in document["results"] if row["scenario"] == "8"]
    # Per broker and rate (one at the smoke size): unordered and ordered, p50 and p99; then the idle calls.
    assert len(latency) == 9 and sum("ordered, p50" in title for title in latency) == 4, latency
    assert "idle worker" in latency[-1]
    assert "| # | scenario |" in finished.stdout
