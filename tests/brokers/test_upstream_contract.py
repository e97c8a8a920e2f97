"""The contract with Dramatiq, pika and redis-py: every private name the bus uses is fenced in
one module per broker, and a change upstream fails here with a message that says what broke.

``make test-upstream`` runs these (and the broker tests) against the newest releases.
"""

from __future__ import annotations

import inspect
import logging
import re
from pathlib import Path
from typing import Any

import pika.adapters.blocking_connection
import pytest

from dramatiq_eventbus.brokers import EventBusRedisBroker
from dramatiq_eventbus.brokers.rabbitmq import upstream as rabbitmq_upstream
from dramatiq_eventbus.brokers.redis import upstream as redis_upstream
from tests.support.servers import require_rabbitmq, require_redis

PACKAGE = Path(__file__).resolve().parents[2] / "dramatiq_eventbus"

#: Private names of Dramatiq, pika and redis-py that the bus uses; each may appear only in its fence.
#: (``._exception`` is a StubBroker message's; OpenTelemetry's public ``record_exception`` is not.)
PRIVATE_NAMES = re.compile(
    r"_RedisConsumer|_RabbitmqConsumer|_RabbitmqMessage|_max_unpack_size|\._tag\b|\._nack\b|\._impl\b"
    r"|_flush_output|_adapter_emit_data|\bdo_(ack|nack|requeue|fetch|enqueue)\b|scripts\[\"dispatch\"\]"
    r"|broker\.state\b|queues_pending|\._exception\b|_AsyncPlaintextTransport|\._transport\b|\._sock\b|_frame_buffer"
    r"|_queue_consumer_generator|_QueueConsumerGeneratorInfo|_r_interrupt|_get_remaining_interval|_process_data_events"
)
#: Redis keys: Dramatiq's layout and the bus's lanes. They may appear only under brokers/redis/.
REDIS_KEYS = re.compile(r"__acks__|__heartbeats__|\.msgs\b|:lane:|:lanes\b|:wake\b|:lane-heads\b")
#: An import of a broker's client library: only the brokers package imports them.
CLIENT_IMPORTS = {
    "pika": re.compile(r"^\s*(import pika\b|from pika\b)"),
    "redis-py": re.compile(r"^\s*(import redis\b|from redis\b)"),
}
#: pika's attributes past its public API.
PIKA_PRIVATE = re.compile(r"\bchannel\._|\bconnection\._")


def sources(*, outside: str) -> dict[str, str]:
    """Every Python and Lua file of the package, by path, except those under ``outside``."""
    found = {}
    for path in sorted(PACKAGE.rglob("*")):
        relative = path.relative_to(PACKAGE.parent).as_posix()
        if path.suffix in (".py", ".lua") and not relative.startswith(outside):
            found[relative] = path.read_text()
    return found


def offending(pattern: re.Pattern[str], files: dict[str, str]) -> list[str]:
    return [
        f"{path}:{number}: {line.strip()}"
        for path, text in files.items()
        for number, line in enumerate(text.splitlines(), 1)
        if pattern.search(line)
    ]


def test_private_upstream_names_appear_only_in_the_fence_of_their_broker() -> None:
    fences = {"dramatiq_eventbus/brokers/redis/upstream.py", "dramatiq_eventbus/brokers/rabbitmq/upstream.py"}
    files = {path: text for path, text in sources(outside="-").items() if path not in fences}
    assert offending(PRIVATE_NAMES, files) == []
    assert offending(PIKA_PRIVATE, files) == []


def test_redis_keys_are_named_only_in_the_redis_package() -> None:
    assert offending(REDIS_KEYS, sources(outside="dramatiq_eventbus/brokers/redis/")) == []


@pytest.mark.parametrize("client", sorted(CLIENT_IMPORTS))
def test_the_broker_clients_are_imported_only_by_the_brokers_package(client: str) -> None:
    # The rest of the bus catches their errors through dramatiq_eventbus.brokers.BROKER_ERRORS.
    assert offending(CLIENT_IMPORTS[client], sources(outside="dramatiq_eventbus/brokers/")) == []
    assert offending(CLIENT_IMPORTS[client], sources(outside="-")), "no file imports it: the pattern is broken"


def test_the_fence_checks_see_something_outside_it() -> None:
    # The checks above would pass on an empty tree: make sure they read the real package.
    everything = sources(outside="-")
    assert offending(PRIVATE_NAMES, everything), "the fences name no private name: the pattern is broken"
    assert offending(REDIS_KEYS, everything), "no file names a Redis key: the pattern is broken"


def test_the_installed_dramatiq_keeps_the_redis_contract() -> None:
    assert redis_upstream.contract_problems() == []


