"""Which scenarios a ``python -m benchmarks`` command line runs, and at what size."""

from __future__ import annotations

import pytest

from benchmarks.__main__ import parse, plan
from benchmarks.runner import FULL, QUICK, SMOKE


def numbers(argv: list[str]) -> tuple[list[str], list[str]]:
    _, run, skipped = plan(parse(argv))
    return [n for s in run for n in s.numbers], [n for s in skipped for n in s.numbers]


def test_make_bench_runs_all_but_the_slow_parts_at_full_size() -> None:
    run, skipped = numbers([])
    assert sorted(set(run), key=int) == [str(n) for n in range(1, 16) if n != 9]
    assert sorted(skipped) == ["14", "15", "9"]
    assert plan(parse([]))[0] is FULL


def test_slow_adds_them() -> None:
    run, skipped = numbers(["--slow"])
    assert skipped == [] and {"9", "14", "15"} <= set(run) and run.count("14") == 2


def test_quick_is_the_publish_and_worker_scenarios_with_less_work() -> None:
    run, skipped = numbers(["--quick"])
    assert run == ["1", "2", "3", "4", "5", "6", "7"]
    assert "8" in skipped and "13" in skipped
    sizes = plan(parse(["--quick"]))[0]
    assert sizes is QUICK and QUICK.drain < FULL.drain and QUICK.rounds < FULL.rounds


def test_only_picks_scenarios_at_the_chosen_size() -> None:
    assert numbers(["--only", "9"]) == (["9"], [])
    assert numbers(["--quick", "--only", "8"]) == (["8"], [])
    assert plan(parse(["--smoke", "--only", "1"]))[0] is SMOKE


def test_quick_smoke_and_slow_exclude_each_other() -> None:
    with pytest.raises(SystemExit):
        parse(["--quick", "--slow"])
