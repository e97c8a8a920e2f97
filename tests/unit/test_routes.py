"""The map of the flows (dramatiq_eventbus.routes) and ``eventbus routes --format``.

The classes below claim modules of an application that does not exist (``app.orders.events``
and so on), so that they fall into three contexts as a real application's would.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import pytest

from dramatiq_eventbus import EventBus, Handler, partition_key
from dramatiq_eventbus.cli import main
from dramatiq_eventbus.routes import FlowMap, context_of, mermaid_label


def _in(module: str, cls: type) -> type:
    cls.__module__ = module
    return cls


@dataclass(frozen=True)
class OrderPlaced:
    order_id: str

    def partition_key(self) -> str:
        return self.order_id


@dataclass(frozen=True)
class PriceChanged:
    sku: str


@dataclass(frozen=True)
class StockCounted:
    """Partitioned by a function registered for it, not by a method of its own."""

    sku: str


class Invoicer(Handler):
    actor_options = {"priority": 3, "max_retries": 9, "throws": (KeyError, ValueError)}

    def interested(self, event: Any) -> bool:
        return True

    def handle_event(self, event: Any) -> None:
        return None


class Mailer(Handler):
    async def handle_event(self, event: Any) -> None:
        return None


class Repricer:
    """Not a Handler subclass: a class with handle_event only, which the bus takes too."""

    actor_options = {"priority": 7}

    def handle_event(self, event: Any) -> None:
        return None


_in("app.orders.events", OrderPlaced)
_in("app.catalog.events", PriceChanged)
_in("app.catalog.events", StockCounted)
_in("app.billing.handlers", Invoicer)
_in("app.notifications.handlers", Mailer)
_in("app.catalog.handlers", Repricer)
partition_key.register(StockCounted, lambda event: event.sku)

HANDLERS = {
    OrderPlaced: [Invoicer, Mailer],
    PriceChanged: [Repricer, Mailer],
    StockCounted: [Repricer],
}


@pytest.fixture
def flow_map() -> FlowMap:
    bus = EventBus().configure(handlers=HANDLERS, broker="stub", default_actor_options={"min_backoff": 5})
    bus.register_type(PriceChanged, encode=None, decode=None, name="catalog:PriceChanged")
    return FlowMap.from_bus(bus)


def test_text_is_what_eventbus_routes_has_always_printed(flow_map: FlowMap) -> None:
    assert flow_map.to_text() == (
        "app.orders.events.OrderPlaced\n"
        "  -> app.billing.handlers.Invoicer  priority=3  "
        "max_retries=9, min_backoff=5, throws=(<class 'KeyError'>, <class 'ValueError'>)\n"
        "  -> app.notifications.handlers.Mailer  priority=0  max_retries=4, min_backoff=5\n"
        "app.catalog.events.PriceChanged\n"
        "  -> app.catalog.handlers.Repricer  priority=7  max_retries=4, min_backoff=5\n"
        "  -> app.notifications.handlers.Mailer  priority=0  max_retries=4, min_backoff=5\n"
        "app.catalog.events.StockCounted\n"
        "  -> app.catalog.handlers.Repricer  priority=7  max_retries=4, min_backoff=5\n"
    )


def test_json_has_the_documented_shape(flow_map: FlowMap) -> None:
    assert json.loads(flow_map.to_json()) == {
        "version": 1,
        "queues": {"default": "events", "partitioned": "events_partitioned"},
        "contexts": [
            {"name": "orders", "package": "app.orders", "events": ["app.orders.events.OrderPlaced"], "handlers": []},
            {
                "name": "billing",
                "package": "app.billing",
                "events": [],
                "handlers": ["app.billing.handlers.Invoicer"],
            },
            {
                "name": "notifications",
                "package": "app.notifications",
                "events": [],
                "handlers": ["app.notifications.handlers.Mailer"],
            },
            {
                "name": "catalog",
                "package": "app.catalog",
                "events": ["app.catalog.events.PriceChanged", "app.catalog.events.StockCounted"],
                "handlers": ["app.catalog.handlers.Repricer"],
            },
        ],
        "events": [
            {
                "name": "app.orders.events.OrderPlaced",
                "class": "OrderPlaced",
                "wire_name": "app.orders.events:OrderPlaced",
                "context": "orders",
                "partitioned": True,
                "queue": "events_partitioned",
                "handlers": ["app.billing.handlers.Invoicer", "app.notifications.handlers.Mailer"],
            },
            {
                "name": "app.catalog.events.PriceChanged",
                "class": "PriceChanged",
                "wire_name": "catalog:PriceChanged",
                "context": "catalog",
                "partitioned": False,
                "queue": "events",
                "handlers": ["app.catalog.handlers.Repricer", "app.notifications.handlers.Mailer"],
            },
            {
                "name": "app.catalog.events.StockCounted",
                "class": "StockCounted",
                "wire_name": "app.catalog.events:StockCounted",
                "context": "catalog",
                "partitioned": True,
                "queue": "events_partitioned",
                "handlers": ["app.catalog.handlers.Repricer"],
            },
        ],
        "handlers": [
            {
                "actor": "app.billing.handlers.Invoicer",
                "class": "Invoicer",
                "context": "billing",
                "priority": 3,
                "queues": ["events_partitioned"],
                "options": {"max_retries": 9, "min_backoff": 5, "throws": ["builtins.KeyError", "builtins.ValueError"]},
                "interested_filter": True,
                "async": False,
                "events": ["app.orders.events.OrderPlaced"],
            },
            {
                "actor": "app.notifications.handlers.Mailer",
                "class": "Mailer",
                "context": "notifications",
                "priority": 0,
                "queues": ["events", "events_partitioned"],
                "options": {"max_retries": 4, "min_backoff": 5},
                "interested_filter": False,
                "async": True,
                "events": ["app.orders.events.OrderPlaced", "app.catalog.events.PriceChanged"],
            },
            {
                "actor": "app.catalog.handlers.Repricer",
                "class": "Repricer",
                "context": "catalog",
                "priority": 7,
                "queues": ["events", "events_partitioned"],
                "options": {"max_retries": 4, "min_backoff": 5},
                "interested_filter": False,
                "async": False,
                "events": ["app.catalog.events.PriceChanged", "app.catalog.events.StockCounted"],
            },
        ],
    }


def test_mermaid_draws_a_subgraph_per_context_holding_its_events_and_handlers(flow_map: FlowMap) -> None:
    diagram = flow_map.to_mermaid()
    assert diagram.startswith("flowchart LR\n")
    subgraphs = _subgraphs(diagram)
    assert {label: sorted(ids) for label, ids in subgraphs.items()} == {
        "orders": ["event_app_orders_events_OrderPlaced"],
        "billing": ["handler_app_billing_handlers_Invoicer"],
        "notifications": ["handler_app_notifications_handlers_Mailer"],
        "catalog": [
            "event_app_catalog_events_PriceChanged",
            "event_app_catalog_events_StockCounted",
            "handler_app_catalog_handlers_Repricer",
        ],
    }


def test_mermaid_labels_handlers_with_their_priority_and_marks_partitioned_events(flow_map: FlowMap) -> None:
    labels = _labels(flow_map.to_mermaid())
    assert labels["handler_app_billing_handlers_Invoicer"] == "Invoicer<br/>priority 3"
    assert labels["handler_app_notifications_handlers_Mailer"] == "Mailer<br/>priority 0<br/>async"
    assert labels["handler_app_catalog_handlers_Repricer"] == "Repricer<br/>priority 7"
    assert labels["event_app_orders_events_OrderPlaced"] == "OrderPlaced<br/>partitioned"
    assert labels["event_app_catalog_events_StockCounted"] == "StockCounted<br/>partitioned"
    assert labels["event_app_catalog_events_PriceChanged"] == "PriceChanged"


def test_mermaid_draws_an_edge_per_route_dotted_and_labelled_where_interested_filters(flow_map: FlowMap) -> None:
    edges = set(re.findall(r"^  (\w+) (-->|-\. interested \.->) (\w+)$", flow_map.to_mermaid(), re.MULTILINE))
    assert edges == {
        ("event_app_orders_events_OrderPlaced", "-. interested .->", "handler_app_billing_handlers_Invoicer"),
        ("event_app_orders_events_OrderPlaced", "-->", "handler_app_notifications_handlers_Mailer"),
        ("event_app_catalog_events_PriceChanged", "-->", "handler_app_catalog_handlers_Repricer"),
        ("event_app_catalog_events_PriceChanged", "-->", "handler_app_notifications_handlers_Mailer"),
        ("event_app_catalog_events_StockCounted", "-->", "handler_app_catalog_handlers_Repricer"),
    }
    classes = dict(
        (name, set(members.split(",")))
        for members, name in re.findall(r"^  class (\S+) (\w+)$", flow_map.to_mermaid(), re.MULTILINE)
    )
    assert classes["filtering"] == {"handler_app_billing_handlers_Invoicer"}
    assert classes["partitioned"] == {"event_app_orders_events_OrderPlaced", "event_app_catalog_events_StockCounted"}


HOSTILE_NAME = 'Evil"]) --> x\n%%<img src=x onerror=alert(1)>`**#quot;end;'


def test_mermaid_escapes_a_hostile_class_name_and_keeps_its_ids_safe() -> None:
    event = _in('app.we"]\n<b>ird.events', type(HOSTILE_NAME, (), {"__qualname__": HOSTILE_NAME}))
    handler = _in("app.end", type("end", (Handler,), {"handle_event": lambda self, e: None, "__qualname__": "end"}))
    twin = _in("app", type("end_end", (Handler,), {"handle_event": lambda self, e: None}))  # app.end_end
    bus = EventBus().configure(handlers={event: [handler, twin]}, broker="stub", codec=_NoCodec())
    diagram = FlowMap.from_bus(bus).to_mermaid()
    lines = diagram.splitlines()
    assert len(lines) == len(diagram.split("\n")) - 1, "a name must not break a line"
    keywords = {"direction", "end", "classDef", "class"}
    ids = set(re.findall(r"^\s+(?:subgraph )?(\w+)\W", diagram, re.MULTILINE)) - keywords
    assert all(re.fullmatch(r"(event|handler|context)_[A-Za-z0-9_]+", found) for found in ids), ids
    # "end" alone would close a subgraph; app.end.end and app.end_end would share an id but for the number
    assert {"handler_app_end_end", "handler_app_end_end_2"} <= ids
    labels = _labels(diagram)
    for label in labels.values():
        assert re.fullmatch(r"([A-Za-z0-9 _.,:()=#;-]|<br/>)*", label), label
    [event_label] = [label for node, label in labels.items() if node.startswith("event_")]
    assert _decode(event_label) == HOSTILE_NAME
    assert set(_subgraphs(diagram)) == {'we"]\n<b>ird', "app"}  # the contexts' names, escaped and read back
    assert mermaid_label("<b>") == "#60;b#62;"


def test_two_contexts_whose_packages_end_alike_are_shown_by_their_whole_packages() -> None:
    first = _in("shop.orders.events", type("Placed", (), {}))
    second = _in("legacy.orders.events", type("Placed", (), {}))
    handler = _in("shop.mail.handlers", type("Mail", (Handler,), {"handle_event": lambda self, e: None}))
    bus = EventBus().configure(handlers={first: [handler], second: [handler]}, broker="stub", codec=_NoCodec())
    flow_map = FlowMap.from_bus(bus)
    assert [c.name for c in flow_map.contexts] == ["shop.orders", "mail", "legacy.orders"]
    assert _subgraphs(flow_map.to_mermaid()).keys() == {"shop.orders", "mail", "legacy.orders"}


def test_a_class_defined_in_a_package_init_belongs_to_that_package() -> None:
    import dramatiq_eventbus.testing as package  # a package: its classes belong to it, not to its parent

    assert context_of(_in(package.__name__, type("X", (), {}))) == "dramatiq_eventbus.testing"
    assert context_of(_in("dramatiq_eventbus.routes", type("Y", (), {}))) == "dramatiq_eventbus"
    assert context_of(_in("toplevel", type("Z", (), {}))) == "toplevel"


def test_a_context_rule_of_ones_own() -> None:
    bus = EventBus().configure(handlers=HANDLERS, broker="stub")
    flow_map = FlowMap.from_bus(bus, context_of=lambda cls: "events" if cls.__name__.endswith("d") else "rest")
    assert [(c.name, len(c.events), len(c.handlers)) for c in flow_map.contexts] == [("events", 3, 0), ("rest", 0, 3)]


@pytest.mark.parametrize("format", ["text", "json", "mermaid"])
def test_the_command_prints_each_format(format: str, capsys: pytest.CaptureFixture[str], flow_map: FlowMap) -> None:
    assert main(["routes", "--handlers", "tests.unit.test_routes:HANDLERS", "--format", format]) == 0
    out = capsys.readouterr().out
    plain = FlowMap.from_bus(EventBus().configure(handlers=HANDLERS, broker="stub"))
    assert out == plain.render(format)


def test_the_command_prints_text_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["routes", "--handlers", "tests.unit.test_routes:HANDLERS"]) == 0
    assert capsys.readouterr().out.startswith("app.orders.events.OrderPlaced\n  -> app.billing.handlers.Invoicer  ")


def test_the_command_refuses_an_unknown_format(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["routes", "--handlers", "tests.unit.test_routes:HANDLERS", "--format", "dot"])
    assert "invalid choice: 'dot'" in capsys.readouterr().err


class _NoCodec:
    """A codec for classes the typed codec would not take; these tests send nothing."""

    name = "none"

    def encode(self, event: object) -> Any:
        raise NotImplementedError

    def decode(self, payload: Any) -> object:
        raise NotImplementedError


def _subgraphs(diagram: str) -> dict[str, list[str]]:
    """Each subgraph's label, decoded, with the ids of the nodes declared inside it."""
    found: dict[str, list[str]] = {}
    for label, body in re.findall(r'^  subgraph \w+ \["([^"]*)"\]\n(.*?)^  end$', diagram, re.MULTILINE | re.DOTALL):
        found[_decode(label)] = re.findall(r"^    (\w+)[\[(]", body, re.MULTILINE)
    return found


def _labels(diagram: str) -> dict[str, str]:
    """Each node's label, as written."""
    return dict(re.findall(r'^    (\w+)\(?\["(.*)"\]\)?$', diagram, re.MULTILINE))


def _decode(label: str) -> str:
    return re.sub(r"#(\d+);", lambda m: chr(int(m[1])), label)
