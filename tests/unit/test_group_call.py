"""GroupCall: the requests of threads that arrive while a call is in flight share the next one."""

from __future__ import annotations

import threading

import pytest

from dramatiq_eventbus.ordering import GroupCall


class Interrupted(BaseException):
    """Like Dramatiq's time limit: raised into a thread, not an Exception."""


def start(target: object, *args: object) -> threading.Thread:
    thread = threading.Thread(target=target, args=args)  # type: ignore[arg-type]
    thread.start()
    return thread


def test_requests_made_during_a_call_go_together_in_the_next_and_each_gets_its_reply() -> None:
    calls: list[list[int]] = []
    first_call_started, others_waiting = threading.Event(), threading.Event()

    def run(batch: list[int]) -> list[int]:
        calls.append(batch)
        if len(calls) == 1:
            first_call_started.set()
            assert others_waiting.wait(5)
        return [n * 10 for n in batch]

    group: GroupCall[int, int] = GroupCall(run, on_error=lambda exc: None)
    replies: dict[int, int] = {}
    leader = start(lambda: replies.__setitem__(1, group(1)))
    assert first_call_started.wait(5)
    followers = [start(lambda n=n: replies.__setitem__(n, group(n))) for n in (2, 3, 4)]
    while len(group._waiting) < 3:  # the three wait for the call in flight
        threading.Event().wait(0.001)
    others_waiting.set()
    for thread in (leader, *followers):
        thread.join(5)
    assert calls[0] == [1] and sorted(calls[1]) == [2, 3, 4] and len(calls) == 2
    assert replies == {1: 10, 2: 20, 3: 30, 4: 40}


def test_a_failed_call_raises_in_every_caller_of_it_and_the_next_call_goes_on() -> None:
    def run(batch: list[int]) -> list[int]:
        if 0 in batch:
            raise ValueError("Redis went away")
        return batch

    group: GroupCall[int, int] = GroupCall(run, on_error=lambda exc: None)
    with pytest.raises(ValueError, match="Redis went away"):
        group(0)
    assert group(7) == 7


def test_a_failure_nobody_waits_for_is_reported() -> None:
    reported: list[BaseException] = []

    def run(batch: list[int]) -> list[int]:
        raise ValueError("RabbitMQ refused")

    group: GroupCall[int, int] = GroupCall(run, on_error=reported.append)
    group.submit(1)
    assert [str(exc) for exc in reported] == ["RabbitMQ refused"]


def test_an_interrupted_caller_fails_the_waiting_ones_instead_of_leaving_them_waiting() -> None:
    in_call, waiting = threading.Event(), threading.Event()

    def run(batch: list[int]) -> list[int]:
        in_call.set()
        assert waiting.wait(5)
        raise Interrupted()

    group: GroupCall[int, int] = GroupCall(run, on_error=lambda exc: None)
    outcomes: list[str] = []

    def call(n: int) -> None:
        try:
            group(n)
        except Interrupted:
            outcomes.append(f"{n} interrupted")

    leader = start(call, 1)
    assert in_call.wait(5)
    follower = start(call, 2)
    while not group._waiting:
        threading.Event().wait(0.001)
    waiting.set()
    leader.join(5)
    follower.join(5)
    assert sorted(outcomes) == ["1 interrupted", "2 interrupted"]
    assert not group._in_flight
