"""The example shop's flow map renders: the ``mermaid`` npm package, in Debian's headless Chromium, makes
an SVG of what ``eventbus routes --format mermaid`` prints, with a node for every handler.

The npm project in tests/docs/mermaid/ pins mermaid (package-lock.json); ``npm ci`` installs it
when node_modules is missing. The page loads mermaid's dist bundle and tests/docs/mermaid/render.js
from the disk, and Chromium's ``--dump-dom`` prints the page once the rendering is done. Without
Chromium or npm the test is skipped, with the reason, except under ``CI=true``, where it fails:
.ci/run installs Chromium where it is missing.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from dramatiq_eventbus import EventBus
from dramatiq_eventbus.routes import ContextNode, EventNode, FlowMap, HandlerNode
from tests.docs.test_flow_map import SHOP_HANDLERS, shop_mermaid

MERMAID_PROJECT = Path(__file__).resolve().parent / "mermaid"
BUNDLE = MERMAID_PROJECT / "node_modules" / "mermaid" / "dist" / "mermaid.min.js"
RENDER_JS = MERMAID_PROJECT / "render.js"
#: Each as the probe of this machine kind starts it: without the background-networking flags,
#: Chromium tries hosts that the closed network refuses.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Virtual milliseconds Chromium lets the page run before it prints the DOM; rendering takes far less.
VIRTUAL_TIME_BUDGET_MS = 20_000

HOSTILE = 'Evil"]) --> x %%<img src=x onerror=alert(1)>`end'


def test_the_shop_diagram_renders_with_a_node_for_every_handler(tmp_path: Path) -> None:
    chromium = _chromium()
    _install_mermaid()
    diagram = shop_mermaid()
    dom = _render(chromium, [diagram], tmp_path)
    nodes = _node_labels(dom, "diagram-0")
    shop = FlowMap.from_bus(EventBus().configure(handlers=SHOP_HANDLERS, broker="stub"))
    ids = dict(re.findall(r'^    (handler_\w+)\["(.*)"\]$', diagram, re.MULTILINE))
    assert len(ids) == len(shop.handlers) == 2
    for handler in shop.handlers:
        [node_id] = [node_id for node_id, label in ids.items() if label.startswith(f"{handler.label}<br/>")]
        assert nodes.get(node_id) == f"{handler.label}\npriority {handler.priority}", (
            f"the SVG has no node {node_id} labelled {handler.label}, priority {handler.priority}; nodes: {nodes}"
        )
    for event in shop.events:
        assert any(label.startswith(f"{event.label}\npartitioned") for label in nodes.values()), nodes


def test_a_hostile_name_renders_as_text(tmp_path: Path) -> None:
    chromium = _chromium()
    _install_mermaid()
    flow_map = FlowMap(
        contexts=(ContextNode(HOSTILE, "x", ("x.E",), ("x.H",)),),
        events=(EventNode("x.E", HOSTILE, "x:E", HOSTILE, True, "p", ("x.H",)),),
        handlers=(HandlerNode("x.H", HOSTILE, HOSTILE, 5, ("p",), {}, True, False, ("x.E",)),),
        default_queue="d",
        partitioned_queue="p",
        options_text={"x.H": ""},
    )
    dom = _render(chromium, [flow_map.to_mermaid()], tmp_path)
    svg = _svg(dom, "diagram-0")
    assert "<img" not in svg, "a class name put an element into the diagram"
    labels = _node_labels(dom, "diagram-0")
    assert sorted(labels.values()) == sorted([f"{HOSTILE}\npartitioned", f"{HOSTILE}\npriority 5"]), labels


def _chromium() -> str:
    found = shutil.which("chromium") or ("/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None)
    if found is None:
        _unavailable("Debian's chromium is not installed (apt-get install -y chromium); .ci/run installs it")
    assert found is not None
    return found


def _install_mermaid() -> None:
    """``npm ci`` in tests/docs/mermaid/, where node_modules lacks mermaid's bundle."""
    if BUNDLE.is_file():
        return
    npm = shutil.which("npm")
    if npm is None:
        _unavailable("npm is not installed, so the mermaid package cannot be installed")
    assert npm is not None
    done = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=MERMAID_PROJECT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"npm ci in {MERMAID_PROJECT} failed:\n{done.stdout}{done.stderr}"
    assert BUNDLE.is_file(), f"npm ci did not install {BUNDLE}"


def _render(chromium: str, diagrams: list[str], tmp_path: Path) -> str:
    """The page's DOM after render.js has drawn ``diagrams``; fails with mermaid's error if it failed."""
    # In a <script> element only "</" could end the JSON early: \u003c keeps any "<" out of it.
    data = json.dumps(diagrams).replace("<", "\\u003c")
    page = tmp_path / "flow-map.html"
    page.write_text(
        '<!doctype html>\n<html><head><meta charset="utf-8"><title>flow map</title></head><body>\n'
        f'<script id="diagrams" type="application/json">{data}</script>\n'
        f'<script src="{BUNDLE.as_uri()}"></script>\n'
        f'<script src="{RENDER_JS.as_uri()}"></script>\n'
        "</body></html>\n"
    )
    done = subprocess.run(
        [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--virtual-time-budget={VIRTUAL_TIME_BUDGET_MS}",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    dom = done.stdout
    state = re.search(r'<body data-state="(\w+)"', dom)
    error = re.search(r'<pre id="error">(.*?)</pre>', dom, re.DOTALL)
    assert state is not None and state[1] == "rendered", (
        f"mermaid did not render the diagram (state {state[1] if state else 'none'}, chromium exit "
        f"{done.returncode}): {html.unescape(error[1]) if error else ''}\nchromium said:\n{done.stderr[-2000:]}"
    )
    return dom


def _svg(dom: str, holder: str) -> str:
    found = re.search(rf'<div id="{holder}">(<svg.*?</svg>)</div>', dom, re.DOTALL)
    assert found is not None, f"no SVG in <div id={holder}>"
    return found[1]


def _node_labels(dom: str, holder: str) -> dict[str, str]:
    """Each flowchart node's id (as the diagram names it), with its label's text, line breaks as newlines."""
    nodes: dict[str, str] = {}
    svg = _svg(dom, holder)
    for node in re.finditer(r'<g class="node[^"]*" id="diagram\d+-flowchart-(\w+)-\d+"(.*?)</g></g>', svg, re.DOTALL):
        label = re.search(r'<span class="nodeLabel">(?:<p>)?(.*?)(?:</p>)?</span>', node[2], re.DOTALL)
        assert label is not None, f"node {node[1]} has no label"
        nodes[node[1]] = html.unescape(re.sub(r"<br\s*/?>", "\n", label[1]))
    return nodes


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}: under CI=true the flow map's rendering test must run")
    pytest.skip(reason)
