"""docs/guides/flow-map.md shows the example shop's diagram as ``eventbus routes --format mermaid`` prints it.

Run as a script (``python -m tests.docs.test_flow_map``), it writes the diagram into the page.
"""

from __future__ import annotations

import contextlib
import io
import re
import sys

from dramatiq_eventbus.cli import main
from tests.docs.markdown import REPO_ROOT

PAGE = REPO_ROOT / "docs" / "guides" / "flow-map.md"
#: The shop as its demo configures it; the demo's default_actor_options do not show in the diagram.
SHOP_HANDLERS = "examples.shop.handlers:HANDLERS"
REGENERATE = ".venv/bin/python -m tests.docs.test_flow_map"

_MERMAID_FENCE = re.compile(r"^```mermaid\n(?P<body>.*?)^```$", re.MULTILINE | re.DOTALL)


def shop_mermaid() -> str:
    """What ``eventbus routes --format mermaid`` prints for the example shop."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(["routes", "--handlers", SHOP_HANDLERS, "--format", "mermaid"])
    assert status == 0, f"eventbus routes --format mermaid exited with {status}"
    return out.getvalue()


def page_mermaid(text: str) -> str:
    """The one ``mermaid`` fence of the page's Markdown ``text``."""
    fences = _MERMAID_FENCE.findall(text)
    assert len(fences) == 1, f"{PAGE.relative_to(REPO_ROOT)} must have exactly one ```mermaid fence, not {len(fences)}"
    return str(fences[0])


def test_the_page_shows_the_shop_diagram_the_command_prints() -> None:
    generated = shop_mermaid()
    shown = page_mermaid(PAGE.read_text())
    assert shown == generated, (
        f"the diagram in {PAGE.relative_to(REPO_ROOT)} is not what `eventbus routes --format mermaid` prints for "
        f"the example shop; regenerate it with `{REGENERATE}` and check the change"
    )


def test_the_shop_diagram_has_each_handler_with_its_priority() -> None:
    # What the page is for: a reader sees who listens, and how urgently.
    diagram = shop_mermaid()
    assert '"FinanceEventHandler<br/>priority 3"' in diagram
    assert '"NotificationHandler<br/>priority 0"' in diagram
    assert re.search(r"OrderCreated -\. interested \.-> \w+FinanceEventHandler$", diagram, re.MULTILINE)


def _write() -> None:
    text = PAGE.read_text()
    page_mermaid(text)  # exactly one fence to replace
    new = _MERMAID_FENCE.sub(lambda _: f"```mermaid\n{shop_mermaid()}```", text)
    PAGE.write_text(new)
    print(f"{'rewrote' if new != text else 'unchanged:'} {PAGE.relative_to(REPO_ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    _write()
