"""What the Django settings modules of the tests share: the tests' PostgreSQL as a DATABASES entry."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit


def postgres_database(url: str, schema: str) -> dict[str, Any]:
    """A Django DATABASES entry for the SQLAlchemy-style ``url``, with ``schema`` first on the search path."""
    parts = urlsplit(url)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": parts.path.lstrip("/"),
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
        "OPTIONS": {"options": f"-c search_path={schema}"},
    }