def test_an_altered_dispatch_lua_breaks_the_redis_contract(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = redis_upstream.dispatch_lua_path().read_bytes()
    # Upstream swaps two arguments: the bus would heartbeat under the wrong worker id.
    altered = original.replace(b"local worker_id = ARGV[4]", b"local worker_id = ARGV[5]").replace(
        b"local heartbeat_timeout = ARGV[5]", b"local heartbeat_timeout = ARGV[4]"
    )
    assert altered != original
    copy = tmp_path / "dispatch.lua"
    copy.write_bytes(altered)
    monkeypatch.setattr(redis_upstream, "dispatch_lua_path", lambda: copy)
    problems = redis_upstream.contract_problems()
    assert len(problems) == 2
    assert "dispatch.lua changed (sha256" in problems[0] and "update DISPATCH_LUA_SHA256" in problems[0]
    assert (
        "reads its arguments as ['command', 'timestamp', 'queue_name', 'heartbeat_timeout', 'worker_id'"
        in (problems[1])
    )
    # A change to a comment alone still changes the file the bus mirrors: it is to be read.
    copy.write_bytes(original + b"\n-- a new comment\n")
    assert [p[:30] for p in redis_upstream.contract_problems()] == ["Dramatiq's dispatch.lua change"]


@pytest.mark.redis
def test_a_live_redis_broker_has_what_the_fence_reads() -> None:
    broker = EventBusRedisBroker(url=require_redis())
    assert redis_upstream.check_broker(broker) == []
    assert redis_upstream.max_unpack_size(broker) > 0
    redis_upstream.heartbeat_and_recover(broker, "contract_probe")  # dispatch.lua runs with these arguments
    broker.close()


def test_the_installed_dramatiq_and_pika_keep_the_rabbitmq_contract() -> None:
    assert rabbitmq_upstream.contract_problems() == []


def test_a_pika_without_its_flush_breaks_the_rabbitmq_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(pika.adapters.blocking_connection.BlockingChannel, "_flush_output")
    (problem,) = rabbitmq_upstream.contract_problems()
    assert "BlockingChannel has no _flush_output()" in problem


def test_a_pika_that_keeps_no_consumer_tag_breaks_the_rabbitmq_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    class Renamed:
        def __init__(self, params: Any, tag: str) -> None:
            self.params, self.tag = params, tag

    monkeypatch.setattr(pika.adapters.blocking_connection, "_QueueConsumerGeneratorInfo", Renamed)
    (problem,) = rabbitmq_upstream.contract_problems()
    assert "deliveries would not be read off the socket" in problem


@pytest.mark.rabbitmq
def test_a_pika_loop_it_does_not_know_breaks_the_contract_and_the_consumer_waits_in_pika(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pika.adapters import select_connection

    connection = pika.BlockingConnection(pika.URLParameters(require_rabbitmq()))
    channel = connection.channel()
    assert rabbitmq_upstream.socket_wait(channel) is not None
    monkeypatch.delattr(select_connection.IOLoop, "_get_remaining_interval")  # pika's loop holds it already
    try:
        (problem,) = rabbitmq_upstream.contract_problems()
        assert "see SocketWait" in problem
        assert rabbitmq_upstream.socket_wait(channel) is None
    finally:
        monkeypatch.undo()
        connection.close()


@pytest.mark.redis
def test_a_broken_contract_is_logged_once_when_the_first_broker_is_made(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(redis_upstream, "contract_problems", lambda: ["Dramatiq's dispatch.lua changed"])
    redis_upstream.warn_if_broken.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger=redis_upstream.__name__):
            brokers = [EventBusRedisBroker(url=require_redis()) for _ in range(2)]
    finally:
        redis_upstream.warn_if_broken.cache_clear()
    (line,) = [r.getMessage() for r in caplog.records if r.name == redis_upstream.__name__]
    assert "dramatiq 2." in line and "dispatch.lua changed" in line and "make test-upstream" in line
    for broker in brokers:
        broker.close()


@pytest.mark.parametrize("fence", [rabbitmq_upstream, redis_upstream], ids=["rabbitmq", "redis"])
def test_the_contract_is_checked_without_parsing_a_module(fence: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # The first brokers of a process may be made by many threads at once, each checking the
    # contract; CPython 3.11's ast.parse (inspect.getsource of a class parses its module) raised
    # SystemError("AST constructor recursion depth mismatch") in tests/ordering's twelve
    # publishing threads. The checks read only functions' source, which needs no parse.
    read = inspect.getsource

    def getsource(target: Any) -> str:
        assert not inspect.isclass(target), f"the contract check parses a module to find class {target!r}"
        return read(target)

    monkeypatch.setattr(inspect, "getsource", getsource)
    fence.contract_problems()
