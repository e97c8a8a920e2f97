"""``python -m benchmarks``: run the scenarios, print the table, write the JSON.

    python -m benchmarks                  # everything but the slow parts (make bench, under 10 minutes)
    python -m benchmarks --slow           # and 9 at 1,000,000 events, 14 at 10,000 classes, 15 at 1,000,000
                                          # lanes: about 10 minutes more
    python -m benchmarks --quick          # scenarios 1-7 with less work: an early look, under a minute
    python -m benchmarks --smoke          # every scenario at a tiny size: does it all still run?
    python -m benchmarks --only 1,2,5     # some scenarios (the group each belongs to runs whole)
    python -m benchmarks --brokers redis  # Redis only

It needs Redis (``REDIS_URL``, default ``redis://127.0.0.1:6379/0``) and, unless
``--brokers redis``, RabbitMQ (``RABBITMQ_URL``, default the local guest account).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from .runner import (
    FULL,
    QUICK,
    RESULTS,
    SMOKE,
    Context,
    Result,
    Sizes,
    describe_machine,
    format_table,
    log,
    machine,
    write_json,
)
from .scenarios import SCENARIOS, Scenario


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--smoke", action="store_true", help="every scenario at a tiny size; figures mean nothing")
    size.add_argument(
        "--quick", action="store_true", help="scenarios 1-7 with less work, in under a minute: an early look"
    )
    size.add_argument(
        "--slow",
        action="store_true",
        help="add 9 at 1,000,000 events, 14 at 10,000 classes, 15 at 1,000,000 lanes (about 10 minutes)",
    )
    parser.add_argument("--only", default="", help="comma-separated scenario numbers, e.g. 1,2,5")
    parser.add_argument("--brokers", default="redis,rabbitmq", help="comma-separated, of redis and rabbitmq")
    parser.add_argument(
        "--output", type=Path, default=None, help=f"the JSON file (default {RESULTS}; with --quick, quick.json there)"
    )
    return parser.parse_args(argv)


def plan(options: argparse.Namespace) -> tuple[Sizes, list[Scenario], list[Scenario]]:
    """The sizes, the scenarios to run and those skipped, for the command line's ``options``."""
    only = {number.strip() for number in options.only.split(",") if number.strip()}
    sizes = SMOKE if options.smoke else QUICK if options.quick else FULL
    run: list[Scenario] = []
    skipped: list[Scenario] = []
    for scenario in SCENARIOS:
        if only and not only.intersection(scenario.numbers):
            continue
        wanted = bool(only) or options.smoke or (scenario.quick if options.quick else not scenario.slow or options.slow)
        (run if wanted else skipped).append(scenario)
    return sizes, run, skipped


def main(argv: list[str] | None = None) -> list[Result]:
    argv = sys.argv[1:] if argv is None else argv
    options = parse(argv)
    sizes, scenarios, skipped = plan(options)
    brokers = tuple(broker.strip() for broker in options.brokers.split(",") if broker.strip())
    if options.output is not None:
        output = options.output
    elif options.smoke:
        output = Path(tempfile.gettempdir()) / "benchmarks-smoke.json"
    else:  # a quick look does not replace the last full run's figures
        output = RESULTS.with_name("quick.json") if options.quick else RESULTS
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="benchmarks-") as workdir:
        ctx = Context(sizes=sizes, brokers=brokers, workdir=Path(workdir))
        info = machine(ctx)
        log(f"Machine: {describe_machine(info)}")
        results: list[Result] = []
        try:
            for scenario in skipped:
                why = "not in --quick" if options.quick else "slow; run with --slow"
                log(f"Scenario {', '.join(scenario.numbers)}: skipped ({why})")
            for scenario in scenarios:
                log(f"Scenario {', '.join(scenario.numbers)}")
                scenario_started = time.monotonic()
                results += scenario.run(ctx)
                log(f"  ({time.monotonic() - scenario_started:.0f} s)")
        finally:
            ctx.close()
    results.sort(key=lambda result: int(result.scenario))
    seconds = time.monotonic() - started
    print(f"\nMachine: {describe_machine(info)}\n")
    print(format_table(results))
    print(f"\n{len(results)} rows in {seconds:.0f} s; JSON in {output}")
    write_json(output, info, results, seconds, argv)
    return results


if __name__ == "__main__":
    main()
