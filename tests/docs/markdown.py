"""Reading the tutorial's code blocks out of its Markdown, by the convention docs/tutorial.md states.

- a ``python`` block whose first line is a comment naming a path (``# shop/orders/events.py``)
  is a file of the project;
- an ``sh`` block is commands, run by bash in the project;
- a ``text`` block is lines that the commands before it print; ``...`` stands for anything.

Any other block in the tutorial is an error: a block the test does not run is a block that rots.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
TUTORIAL = REPO_ROOT / "docs" / "tutorial.md"
README = REPO_ROOT / "README.md"

_FENCE = re.compile(r"^```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_FILE_COMMENT = re.compile(r"#\s*(?P<path>[\w-]+(?:/[\w-]+)*\.py)\s*")
_README_TUTORIAL = re.compile(r"^## .*tutorial.*$", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class Block:
    """One fenced code block.

    Parameters:
      lang(str): Its info string's first word: ``python``, ``sh`` or ``text``.
      body(str): Its text, each line ending with a newline.
      line(int): The line of its opening fence, from 1, for error messages.
    """

    lang: str
    body: str
    line: int

    @property
    def path(self) -> str | None:
        """The file a ``python`` block is, from its first line; None when it names none."""
        first = self.body.split("\n", 1)[0]
        match = _FILE_COMMENT.fullmatch(first)
        return match["path"] if match and self.lang == "python" else None

    def expected_lines(self) -> list[tuple[str, re.Pattern[str]]]:
        """A ``text`` block's lines, each with its pattern, ``...`` matching anything; blank lines are dropped."""
        return [
            (line.strip(), re.compile(".*?".join(re.escape(part.strip()) for part in line.split("..."))))
            for line in self.body.splitlines()
            if line.strip()
        ]


def code_blocks(markdown: str) -> list[Block]:
    """Every fenced code block of ``markdown``, in order."""
    return [
        Block(match["lang"], match["body"], markdown.count("\n", 0, match.start()) + 1)
        for match in _FENCE.finditer(markdown)
    ]


def readme_tutorial(readme: str) -> str:
    """The README's tutorial: from its ``## ...tutorial...`` heading to the next ``## `` heading."""
    heading = _README_TUTORIAL.search(readme)
    if heading is None:
        raise AssertionError("README.md has no '## ...tutorial...' section")
    following = re.compile(r"^## ", re.MULTILINE).search(readme, heading.end())
    return readme[heading.start() : following.start() if following else len(readme)]


def problems(blocks: list[Block]) -> list[str]:
    """What in ``blocks`` breaks the convention: each problem names the block's line."""
    found = []
    for block in blocks:
        if block.lang == "python" and block.path is None:
            found.append(f"line {block.line}: a python block must start with a comment naming its file")
        elif block.lang not in ("python", "sh", "text"):
            found.append(f"line {block.line}: a {block.lang or 'plain'} block: use python, sh or text")
    paths = [block.path for block in blocks if block.path]
    found += [f"{path} is written twice" for path in sorted({p for p in paths if paths.count(p) > 1})]
    return found
