"""The manual builds with ``mkdocs build --strict`` and says nothing while doing it; the README's links hold.

mkdocs.yml makes every broken link or anchor, page missing from the nav and docstring that
mkdocstrings cannot render a warning, and ``--strict`` makes any warning fail the build.
MkDocs comes from docs/requirements.txt, which the Makefile installs into ``.venv``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.docs.markdown import README, REPO_ROOT

#: The modules whose ``__all__`` the reference must cover.
PUBLIC_MODULES = [
    "dramatiq_eventbus",
    "dramatiq_eventbus.testing",
    "dramatiq_eventbus.codecs",
    "dramatiq_eventbus.errors",
    "dramatiq_eventbus.transactions",
]
#: Where the README may link: relative links that GitHub resolves in the repository.
_LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The manual, built once for this module's tests, after checking that the build said nothing."""
    assert importlib.util.find_spec("mkdocs") is not None, (
        "MkDocs is not installed in this environment: `make test` installs docs/requirements.txt, "
        "or run `pip install -r docs/requirements.txt`"
    )
    target = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(target)],
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
    return target


def test_the_site_builds_strictly_without_a_warning(site: Path) -> None:
    for page in ("index.html", "tutorial/index.html", "reference/eventbus/index.html"):
        assert (site / page).is_file(), f"the site has no {page}"


@pytest.mark.parametrize("module", PUBLIC_MODULES)
def test_the_reference_documents_every_public_name(site: Path, module: str) -> None:
    """Each name in a public module's ``__all__`` has an entry in the reference, or, for the
    default bus's functions, a line in docs/reference/eventbus.md: a new export cannot go unseen."""
    ids = set()
    for page in (site / "reference").rglob("index.html"):
        ids.update(re.findall(r'id="(dramatiq_eventbus[\w.]*)"', page.read_text()))
    listed = (REPO_ROOT / "docs" / "reference" / "eventbus.md").read_text()
    missing = [
        name
        for name in _public_names(module)
        if not any(entry == f"{module}.{name}" or entry.endswith(f".{name}") for entry in ids)
        and f"eventbus.{name}" not in listed
    ]
    assert not missing, f"the reference does not document {module}.{{{', '.join(missing)}}}"


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


def _public_names(module_name: str) -> list[str]:
    """The module's ``__all__``; without one, the public names it defines itself."""
    module = importlib.import_module(module_name)
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return [
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == module_name
    ]


def _anchors(markdown: str) -> set[str]:
    """The ids GitHub gives the headings of ``markdown``: lower case, punctuation dropped, spaces to dashes."""
    headings = re.findall(r"^#{1,6} (.+)$", re.sub(r"^```.*?^```", "", markdown, flags=re.MULTILINE | re.DOTALL), re.M)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}
