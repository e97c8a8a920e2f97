"""pyproject.toml: metadata current setuptools reads without a deprecation banner."""

from __future__ import annotations

import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

PYPROJECT = Path(__file__).parents[2] / "pyproject.toml"


def test_the_license_is_an_spdx_expression_with_a_setuptools_that_reads_it() -> None:
    project = tomllib.loads(PYPROJECT.read_text())
    # A TOML table (`{ text = "MIT" }`) makes setuptools print a deprecation banner at every build.
    assert project["project"]["license"] == "MIT"
    # setuptools reads an SPDX string from 77.0 on: an older one would refuse to build.
    requirement = next(r for r in project["build-system"]["requires"] if r.startswith("setuptools"))
    found = re.fullmatch(r"setuptools>=(\d+)(?:\.\d+)*", requirement)
    assert found is not None and int(found.group(1)) >= 77, requirement
