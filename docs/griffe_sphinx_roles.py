"""A Griffe extension for the API reference: Sphinx roles in docstrings become code spans.

The package's docstrings cross-reference with reStructuredText roles
(``:class:`~dramatiq_eventbus.errors.EventBusError```), which Markdown would show as they are
written. Each becomes an inline code span of the name it shows (``EventBusError``), before
the docstring is parsed. Loaded by mkdocs.yml (``extensions:``); the package is not changed.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|exc|data|obj|const):`(?P<target>[^`]+)`")


def _shown(match: re.Match[str]) -> str:
    target = match["target"].strip()
    if target.startswith("~"):
        target = target[1:].rsplit(".", 1)[-1]
    return f"`{target.lstrip('.')}`"


class SphinxRoles(griffe.Extension):
    """Rewrites ``:role:`target``` into a code span in every docstring of each package loaded."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        _rewrite(pkg)


def _rewrite(obj: griffe.Object) -> None:
    if obj.docstring is not None:
        obj.docstring.value = _ROLE.sub(_shown, obj.docstring.value)
    for member in obj.members.values():
        if not member.is_alias:
            _rewrite(member)  # type: ignore[arg-type]
