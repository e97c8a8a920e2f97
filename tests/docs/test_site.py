"""The manual builds with ``mkdocs build --strict`` and says nothing while doing it; the README's links hold.

mkdocs.yml makes every broken link or anchor, page missing from the nav and docstring that
mkdocstrings cannot render a warning, and ``--strict`` makes any warning fail the build.
MkDocs comes from docs/requirements.txt, which the Makefile installs into ``.venv``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.docs.markdown import README, REPO_ROOT

#: Where the README may link: relative links that GitHub resolves in the repository.
_LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")


def test_the_site_builds_strictly_without_a_warning(tmp_path: Path) -> None:
    assert importlib.util.find_spec("mkdocs") is not None, (
        "MkDocs is not installed in this environment: `make test` installs docs/requirements.txt, "
        "or run `pip install -r docs/requirements.txt`"
    )
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{output}"
    noise = [line for line in output.splitlines() if line.strip() and not line.startswith("INFO")]
    assert not noise, "mkdocs build printed more than INFO lines:\n" + "\n".join(noise)
    for page in ("index.html", "tutorial/index.html", "reference/eventbus/index.html"):
        assert (tmp_path / "site" / page).is_file(), f"the site has no {page}"


def test_the_readme_links_resolve_in_the_repository() -> None:
    broken = []
    for match in _LINK.finditer(README.read_text()):
        target = match["target"]
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path, _, anchor = target.partition("#")
        file = REPO_ROOT / path
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file.read_text()):
            broken.append(f"{target}: no such heading in {path}")
    assert not broken, "README.md links nowhere:\n" + "\n".join(broken)


def _anchors(markdown: str) -> set[str]:
    """The ids GitHub gives the headings of ``markdown``: lower case, punctuation dropped, spaces to dashes."""
    headings = re.findall(r"^#{1,6} (.+)$", re.sub(r"^```.*?^```", "", markdown, flags=re.MULTILINE | re.DOTALL), re.M)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}
