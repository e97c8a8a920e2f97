"""Event metadata on a real ``dramatiq`` CLI worker, on real Redis and real RabbitMQ, with signed messages.

One worker per broker (2 threads) serves every test of this module, configured only through
``EVENTBUS_*`` variables with tests/integration/metadata_handlers.py, on queues unique to the
run, with a secret key: the metadata is covered by the signature. The RabbitMQ worker is a slow
variant (``-m slow``; see BROKERS_RABBITMQ_SLOW).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

import dramatiq_eventbus
from tests.integration import metadata_handlers
from tests.integration.support import BROKERS_RABBITMQ_SLOW, Deployment, deployed, require, unique

METADATA_HANDLERS = "tests.integration.metadata_handlers:HANDLERS"
SECRET_KEY = "metadata-tests-key-0123456789abcdef"


@pytest.fixture(scope="module", params=BROKERS_RABBITMQ_SLOW)
def deployment(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    log_dir = tmp_path_factory.mktemp(f"metadata-workers-{request.param}")
    with deployed(
        request.param,
        log_dir,
        "eventbus_it_metadata",
        threads=2,
        handlers=METADATA_HANDLERS,
        secret_key=SECRET_KEY,
        lanes_in_redis=True,
    ) as made:
        yield made


@pytest.fixture
def bus(deployment: Deployment) -> Deployment:
    require(deployment.broker)
    deployment.configure_publisher()
    return deployment


@pytest.fixture
def tag(request: pytest.FixtureRequest) -> str:
    return unique(request.node.name.split("[")[0])


def by_hop(records: list[dict[str, Any]], hop: int) -> list[dict[str, Any]]:
    return [line for line in records if line.get("hop") == hop]


def test_three_hops_share_the_correlation_and_chain_the_causation(bus: Deployment, tag: str) -> None:
    before = datetime.now(UTC)
    event_id = dramatiq_eventbus.publish(metadata_handlers.Started(tag))
    records = bus.records.wait_for(tag, 4, bus.worker)
    first = by_hop(records, 1)
    (second,) = by_hop(records, 2)
    (third,) = by_hop(records, 3)
    # Every handler of one event sees the same event_id, each in a message of its own.
    assert {line["event_id"] for line in first} == {event_id} and len(first) == 2
    assert len({line["message_id"] for line in first}) == 2
    assert {line["handler"] for line in first} == {"StartRecorder", "StartPublisher"}
    assert all(line["causation_id"] is None and line["correlation_id"] == event_id for line in first)
    assert all(line["attempt"] == 1 for line in records)
    assert before.replace(microsecond=0) <= datetime.fromisoformat(first[0]["published_at"]) <= datetime.now(UTC)
    # Hop 2 (an async handler) and hop 3: correlated with the first event, each caused by the one before.
    assert second["correlation_id"] == third["correlation_id"] == event_id
    assert second["causation_id"] == event_id
    assert third["causation_id"] == second["event_id"]
    assert len({event_id, second["event_id"], third["event_id"]}) == 3
    assert third["partition_key"] == tag
    assert third["context_handler"] == "tests.integration.metadata_handlers.EndRecorder"


def test_a_correlation_block_reaches_every_hop(bus: Deployment, tag: str) -> None:
    with dramatiq_eventbus.correlation(f"req-{tag}"):
        event_id = dramatiq_eventbus.publish(metadata_handlers.Started(tag))
    records = bus.records.wait_for(tag, 4, bus.worker)
    assert {line["correlation_id"] for line in records} == {f"req-{tag}"}
    (second,) = by_hop(records, 2)
    (third,) = by_hop(records, 3)
    assert second["causation_id"] == event_id and third["causation_id"] == second["event_id"]


def test_attempt_counts_retries_of_one_event(bus: Deployment, tag: str) -> None:
    event_id = dramatiq_eventbus.publish(metadata_handlers.Retried(tag))
    records = bus.records.wait_for(tag, 3, bus.worker)
    assert [line["attempt"] for line in records] == [1, 2, 3]
    assert {line["event_id"] for line in records} == {event_id}
    assert len({line["message_id"] for line in records}) == 1
